"""The `bcos-clip explain` run: image files x text prompts -> one PNG per pair, sheets, scores.json.

Output folder: `NN_<image>__KK_<prompt>.png` ([image | colour explanation | overlay], titled with
the prompt and cosine), `sheet.png` (images x prompts, colour explanations), `sheet_overlay.png`
(contribution heat maps over the images) and `scores.json`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from bcos_clip.explain.core import explain
from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.jacobian import require_bcos
from bcos_clip.explain.prompts import resolve_templates
from bcos_clip.explain.sheet import explanation_sheet, pair_panel
from bcos_clip.explain.visualize import default_smooth, save_png
from bcos_clip.models import resolve_model
from bcos_clip.models.strict_json import dumps_strict
from bcos_clip.models.text import CLIP_LOGIT_SCALE
from bcos_clip.runtime.device import pick_device


@dataclass(frozen=True)
class ExplainFilesConfig:
    """What `bcos-clip explain` runs. templates: None ("a photo of {}."), a set name or a file."""

    model: str
    images: tuple
    prompts: tuple
    output: str
    templates: Optional[str] = None
    device: Optional[str] = None
    smooth: Optional[int] = None  # colour alpha window (odd px); None: as B-cos's official visualisation
    cell: int = 192


def load_images(paths: Sequence[str], preprocess: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """Image files -> (N, 3, H, W) in [0, 1] through `preprocess`; a missing, unreadable, truncated or
    oversized (decompression-bomb) file raises an error naming it."""
    if not paths:
        raise ValueError("no images given (--image)")
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            why = "a directory, not an image file" if path.is_dir() else "no such file"
            raise FileNotFoundError(f"image {path}: {why}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    out.append(preprocess(img.convert("RGB")))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValueError(f"image {path}: too many pixels for Pillow's decompression-bomb guard ({exc})") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"image {path}: cannot read it as an image ({type(exc).__name__}: {exc})") from exc
    return torch.stack(out)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of `text`."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit] or "x"


def scores_json(e: Explanation, image_paths: Sequence[str], templates: List, model: str) -> Dict[str, object]:
    """Cosines, their softmax(100 cos) over the prompts, bias and the completeness check, per image."""
    probs = (CLIP_LOGIT_SCALE * e.scores).softmax(-1)
    return {"model": model, "prompts": e.prompts, "templates": [str(t) for t in templates],
            "images": [{"path": str(p), "scores": [float(s) for s in e.scores[n]],
                        "probs": [float(s) for s in probs[n]], "bias": [float(b) for b in e.bias[n]]}
                       for n, p in enumerate(image_paths)],
            "completeness_max_abs_error": float(e.completeness_error().max())}


def explain_files(cfg: ExplainFilesConfig) -> Dict[str, object]:
    """Explain every image with every prompt and write the pictures and scores.json; returns the JSON."""
    if not cfg.prompts:
        raise ValueError("no prompts given (--prompt)")
    device = pick_device(cfg.device)
    model = require_bcos(resolve_model(cfg.model)).to(device).eval()
    images = load_images(cfg.images, model.preprocess)
    templates = resolve_templates(cfg.templates)
    e = explain(model, images, list(cfg.prompts), templates, return_weights=True).cpu()
    out = Path(cfg.output)
    stems = [Path(p).stem for p in cfg.images]
    files = []
    for n, stem in enumerate(stems):
        for k, prompt in enumerate(cfg.prompts):
            path = out / f"{n:02d}_{slug(stem)}__{k:02d}_{slug(prompt)}.png"
            files.append(str(save_png(pair_panel(e, n, k, cell=cfg.cell, smooth=cfg.smooth), path)))
    sheets = {view: str(save_png(explanation_sheet(e, view, smooth=cfg.smooth, image_names=stems),
                                 out / name)) for view, name in (("colour", "sheet.png"), ("overlay", "sheet_overlay.png"))}
    summary = scores_json(e, cfg.images, templates, cfg.model)
    summary["files"] = {"pairs": files, "sheets": sheets}
    summary["colour_smooth_px"] = default_smooth(min(images.shape[-2:])) if cfg.smooth is None else cfg.smooth
    (out / "scores.json").write_text(dumps_strict(summary, str(out / "scores.json"), indent=2))
    return summary
