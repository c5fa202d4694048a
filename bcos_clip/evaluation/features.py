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

from bcos_clip.runtime.distributed import all_gather, rank_world
from bcos_clip.runtime.hashing import json_digest
from bcos_clip.runtime.precision import autocast
from bcos_clip.evaluation.results import first_line
from bcos_clip.models import DegenerateEmbeddingError, EmbeddingWatch
from bcos_clip.models.torch_files import load_tensors

log = logging.getLogger(__name__)

Targets = Any  # (N,) int64 tensor | (N, C) float tensor | List[List[str]] captions


def collate(batch: Sequence[Tuple[torch.Tensor, Any, int]]) -> Tuple[torch.Tensor, Targets, torch.Tensor]:
    """Stack images (B, 3, H, W); class ids -> (B,) int64, multi-hot -> (B, C) float32, captions
    stay a list of lists; order keys -> (B,) int64."""
    images = torch.stack([b[0] for b in batch])
    keys = torch.tensor([int(b[2]) for b in batch], dtype=torch.long)
    first = batch[0][1]
    if isinstance(first, (int, np.integer)):
        return images, torch.tensor([int(b[1]) for b in batch], dtype=torch.long), keys
    if isinstance(first, np.ndarray):
        return images, torch.from_numpy(np.stack([b[1] for b in batch])).float(), keys
    return images, [list(b[1]) for b in batch], keys


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Ordered (no shuffle) loader over a reader's ``torch_dataset``; ``pin_memory`` for CUDA."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                       collate_fn=collate, shuffle=False,
                                       persistent_workers=False, pin_memory=pin_memory)


def take(targets: Targets, index: torch.Tensor) -> Targets:
    """``targets`` reordered by ``index`` (tensors or lists)."""
    if isinstance(targets, torch.Tensor):
        return targets[index]
    return [targets[i] for i in index.tolist()]


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
                     precision: str = "fp32", desc: str = "features"
                     ) -> Tuple[torch.Tensor, Targets, torch.Tensor]:
    """L2-normalised image embeddings (N, D) float32 on CPU, the targets and the (N,) order keys.

    Raises DegenerateEmbeddingError at the first batch with a zero or non-finite embedding (``desc``
    names the split in its message)."""
    watch = EmbeddingWatch(model, f"features of {desc}")
    feats: List[torch.Tensor] = []
    targets: List[Targets] = []
    keys: List[torch.Tensor] = []
    batches = iter(loader)
    try:
        with tqdm(desc=desc, unit="img", leave=False, disable=rank_world()[0] != 0) as bar:
            for images, target, key in batches:
                with autocast(precision, device):
                    emb = model.encode_image(images.to(device, non_blocking=True))
                feats.append(F.normalize(watch(emb.float()), dim=-1).cpu())
                targets.append(target)
                keys.append(key)
                bar.update(images.shape[0])
    finally:
        # Stop the workers now, also after an error: the iterator sits in a reference cycle, and a
        # worker forked before it is collected inherits it (then shutdowns stall for seconds).
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    if not feats:
        return torch.zeros(0, 0), concat_targets([]), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), concat_targets(targets), torch.cat(keys)


@dataclass(frozen=True)
class LoaderSettings:
    """How a split is read: batch size, DataLoader workers, device and precision."""

    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"


def _local_features(model: Any, dataset: Any, split: str, settings: LoaderSettings
                    ) -> Tuple[torch.Tensor, Targets, torch.Tensor]:
    rank, world = rank_world()
    part = dataset.torch_dataset(split, model.preprocess, rank=rank, world_size=world)
    workers = settings.workers
    shards = getattr(part, "urls", None)  # webdataset splits shards across workers: more would idle
    if shards is not None:
        workers = min(workers, len(shards))
    loader = make_loader(part, settings.batch_size, workers, pin_memory=torch.device(settings.device).type == "cuda")
    return extract_features(model, loader, torch.device(settings.device), settings.precision,
                            desc=f"{dataset.name}/{split}")


def split_features(model: Any, dataset: Any, split: str,
                   settings: LoaderSettings) -> Optional[Tuple[torch.Tensor, Targets]]:
    """Features (N, D) and targets of ``split`` in the dataset's own order (independent of ranks and
    workers): every rank reads its part, rank 0 gets all (other ranks get None). A reading error on
    any rank is raised on every rank, so that a suite under torchrun moves on in step."""
    rank, world = rank_world()
    try:
        local: Any = _local_features(model, dataset, split, settings)
    except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
        if world == 1:
            raise
        local = {"error": f"rank {rank}: {first_line(exc)}", "degenerate": isinstance(exc, DegenerateEmbeddingError)}
    gathered = all_gather(local)
    errors = [g for g in gathered if isinstance(g, dict)]
    if errors:  # a degenerate model stays one (the suite stops on it), other errors fail the row
        kind = DegenerateEmbeddingError if any(e["degenerate"] for e in errors) else ValueError
        raise kind("; ".join(e["error"] for e in errors))
    if rank != 0:
        return None
    gathered = [g for g in gathered if g[0].numel()]
    if not gathered:
        raise ValueError(f"dataset {dataset.name!r} split {split!r}: no samples")
    order = torch.cat([k for _, _, k in gathered]).argsort()
    feats_all = torch.cat([f for f, _, _ in gathered])[order]
    return feats_all, take(concat_targets([t for _, t, _ in gathered]), order)


def feature_cache_path(feature_dir: Path, model_hash: str, dataset: Any, split: str,
                       precision: str) -> Path:
    """``feature_dir/<model hash>/<dataset key>/<split>.pt``; the dataset key digests its name, folder,
    class names and precision (a changed model or dataset never reuses old features)."""
    key = json_digest({"name": dataset.name, "root": str(Path(dataset.root).resolve()),
                       "classnames": dataset.classnames, "precision": precision})[:16]
    safe = dataset.name.replace("/", "-")
    return Path(feature_dir) / model_hash[:16] / f"{safe}-{key}" / f"{split}.pt"


def cached_split_features(model: Any, dataset: Any, split: str, settings: LoaderSettings,
                          feature_dir: Optional[Path], model_hash: str) -> Optional[Tuple[torch.Tensor, Targets]]:
    """:func:`split_features` through the on-disk cache in ``feature_dir`` (CLIP_benchmark's
    ``--feature_root``; rank 0 writes, all ranks may read)."""
    if feature_dir is None:
        return split_features(model, dataset, split, settings)
    path = feature_cache_path(feature_dir, model_hash, dataset, split, settings.precision)
    if path.is_file():
        log.info("features from cache %s", path)
        blob = load_tensors(path, "feature cache (delete it to recompute)")
        return (blob["features"], blob["targets"]) if rank_world()[0] == 0 else None
    out = split_features(model, dataset, split, settings)
    if out is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": out[0], "targets": out[1]}, tmp)
        tmp.replace(path)
    return out
