"""Explanation and zero-shot rows of `bcos-clip bench` (the libraries' own entry points, timed).

Explanations (eval, fp32, one image): `explain` with K = 1 / 16 / 256 prompts (one forward + batched
backwards), 16 separate single-prompt calls, the folded tower, and the cached contribution tensor
(`image_contributions` once, then any 16 new prompts with one einsum). Zero-shot: the evaluation
library's `extract_features` over an in-memory loader and `build_classifier` for 100 classes.
"""
from __future__ import annotations

import logging
from typing import Any, List, Sequence

import torch
import torch.nn.functional as F

from bcos_clip.apps.bench.timing import Row, measure, throughput, timed_once
from bcos_clip.apps.bench.towers import ModelSet, images_for
from bcos_clip.evaluation.classifier import build_classifier
from bcos_clip.evaluation.features import extract_features
from bcos_clip.explain import explain, image_contributions
from bcos_clip.models import PlainCLIP
from bcos_clip.nn.fold import fold_batchnorms

log = logging.getLogger(__name__)


def _text(ms: ModelSet, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return F.normalize(torch.randn(k, ms.embed_dim, generator=g), dim=-1).to(ms.device)


def folded_model(ms: ModelSet) -> Any:
    """The BcosCLIP with every foldable eval BN folded (a copy; built once)."""
    if ms.folded_model is None:
        was = ms.bcos.training
        ms.folded_model = fold_batchnorms(ms.bcos.eval())
        ms.bcos.train(was)
    return ms.folded_model


def _row(ms: ModelSet, what: str, **extra: Any) -> Row:
    return {"section": "explain", "model": ms.name, "variant": what, "name": f"explain/{ms.name}/{what}", **extra}


def explain_rows(ms: ModelSet, ks: Sequence[int], iters: int, warmup: int) -> List[Row]:
    """Rows for K prompts batched, 16 separate calls, the folded model and the cached tensor."""
    image = images_for(ms, 1)
    rows: List[Row] = []
    for k in ks:
        text = _text(ms, k, k)
        row = _row(ms, f"K={k}", k=k)
        row.update(measure(lambda: explain(ms.bcos, image, text), ms.device, iters, warmup))
        row["prompts_per_s"] = k * 1000.0 / row["ms"]
        rows.append(row)
    text16 = _text(ms, 16, 16)
    row = _row(ms, "16 separate K=1 calls", k=16)
    row.update(measure(lambda: [explain(ms.bcos, image, text16[i:i + 1]) for i in range(16)],
                       ms.device, max(1, iters // 2), 1))
    rows.append(row)
    row = _row(ms, "K=16 folded BN", k=16)
    model = folded_model(ms)
    row.update(measure(lambda: explain(model, image, text16), ms.device, iters, warmup))
    rows.append(row)
    rows.extend(cached_rows(ms, image, iters))
    return rows


def cached_rows(ms: ModelSet, image: torch.Tensor, iters: int) -> List[Row]:
    """Build the per-pixel contribution tensor once; then 16 new prompts per einsum."""
    build = _row(ms, "cached tensor: build (D rows)")
    holder: dict = {}
    build["ms"] = 1000.0 * timed_once(lambda: holder.update(c=image_contributions(ms.bcos, image)), ms.device)
    cache = holder["c"]
    build["cache_mib"] = cache.nbytes / float(1 << 20)
    new16 = _text(ms, 16, 1616)
    query = _row(ms, "cached tensor: 16 new prompts", k=16)
    query.update(measure(lambda: cache.explain(new16), ms.device, max(iters, 10), 3))
    return [build, query]


def zeroshot_rows(ms: ModelSet, batch: int, n_images: int, precision: str) -> List[Row]:
    """Feature extraction img/s through bcos_clip.evaluation, plain vs B-cos (vs folded B-cos)."""
    images = torch.rand(n_images, 3, ms.image_size, ms.image_size)
    labels, keys = torch.zeros(n_images, dtype=torch.long), torch.arange(n_images)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels, keys), batch_size=batch)
    warm = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images[:batch], labels[:batch], keys[:batch]), batch_size=batch)
    models = {"plain": PlainCLIP.from_clip(ms.clip, ms.tokenizer).to(ms.device).eval(), "bcos-fast": ms.bcos.eval(),
              "bcos-fast-folded": folded_model(ms)}
    rows: List[Row] = []
    for variant, model in models.items():
        row: Row = {"section": "zeroshot", "model": ms.name, "variant": variant, "batch": batch,
                    "name": f"zeroshot/{ms.name}/{variant}", "precision": precision, "n_images": n_images}
        extract_features(model, warm, ms.device, precision)
        row["ms"] = 1000.0 * timed_once(lambda: extract_features(model, loader, ms.device, precision),
                                        ms.device) * batch / n_images
        rows.append(throughput(row, batch))
    classnames = [f"class {i}" for i in range(100)]
    row = {"section": "zeroshot", "model": ms.name, "variant": "classifier (100 classes x 1 template)",
           "name": f"zeroshot/{ms.name}/classifier"}
    row["ms"] = 1000.0 * timed_once(lambda: build_classifier(models["bcos-fast"], classnames,
                                                             ["a photo of a {c}."], ms.device, precision),
                                    ms.device)
    rows.append(row)
    return rows
