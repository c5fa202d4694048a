"""Image feature extraction over a benchmark split (sharded across ranks, gathered on rank 0),
with an on-disk cache for the linear probe."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bcos_clip.evaluation.distributed import gather_to_main, rank_world
from bcos_clip.evaluation.hashing import json_digest
from bcos_clip.evaluation.precision import autocast

log = logging.getLogger(__name__)

Targets = Any  # (N,) int64 tensor | (N, C) float tensor | List[List[str]] captions


def collate(batch: Sequence[Tuple[torch.Tensor, Any]]) -> Tuple[torch.Tensor, Targets]:
    """Stack images (B, 3, H, W); class ids -> (B,) int64, multi-hot -> (B, C) float32,
    captions stay a list of lists."""
    images = torch.stack([b[0] for b in batch])
    first = batch[0][1]
    if isinstance(first, (int, np.integer)):
        return images, torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
    if isinstance(first, np.ndarray):
        return images, torch.from_numpy(np.stack([b[1] for b in batch])).float()
    return images, [list(b[1]) for b in batch]


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int,
                workers: int) -> torch.utils.data.DataLoader:
    """Ordered (no shuffle) loader over a reader's ``torch_dataset``."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                       collate_fn=collate, shuffle=False,
                                       persistent_workers=False, pin_memory=False)


def concat_targets(parts: List[Targets]) -> Targets:
    """Concatenate per-batch (or per-rank) targets of one kind."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return torch.zeros(0, dtype=torch.long)
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [t for p in parts for t in p]


@torch.no_grad()
def extract_features(model: Any, loader: torch.utils.data.DataLoader, device: torch.device,
                     precision: str = "fp32", desc: str = "features") -> Tuple[torch.Tensor, Targets]:
    """L2-normalised image embeddings of every batch: (N, D) float32 on CPU, and the targets."""
    feats: List[torch.Tensor] = []
    targets: List[Targets] = []
    for images, target in tqdm(loader, desc=desc, leave=False, disable=rank_world()[0] != 0):
        with autocast(precision, device):
            emb = model.encode_image(images.to(device, non_blocking=True))
        feats.append(F.normalize(emb.float(), dim=-1).cpu())
        targets.append(target)
    if not feats:
        return torch.zeros(0, 0), concat_targets([])
    return torch.cat(feats), concat_targets(targets)


@dataclass(frozen=True)
class LoaderSettings:
    """How a split is read: batch size, DataLoader workers, device and precision."""

    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"


def split_features(model: Any, dataset: Any, split: str,
                   settings: LoaderSettings) -> Optional[Tuple[torch.Tensor, Targets]]:
    """Features and targets of ``split``: every rank reads its part, rank 0 gets all (else None)."""
    rank, world = rank_world()
    part = dataset.torch_dataset(split, model.preprocess, rank=rank, world_size=world)
    loader = make_loader(part, settings.batch_size, settings.workers)
    feats, targets = extract_features(model, loader, torch.device(settings.device),
                                      settings.precision, desc=f"{dataset.name}/{split}")
    gathered = gather_to_main((feats, targets))
    if gathered is None:
        return None
    feats_all = torch.cat([f for f, _ in gathered if f.numel()]) if any(f.numel() for f, _ in gathered) \
        else torch.zeros(0, 0)
    if feats_all.shape[0] == 0:
        raise ValueError(f"dataset {dataset.name!r} split {split!r}: no samples")
    return feats_all, concat_targets([t for _, t in gathered])


def feature_cache_path(cache_dir: Path, model_hash: str, dataset: Any, split: str,
                       precision: str) -> Path:
    """``cache_dir/features/<model hash>/<dataset key>/<split>.pt``; the dataset key digests its
    name, folder and class names."""
    key = json_digest({"name": dataset.name, "root": str(Path(dataset.root).resolve()),
                       "classnames": dataset.classnames, "precision": precision})[:16]
    safe = dataset.name.replace("/", "-")
    return Path(cache_dir) / "features" / model_hash[:16] / f"{safe}-{key}" / f"{split}.pt"


def cached_split_features(model: Any, dataset: Any, split: str, settings: LoaderSettings,
                          cache_dir: Optional[Path], model_hash: str) -> Optional[Tuple[torch.Tensor, Targets]]:
    """:func:`split_features` through the on-disk cache (rank 0 writes; all ranks may read)."""
    if cache_dir is None:
        return split_features(model, dataset, split, settings)
    path = feature_cache_path(cache_dir, model_hash, dataset, split, settings.precision)
    if path.is_file():
        log.info("features from cache %s", path)
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return (blob["features"], blob["targets"]) if rank_world()[0] == 0 else None
    out = split_features(model, dataset, split, settings)
    if out is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": out[0], "targets": out[1]}, tmp)
        tmp.replace(path)
    return out
