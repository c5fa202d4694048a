"""Where a demo student's evidence lies: pixels or bias, its own object or the others.

Why the pointing game can be low although the student classifies well: the B-cos explanation splits
each score into pixel contributions and a bias term (for a ViT: the class token and, with
``bcos_positional: bias``, the positional embedding, carried through the input's dynamic linear map), and
the game scores only the positive pixel mass. For a demo folder this prints, on the pointing dataset's
correctly and confidently classified test images (the game's pool, student only):

- single images, own class prompt: mean score = pixel sum + bias;
- 2 x 2 grids (the game's layout, seeded): the score of each cell's prompt, the summed contributions
  of that cell (own object) and of each other cell, the share of own-cell sums > 0, the share of
  positive mass in the map, and the game's score (positive mass in the own cell, box-smoothed).

``--teacher`` adds the plain teacher's cosines (``<demo>/teacher``) on the same images and grids: its
own-prompt score on single images and each cell prompt's score on the grids (no contributions).

``token_norms``: the mean norm of the patch tokens the (B-cos) stem makes from these images and of the
patch positions added to them (the teacher's too, with ``--teacher``): how much of every token is position.

``--positional input`` re-attributes a ``bias``-positional ViT's positional embedding to each patch's
pixels (the same function, ``bcosify`` spec ``positional``), to see how much of the bias it is.

    python benchmarks/sweep_vit_evidence.py --demo /tmp/recipe/base_s0
    python benchmarks/sweep_vit_evidence.py --demo /tmp/recipe/base_s0 --positional input

One JSON line on stdout (and ``--out FILE`` appends it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

import torch
import torch.nn.functional as F

from bcos_clip.apps.demo.pointing import confident_pool, joint_pool
from bcos_clip.explain import explain
from bcos_clip.explain.pointing import (as_unit_float, cell_bounds, compose_grid, default_smooth,
                                        localisation_scores, make_grids)
from bcos_clip.explain.prompts import prompt_embeddings
from bcos_clip.models import resolve_model
from bcos_clip.models.checkpoint import load

GRID = 2


def cell_sums(maps: torch.Tensor, n: int) -> torch.Tensor:
    """maps (G, K, H, W) -> (G, K, n*n): the sum of each map over each cell (row-major)."""
    ys, xs = cell_bounds(maps.shape[-2], n), cell_bounds(maps.shape[-1], n)
    return torch.stack([maps[..., ys[c // n]:ys[c // n + 1], xs[c % n]:xs[c % n + 1]].sum((-2, -1))
                        for c in range(n * n)], dim=-1)


def single_images(model: torch.nn.Module, pool: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                  limit: int) -> Dict[str, float]:
    """Own-prompt score of single images, split into pixel sum and bias."""
    e = explain(model, as_unit_float(pool[:limit]), text[labels[:limit]][:, None], method="prompts")
    return {"score": float(e.scores.mean()), "pixels": float(e.contributions.sum((-2, -1)).mean()),
            "bias": float(e.bias.mean())}


def grids(model: torch.nn.Module, pool: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
          n_grids: int, seed: int) -> Dict[str, float]:
    """The game's grids: score, own-cell vs other-cell sums, positive mass, pointing score."""
    size = int(model.image_size)
    images, idx = grid_images(pool, labels, n_grids, seed, size)
    e = explain(model, images, text[labels[idx]], method="prompts")
    c = e.contributions
    sums = cell_sums(c, GRID)
    own = sums.diagonal(dim1=1, dim2=2)
    other = (sums.sum(-1) - own) / (GRID * GRID - 1)
    return {"score": float(e.scores.mean()), "bias": float(e.bias.mean()), "own_cell": float(own.mean()),
            "own_cell_positive": float((own > 0).float().mean()), "other_cell": float(other.mean()),
            "positive_mass_share": float(c.clamp_min(0).sum() / c.abs().sum().clamp_min(1e-30)),
            "pointing": float(localisation_scores(c, GRID, default_smooth(size, GRID)).mean())}


