"""The `bcos-clip localize` run: a CLIP_benchmark wds/ folder -> grid pointing game -> JSON + PNGs.

Writes into the output folder: `localization_<dataset>_<method>.json` (summary, per-grid scores),
`histogram_<dataset>_<method>.png` and `examples_<dataset>_<method>/grid_XX.png`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import torch

from bcos_clip.data.readers.wds import clean_dataset_name, open_wds_benchmark
from bcos_clip.explain.baselines import ATTRIBUTIONS
from bcos_clip.explain.jacobian import require_bcos
from bcos_clip.explain.pointing import collect_confident, grid_pointing_game
from bcos_clip.explain.pointing_report import example_picture, histogram_picture
from bcos_clip.explain.prompts import prompt_embeddings, resolve_templates
from bcos_clip.explain.visualize import save_png
from bcos_clip.models import resolve_model
from bcos_clip.models.strict_json import dumps_strict
from bcos_clip.runtime.device import pick_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalizeConfig:
    """What `bcos-clip localize` runs. templates None: the dataset's own templates file."""

    model: str
    dataset: str
    dataset_root: str
    output: str
    pretrained: Optional[str] = None
    method: str = "bcos"
    grid: int = 3
    n_grids: int = 100
    seed: int = 0
    split: str = "test"
    per_class: int = 8
    max_images: Optional[int] = None
    threshold: float = 0.5
    smooth: Optional[int] = None
    templates: Optional[str] = None
    batch_size: int = 4
    n_examples: int = 4
    device: Optional[str] = None


def _check_method(model: torch.nn.Module, method: str) -> None:
    if method not in ATTRIBUTIONS:
        raise ValueError(f"--method {method!r}: choose one of {', '.join(ATTRIBUTIONS)}")
    if method == "bcos":
        require_bcos(model)


def _write(result_json: dict, result, out: Path, tag: str) -> Dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"localization_{tag}.json", "histogram": out / f"histogram_{tag}.png"}
    result_json["files"] = {k: str(v) for k, v in paths.items()}
    save_png(histogram_picture(result.scores, f"{result.method}, {result.grid}x{result.grid}",
                               chance=1.0 / result.grid ** 2), paths["histogram"])
    for i, ex in enumerate(result.examples):
        save_png(example_picture(ex, result.classnames, result.grid, result.smooth),
                 out / f"examples_{tag}" / f"grid_{i:02d}.png")
    paths["json"].write_text(dumps_strict(result_json, str(paths["json"]), indent=2))
    return {k: str(v) for k, v in paths.items()}


def run_localization(cfg: LocalizeConfig) -> dict:
    """Load the model and dataset, select confident images, play the game, write JSON and PNGs.
    Returns the JSON summary (with "files")."""
    device = pick_device(cfg.device)
    model = resolve_model(cfg.model, cfg.pretrained)
    _check_method(model, cfg.method)
    model = model.to(device).eval()
    bench = open_wds_benchmark(cfg.dataset, cfg.dataset_root)
    if bench.kind != "classification":
        raise ValueError(f"dataset {bench.name!r} is a {bench.kind} dataset; the pointing game needs class labels")
    templates = resolve_templates(cfg.templates) if cfg.templates else bench.templates
    class_text = prompt_embeddings(model, bench.classnames, templates, device)
    pool = collect_confident(model, bench.torch_dataset(cfg.split, model.preprocess), class_text,
                             cfg.per_class, cfg.max_images, cfg.threshold)
    if len(pool) < cfg.grid ** 2:
        raise ValueError(f"{bench.name}: {len(pool)} class(es) have correctly and confidently classified images "
                         f"(softmax(100 cos) >= --threshold {cfg.threshold}); a {cfg.grid}x{cfg.grid} grid needs "
                         f"{cfg.grid ** 2}: lower --threshold or --grid, or read more images")
    result = grid_pointing_game(model, pool, bench.classnames, templates, grid=cfg.grid, n_grids=cfg.n_grids,
                                seed=cfg.seed, method=cfg.method, smooth=cfg.smooth, threshold=cfg.threshold,
                                batch_size=cfg.batch_size, n_examples=cfg.n_examples)
    summary = {"model": cfg.model, "pretrained": cfg.pretrained, "dataset": bench.name,
               "config": asdict(cfg), **result.as_dict()}
    tag = f"{clean_dataset_name(cfg.dataset)[1]}_{cfg.method}"
    _write(summary, result, Path(cfg.output), tag)
    log.info("pointing game %s on %s: mean %.3f over %d grids (chance %.3f)", cfg.method, bench.name,
             summary["mean"], summary["n_grids"], summary["chance"])
    return summary
