"""What a conversion did: replaced, kept, removed, and anything left unconverted."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from torch import nn

from bcos_clip import nn as bnn

# Leaf modules that are already dynamic linear (or linear), or ours.
ALLOWED_LEAVES: Tuple[type, ...] = (
    bnn.BcosConv2d, bnn.BcosLinear, bnn.UncenteredBatchNorm2d, bnn.BcosLayerNorm, bnn.GatedActivation,
    bnn.Normalize6, nn.ReLU, nn.AvgPool2d, nn.Identity, nn.Dropout,
)


@dataclass
class ConversionReport:
    tower: str = ""
    replaced: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, old type, new type)
    kept: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, type, why)
    removed: List[Tuple[str, str]] = field(default_factory=list)  # (name, what)
    unconverted: List[Tuple[str, str]] = field(default_factory=list)  # (name, type)

    def replace(self, name: str, old: object, new: object) -> None:
        self.replaced.append((name, type(old).__name__, type(new).__name__))

    def keep(self, name: str, obj: object, why: str) -> None:
        self.kept.append((name, type(obj).__name__, why))

    def remove(self, name: str, what: str) -> None:
        self.removed.append((name, what))

    def scan(self, tower: nn.Module, allowed_extra: Tuple[type, ...] = ()) -> None:
        """List every leaf module of `tower` that is not a known B-cos / dynamic-linear module."""
        kept_names = {k[0] for k in self.kept}
        for name, mod in tower.named_modules():
            if list(mod.children()) or name in kept_names:
                continue
            if not isinstance(mod, ALLOWED_LEAVES + allowed_extra):
                self.unconverted.append((name, type(mod).__name__))

    def to_dict(self) -> Dict[str, object]:
        return {"tower": self.tower, "replaced": self.replaced, "kept": self.kept,
                "removed": self.removed, "unconverted": self.unconverted}

    def summary(self) -> str:
        return (f"{self.tower}: {len(self.replaced)} modules replaced, {len(self.kept)} kept, "
                f"{len(self.removed)} removed, {len(self.unconverted)} unconverted")