def grid_images(pool: torch.Tensor, labels: torch.Tensor, n_grids: int, seed: int, size: int):
    """The game's 2 x 2 grids of ``pool`` images at the model's size: (G, 3, size, size) in [0, 1] and
    the (G, 4) row indices into ``pool``."""
    idx = make_grids(labels, GRID, n_grids, seed)
    images = torch.stack([compose_grid(as_unit_float(pool[row]), GRID) for row in idx])
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1), idx


@torch.no_grad()
def token_norms(visual: torch.nn.Module, stem_input: torch.Tensor) -> Dict[str, float]:
    """Mean norm of the stem's patch tokens and of the patch positions: (N, C, H, W) stem input."""
    tokens = visual.conv1(stem_input).flatten(2).transpose(1, 2)
    return {"patch_tokens": float(tokens.norm(dim=-1).mean()),
            "positions": float(visual.positional_embedding[1:].norm(dim=-1).mean())}


@torch.no_grad()
def teacher_scores(demo: Path, data: Dict[str, Any], pool: torch.Tensor, labels: torch.Tensor, n_grids: int,
                   seed: int) -> Dict[str, float]:
    """The plain teacher's cosine with the own prompt: single images, and each cell's prompt on the grids."""
    folder = demo / "teacher"
    config = next(folder.glob("teacher_*.json"))
    teacher = resolve_model(str(config), str(config.with_suffix(".pt"))).eval()
    text = prompt_embeddings(teacher, data["classnames"], data["templates"], "cpu")
    single = F.normalize(teacher.encode_image(as_unit_float(pool)).float(), dim=-1)
    images, idx = grid_images(pool, labels, n_grids, seed, int(teacher.image_size))
    grid = F.normalize(teacher.encode_image(images).float(), dim=-1)
    cell = torch.einsum("gd,gkd->gk", grid, text[labels[idx]])
    norms = token_norms(teacher.clip.visual, teacher.normalize_images(as_unit_float(pool)))
    return {"single_score": float((single * text[labels]).sum(-1).mean()), "grid_score": float(cell.mean()),
            "grid_score_positive": float((cell > 0).float().mean()), "token_norms": norms}


def evidence(demo: Path, checkpoint: Path, positional: str, n_grids: int, seed: int,
             with_teacher: bool = False) -> Dict[str, Any]:
    model = load(checkpoint).eval()
    if positional:
        model.visual.positional = positional  # the same function; only the attribution moves
    world = SimpleNamespace(wds_root=demo / "world" / "wds")
    data = confident_pool(model, world, SimpleNamespace(dataset="shapes_natural", per_class=8, threshold=0.5))
    kept = joint_pool(data, [model], 0.5)
    pool = torch.cat(list(kept.values()))
    labels = torch.cat([torch.full((len(v),), c) for c, v in kept.items()])
    text = prompt_embeddings(model, data["classnames"], data["templates"], "cpu")
    row = {"demo": str(demo), "checkpoint": str(checkpoint), "positional": positional or "as trained",
           "single": single_images(model, pool, labels, text, 48),
           "grid": grids(model, pool, labels, text, n_grids, seed)}
    x = as_unit_float(pool)
    row["token_norms"] = token_norms(model.visual, torch.cat([x, 1 - x], dim=1))
    if with_teacher:
        row["teacher"] = teacher_scores(demo, data, pool, labels, n_grids, seed)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, help="a demo output folder (its world/ and students/)")
    ap.add_argument("--checkpoint", default=None, help="default: <demo>/students/text_kd/checkpoints/latest")
    ap.add_argument("--positional", default="", choices=["", "bias", "input"])
    ap.add_argument("--teacher", action="store_true", help="also the plain teacher's cosines (same images)")
    ap.add_argument("--grids", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    demo = Path(args.demo)
    ckpt = Path(args.checkpoint) if args.checkpoint else demo / "students" / "text_kd" / "checkpoints" / "latest"
    row = evidence(demo, ckpt, args.positional, args.grids, args.seed, args.teacher)
    line = json.dumps(row)
    print(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
