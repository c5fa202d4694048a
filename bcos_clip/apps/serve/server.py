"""`bcos-clip serve`: an interactive explanation explorer in the browser.

One page (bcos_clip/apps/serve/static/) over a JSON API (api.py): pick an image, type prompts, see for
each prompt the B-cos colour explanation, the contribution heat map and the cosine, side by side;
switch to a post-hoc baseline on the teacher CLIP; download a PNG sheet or the JSON.

Why FastAPI + uvicorn and not Gradio: two small, well-kept dependencies instead of a large front-end
stack; a plain JSON API that scripts use directly and tests drive in-process (TestClient / httpx); a
plain HTML page with no build step and no CDN, which works offline.

Safe by default: listens on 127.0.0.1, caps upload bytes, image sides and prompts, rejects non-images,
and takes no file-system path from a request.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from fastapi import FastAPI

from bcos_clip.apps.serve.api import allowed_hosts, create_app, list_examples
from bcos_clip.apps.serve.engine import ExplainEngine
from bcos_clip.apps.serve.io import Limits
from bcos_clip.apps.serve.methods import Method, baseline_methods, bcos_method
from bcos_clip.models import BcosCLIP, resolve_model
from bcos_clip.runtime.device import pick_device

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Everything `bcos-clip serve` takes. model: a B-cos checkpoint directory; teacher: an open_clip
    name / JSON config (with teacher_pretrained) whose post-hoc baselines the page can switch to;
    baselines: names from bcos_clip.explain.baselines.BASELINES (empty: all of them); strategy: "tensor"
    (per-image contribution tensor, then an einsum a prompt) or "prompts" (a Jacobian row per new prompt,
    for large towers on a CPU)."""

    model: str
    teacher: Optional[str] = None
    teacher_pretrained: Optional[str] = None
    baselines: Tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    examples: Optional[str] = None
    device: Optional[str] = None
    color: bool = True
    strategy: str = "tensor"
    cache_entries: int = 16
    cache_mb: float = 2048.0
    limits: Limits = field(default_factory=Limits)


def load_student(model: str, device: torch.device) -> BcosCLIP:
    """The B-cos checkpoint directory `model`, in eval mode on `device`; a clear error for anything else."""
    if not Path(model).is_dir():
        raise FileNotFoundError(f"--model {model} is not a directory: give a bcos_clip checkpoint directory "
                                "(written by `bcos-clip bcosify` / `train` / `demo`)")
    student = resolve_model(model)
    if not isinstance(student, BcosCLIP):
        raise ValueError(f"--model {model} is not a B-cos checkpoint")
    return student.to(device).eval().requires_grad_(False)


def build_methods(config: ServeConfig, device: torch.device) -> List[Method]:
    """The B-cos student first (the default), then the teacher's baselines if a teacher is given."""
    methods: List[Method] = [bcos_method(load_student(config.model, device), config.strategy, config.color)]
    if config.teacher:
        teacher = resolve_model(config.teacher, config.teacher_pretrained).to(device).eval()
        if getattr(teacher, "is_bcos", False):
            raise ValueError(f"--teacher {config.teacher} is a B-cos checkpoint; give the plain teacher CLIP "
                             "(open_clip name or JSON config, with --teacher-pretrained)")
        methods.extend(baseline_methods(teacher, config.baselines))
    elif config.baselines:
        raise ValueError("--baseline needs --teacher (the plain CLIP the baselines explain)")
    return methods


def build_engine(config: ServeConfig) -> ExplainEngine:
    device = pick_device(config.device)
    return ExplainEngine(build_methods(config, device), cache_entries=config.cache_entries,
                         cache_mb=config.cache_mb)


def build_app(config: ServeConfig, engine: Optional[ExplainEngine] = None) -> FastAPI:
    """The app for `config` (loading the models unless an engine is given)."""
    examples = list_examples(Path(config.examples) if config.examples else None)
    return create_app(engine or build_engine(config), config.limits, examples, allowed_hosts(config.host))


def serve(config: ServeConfig) -> None:
    """Load the models and serve until interrupted."""
    import uvicorn

    if config.host not in LOOPBACK:
        log.warning("listening on %s: anyone who can reach this machine can use the explorer", config.host)
    app = build_app(config)
    log.info("explorer at http://%s:%d/", config.host if ":" not in config.host else f"[{config.host}]",
             config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
