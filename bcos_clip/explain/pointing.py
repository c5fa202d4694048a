"""Grid pointing game for text prompts (METHOD.md §5, DESIGN.md clarifications).

n x n grids of images of distinct classes, each classified correctly and confidently by the model
(top-1 with softmax(100 cos) >= 0.5 over the dataset's classes). Each grid is resized to the model's
own input size; for the class of each cell, the map of that class prompt is box-smoothed (kernel about
a quarter of a cell), clamped >= 0, and scored as the share of positive mass inside the cell.
A perfect map scores 1, a uniform one 1/n^2.

Example::

    result = grid_pointing_game(model, {0: cats, 1: dogs, ...}, classnames, templates, grid=3, n_grids=100)
    result.as_dict()["mean"]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bcos_clip.explain.baselines import ATTRIBUTIONS
from bcos_clip.explain.prompts import Templates, prompt_embeddings
from bcos_clip.explain.visualize import box_smooth
from bcos_clip.models import EmbeddingWatch
from bcos_clip.models.text import CLIP_LOGIT_SCALE

log = logging.getLogger(__name__)


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255, a compact pool) or floats in [0, 1] -> float32 in [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def cell_bounds(size: int, n: int) -> List[int]:
    """n + 1 pixel boundaries of n cells along a side of `size` pixels."""
    return [round(i * size / n) for i in range(n + 1)]


def default_smooth(size: int, n: int) -> int:
    """An odd box-kernel of about a quarter of a cell (19 for a 3x3 grid at 224 px)."""
    k = max(1, round(size / n / 4))
    return k if k % 2 else k + 1


def localisation_scores(maps: torch.Tensor, n: int, smooth: int = 0) -> torch.Tensor:
    """maps (G, n*n, H, W): map c of grid g explains the class of cell c (row-major).
    -> (G, n*n): positive mass of map c inside cell c / its total positive mass (0 if it has none)."""
    if maps.dim() != 4 or maps.shape[1] != n * n:
        raise ValueError(f"maps must be (G, {n * n}, H, W) for a {n}x{n} grid, got {tuple(maps.shape)}")
    m = box_smooth(maps.float(), smooth).clamp_min(0)
    ys, xs = cell_bounds(m.shape[-2], n), cell_bounds(m.shape[-1], n)
    inside = torch.stack([m[:, c, ys[c // n]:ys[c // n + 1], xs[c % n]:xs[c % n + 1]].sum((-2, -1))
                          for c in range(n * n)], dim=1)
    total = m.sum((-2, -1))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def compose_grid(cells: torch.Tensor, n: int) -> torch.Tensor:
    """cells (n*n, 3, h, w), row-major -> one image (3, n*h, n*w)."""
    rows = [torch.cat(list(cells[r * n:(r + 1) * n]), dim=-1) for r in range(n)]
    return torch.cat(rows, dim=-2)


def make_grids(labels: torch.Tensor, n: int, n_grids: int, seed: int = 0) -> torch.Tensor:
    """Pool labels (M,) -> (G, n*n) indices into the pool: each grid n*n images of distinct classes,
    classes and images drawn uniformly (seeded); an image may appear in several grids."""
    labels = labels.cpu().numpy()
    classes = np.unique(labels)
    if len(classes) < n * n:
        raise ValueError(f"a {n}x{n} grid needs {n * n} classes with correctly and confidently classified "
                         f"images, found {len(classes)}")
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    rng = np.random.default_rng(seed)
    grids = np.empty((n_grids, n * n), dtype=np.int64)
    for g in range(n_grids):
        chosen = rng.choice(classes, size=n * n, replace=False)
        grids[g] = [rng.choice(members[int(c)]) for c in chosen]
    return torch.from_numpy(grids)


@torch.no_grad()
def select_confident(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     class_text: torch.Tensor, threshold: float = 0.5, batch_size: int = 64,
                     watch: Optional[EmbeddingWatch] = None) -> torch.Tensor:
    """(M,) bool: top-1 == label and softmax(100 cos) of it >= threshold. images (M, 3, H, W) in [0, 1].

    A zero or non-finite embedding raises DegenerateEmbeddingError (``watch`` counts over several calls)."""
    watch = watch or EmbeddingWatch(model, "selecting confident images")
    was_training = model.training
    model.eval()
    device = class_text.device
    keep = []
    try:
        for i in range(0, images.shape[0], batch_size):
            batch = as_unit_float(images[i:i + batch_size].to(device))
            emb = F.normalize(watch(model.encode_image(batch).float()), dim=-1)
            prob, top = (CLIP_LOGIT_SCALE * emb @ class_text.T).softmax(-1).max(-1)
            keep.append((top.cpu() == labels[i:i + batch_size].cpu()) & (prob.cpu() >= threshold))
    finally:
        model.train(was_training)
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool)


def collect_confident(model: torch.nn.Module, dataset: torch.utils.data.IterableDataset, class_text: torch.Tensor,
                      per_class: int, max_images: Optional[int] = None, threshold: float = 0.5,
                      batch_size: int = 64) -> Dict[int, torch.Tensor]:
    """Read (image (3, H, W) in [0, 1], label, ...) samples and keep up to `per_class` correctly and
    confidently classified images per class, as uint8 (M_c, 3, H, W). Stops when every class is full
    or after `max_images` samples; a zero or non-finite image embedding raises DegenerateEmbeddingError."""
    n_classes = class_text.shape[0]
    kept: Dict[int, List[torch.Tensor]] = {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    seen = 0
    watch = EmbeddingWatch(model, "selecting confident images")
    for batch in tqdm(loader, desc="selecting confident images", leave=False):
        images, labels = batch[0], batch[1]  # (image, target[, order key]) samples
        ok = select_confident(model, images, labels, class_text, threshold, batch_size, watch)
        for img, lab in zip(images[ok], labels[ok]):
            bucket = kept.setdefault(int(lab), [])
            if len(bucket) < per_class:
                bucket.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        seen += len(labels)
        full = len(kept) == n_classes and all(len(v) >= per_class for v in kept.values())
        if full or (max_images is not None and seen >= max_images):
            break
    log.info("read %d images; %d confident ones in %d classes", seen, sum(map(len, kept.values())), len(kept))
    return {c: torch.stack(v) for c, v in kept.items()}


@dataclass
class PointingGameResult:
    """scores (G, n*n) per grid and cell; classes (G, n*n) class ids; examples: the first grids as
    dicts with image (3, S, S), maps (n*n, S, S) and classes (n*n,)."""

    scores: torch.Tensor
    classes: torch.Tensor
    classnames: List[str]
    method: str
    grid: int
    size: int
    smooth: int
    n_candidates: int
    examples: List[Dict[str, torch.Tensor]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        """JSON-ready summary: mean / std / median over all cells, per-grid classes and scores."""
        flat = self.scores.flatten().double()
        per_grid = [{"classes": [self.classnames[int(c)] for c in cls], "scores": [round(float(s), 6) for s in sc],
                     "mean": float(sc.double().mean())} for cls, sc in zip(self.classes, self.scores)]
        return {"method": self.method, "grid": self.grid, "image_size": self.size, "smooth": self.smooth,
                "n_grids": int(self.scores.shape[0]), "n_candidates": self.n_candidates,
                "chance": 1.0 / self.grid ** 2, "mean": float(flat.mean()),
                "std": float(flat.std()) if flat.numel() > 1 else 0.0, "median": float(flat.median()),
                "per_grid": per_grid}


def score_grids(model: torch.nn.Module, pool: torch.Tensor, grids: torch.Tensor, labels: torch.Tensor,
                class_text: torch.Tensor, n: int, method: str = "bcos", smooth: Optional[int] = None,
                batch_size: int = 4, n_examples: int = 0,
                classnames: Optional[Sequence[str]] = None) -> PointingGameResult:
    """Explain every grid (resized to model.image_size) for its n*n cell classes and score it.
    pool (M, 3, h, w) in [0, 1] (or uint8); grids (G, n*n) pool indices; labels (M,) class ids;
    class_text (C, D) unit embeddings of the C classes (named by classnames)."""
    if method not in ATTRIBUTIONS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(ATTRIBUTIONS)}")
    size = int(model.image_size)
    smooth = default_smooth(size, n) if smooth is None else smooth
    scores, examples = [], []
    for i in tqdm(range(0, grids.shape[0], batch_size), desc=f"pointing game ({method})", leave=False):
        idx = grids[i:i + batch_size]
        images = torch.stack([compose_grid(as_unit_float(pool[row]), n) for row in idx]).to(class_text.device)
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        maps = ATTRIBUTIONS[method](model, images.clamp(0, 1), class_text[labels[idx].to(class_text.device)])
        scores.append(localisation_scores(maps.detach(), n, smooth).cpu())
        for j in range(min(len(idx), n_examples - len(examples))):
            examples.append({"image": images[j].cpu(), "maps": maps[j].detach().cpu(), "classes": labels[idx[j]]})
    names = list(classnames) if classnames is not None else [str(c) for c in range(class_text.shape[0])]
    return PointingGameResult(scores=torch.cat(scores), classes=labels[grids], classnames=names, method=method,
                              grid=n, size=size, smooth=smooth, n_candidates=int(pool.shape[0]), examples=examples)


def _pool(images_by_class: Mapping[int, torch.Tensor]) -> tuple:
    items = [(int(c), imgs) for c, imgs in images_by_class.items() if len(imgs)]
    if not items:
        raise ValueError("images_by_class holds no images")
    shapes = {tuple(imgs.shape[1:]) for _, imgs in items}
    if len(shapes) != 1:
        raise ValueError(f"all pool images must share one (3, H, W) shape, got {sorted(shapes)}")
    pool = torch.cat([imgs for _, imgs in items])
    labels = torch.cat([torch.full((len(imgs),), c, dtype=torch.long) for c, imgs in items])
    return pool, labels


def grid_pointing_game(model: torch.nn.Module, images_by_class: Mapping[int, torch.Tensor],
                       classnames: Union[Sequence[str], torch.Tensor], templates: Templates = None, *,
                       grid: int = 3, n_grids: int = 100, seed: int = 0, method: str = "bcos",
                       smooth: Optional[int] = None, threshold: float = 0.5,
                       select_with: Sequence[torch.nn.Module] = (), batch_size: int = 4,
                       n_examples: int = 4) -> PointingGameResult:
    """The whole game: keep the images the model (and every model in `select_with`, to share grids
    between models) classifies correctly and confidently, draw `n_grids` seeded grids, explain, score.

    images_by_class: class id -> (M_c, 3, H, W) in [0, 1] or uint8 (one size for all); classnames: the C
    class names (targets: their prompt embeddings, templates averaged) or a (C, D) tensor of class
    embeddings; method: a key of ATTRIBUTIONS ("bcos" for a BcosCLIP, or a post-hoc baseline).
    """
    if grid < 1 or n_grids < 1:
        raise ValueError(f"grid and n_grids must be >= 1, got {grid} and {n_grids}")
    pool, labels = _pool(images_by_class)
    given = isinstance(classnames, torch.Tensor)
    prompts = classnames if given else list(classnames)
    if int(labels.max()) >= len(prompts) or int(labels.min()) < 0:
        raise ValueError(f"images_by_class has class id {int(labels.max())} but only {len(prompts)} classes")
    device = next(model.parameters()).device
    keep = torch.ones(len(labels), dtype=torch.bool)
    for m in (model, *select_with):
        text = prompt_embeddings(m, prompts, templates, next(m.parameters()).device)
        keep &= select_confident(m, pool, labels, text, threshold)
    log.info("pointing game: %d of %d images correct and confident (p >= %.2f)", int(keep.sum()), len(keep),
             threshold)
    pool, labels = pool[keep], labels[keep]
    grids = make_grids(labels, grid, n_grids, seed)
    class_text = prompt_embeddings(model, prompts, templates, device)
    return score_grids(model, pool, grids, labels, class_text, grid, method, smooth, batch_size, n_examples,
                       None if given else prompts)
