"""A quick zero-shot top-1 check during training on a small held-out CLIP_benchmark ``wds/`` folder.

Only what training needs to watch its progress (class prompts x templates of the folder, centre-crop
images, top-1). The full evaluation lives in ``bcos_clip.evaluation``.
"""
from __future__ import annotations

import itertools
import logging
from typing import Dict

import torch
import torch.nn.functional as F

from bcos_clip.data.readers.wds import open_wds_benchmark
from bcos_clip.data.stream.transforms import eval_transform, to_unit_float
from bcos_clip.models import EmbeddingWatch, encode_prompts

log = logging.getLogger(__name__)


class ZeroShotCheck:
    """Top-1 zero-shot accuracy of a model on up to ``max_samples`` images of a ``wds/`` folder."""

    def __init__(self, folder: str, image_size: int, max_samples: int = 1000, batch_size: int = 64) -> None:
        self.bench = open_wds_benchmark(folder, folder)
        if self.bench.kind != "classification":
            raise ValueError(f"--zeroshot-data {folder}: a classification wds folder is needed, "
                             f"found {self.bench.kind}")
        self.split = "test" if self.bench.has_split("test") else "train"
        self.bench.shards(self.split)  # a missing or cut-short shard fails here, before any training step
        self.image_size, self.max_samples, self.batch_size = image_size, max_samples, batch_size

    @torch.no_grad()
    def run(self, model, device: torch.device, where: str = "") -> Dict[str, float]:
        """model: BcosCLIP / PlainCLIP (images in [0, 1]). Returns ``{"zeroshot_top1", "zeroshot_n"}``.

        A zero or non-finite image embedding raises DegenerateEmbeddingError (``where`` goes into its
        message, e.g. the step)."""
        watch = EmbeddingWatch(model, f"{where or 'zero-shot check'} on {self.bench.root}")
        was_training = model.training
        model.eval()
        dtype = next(model.visual.parameters()).dtype
        classifier = encode_prompts(model, self.bench.classnames, self.bench.templates, device=device)
        dataset = self.bench.torch_dataset(self.split, lambda img: eval_transform(img, self.image_size))
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, num_workers=0)
        correct = total = 0
        for images, labels, *_ in itertools.islice(loader, (self.max_samples + self.batch_size - 1) // self.batch_size):
            images, labels = images[:self.max_samples - total], labels[:self.max_samples - total]
            images = to_unit_float(images.to(device)).to(dtype)
            emb = F.normalize(watch(model.encode_image(images).float()), dim=-1)
            pred = (emb @ classifier.t()).argmax(-1).cpu()
            correct += int((pred == labels).sum())
            total += int(labels.numel())
        model.train(was_training)
        if total == 0:
            raise ValueError(f"--zeroshot-data {self.bench.root}: no samples in split {self.split!r}")
        return {"zeroshot_top1": correct / total, "zeroshot_n": float(total)}
