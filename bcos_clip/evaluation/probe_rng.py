"""Where CLIP_benchmark's global torch RNG stands when its linear probe draws the training-set
permutation, so that ``--probe-protocol clip_benchmark`` draws the same one.

clip_benchmark 1.6.2 draws the probe's permutation (and a ``--val_proportion`` split) from the global
CPU generator; everything else in its probe (the linear layer's init, the shuffling DataLoaders) comes
after a ``torch.manual_seed(seed)`` of its own and is reproduced in :mod:`probe_clip_benchmark`.
Between its ``torch.manual_seed(args.seed)`` (once per model x dataset x language run, in
``cli.run``) and ``torch.randperm(n)`` (in ``metrics.linear_probe.evaluate``) the global generator
is used by, in this order:

1. model loading: ``open_clip.create_model_and_transforms`` builds the model with its random
   initialisation before the checkpoint overwrites it (the draws depend on the architecture only).
   bcos-clip loads an open_clip model through the same constructors (``open_clip.CLIP`` /
   ``CustomTextCLIP`` from the same config), so the same draws happen; a bcos_clip checkpoint loads
   through ``bcos_clip.load`` on both sides (``scripts/clip_benchmark_cpu.py``). (Their
   ``--skip_load`` would draw nothing here, but 1.6.2 then stops before writing its record: not replayed);
2. ``--val_proportion``: ``torch.utils.data.random_split`` (one ``randperm`` of the training set);
3. feature extraction, only when its feature cache has no training features yet: one DataLoader
   iterator per split (train, validation if any, test), each drawing one int64 for its workers' base
   seed (also without workers); the ``wds`` pipelines draw nothing from it in the main process.

Building datasets, transforms, tokenizers and DataLoaders draws nothing. :func:`seeded_load` records the
state after step 1 (the model is loaded right after ``torch.manual_seed(seed)``, the caller's RNG left
as it was); :class:`ClipBenchmarkRng` replays steps 2 and 3 from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

import torch

T = TypeVar("T")


def seeded_load(load: Callable[[], T], seed: int) -> Tuple[T, torch.Tensor]:
    """``load()`` run right after ``torch.manual_seed(seed)``, as CLIP_benchmark loads its models.
    The global RNG is restored afterwards. Returns (what ``load`` returned, the CPU generator's state
    (ByteTensor) after loading)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = load()
        state = torch.get_rng_state()
    return out, state


def dataloader_base_seed(gen: torch.Generator) -> int:
    """The draw with which a DataLoader iterator starts (its workers' base seed), from ``gen``."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())


@dataclass(frozen=True)
class ClipBenchmarkRng:
    """CLIP_benchmark's global RNG from its model loading to its probe's permutation (module docstring).

    ``after_load``: the CPU generator state after loading the model (:func:`seeded_load`); None
    (a model loaded elsewhere, e.g. a ready ``ModelHandle``): the state right after
    ``torch.manual_seed(seed)``, and no DataLoader draws either. ``loader_draws``: how many feature DataLoader iterators ran (0
    when the training features came from the cache)."""

    seed: int
    after_load: Optional[torch.Tensor] = None
    loader_draws: int = 0

    def generator(self) -> torch.Generator:
        """A generator in the state of step 2 (a ``--val_proportion`` split draws from it first)."""
        gen = torch.Generator()
        if self.after_load is None:
            return gen.manual_seed(self.seed)
        gen.set_state(self.after_load)
        return gen

    def describe(self) -> Dict[str, Any]:
        """For the record: whether the model load's draws were replayed, and how many loader draws."""
        loaded = self.after_load is not None
        return {"after_model_load": loaded, "loader_draws": self.loader_draws if loaded else 0}

    def skip_loaders(self, gen: torch.Generator) -> torch.Generator:
        """``gen`` advanced past step 3's DataLoader draws (in place; returned for chaining)."""
        for _ in range(self.loader_draws if self.after_load is not None else 0):
            dataloader_base_seed(gen)
        return gen


def loader_draws(features_computed: bool, has_val: bool) -> int:
    """Step 3's count: train, validation (when there is one) and test iterators, if CLIP_benchmark
    would extract features (its cache lacks the training features), else none."""
    return (3 if has_val else 2) if features_computed else 0
