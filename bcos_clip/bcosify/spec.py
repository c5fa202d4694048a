"""The bcosify spec: everything that defines how a tower is converted (saved with every checkpoint)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

INPUT_ENCODINGS = ("folded", "normalize6")
QK_KINDS = ("bcos", "linear")
LAYERNORMS = ("centered", "uncentered")
POSITIONALS = ("bias", "input", "drop")


@dataclass(frozen=True)
class BcosifySpec:
    """How to B-cosify an image tower.

    b: the B of every converted conv / linear (1 = plain linear, 2 = the standard choice).
    bias: keep all biases (conv, linear, BatchNorm shift, attention, LayerNorm); False removes them.
    attnpool_positional: keep the RN attention-pool positional embedding (default: same as `bias`).
    qk: "bcos" makes the attention q/k projections B-cos linears (as the paper's code does);
        "linear" keeps them plain linears (they only set the detached attention weights).
    layernorm: "centered" keeps LayerNorm's mean subtraction ((x - mean) / std, std detachable; B = 1
        reproduces the original); "uncentered" drops it (x / rms(x), rms detachable: a pure per-token
        scale, as B-cos v2's uncentered norms; changes the function, distillation adapts to it).
    positional: how a ViT's positional embedding enters: "bias" (added as it is; explanations report it
        as bias) or "input" (the same values, written as a linear function of each patch's [x, 1-x]
        pixels, which sum to 1 per channel pair: explanations attribute it to the patch; needs
        input_encoding "folded") or "drop" (patch positions removed, a bias-free token path; position
        then comes only from a conv stem's zero padding; changes the function).
    positional_scale: the patch positions (not the class token's) are multiplied by this at conversion
        (1 = unchanged, exact at B = 1). A B-cos patch path is much smaller than the plain one (each
        B-cos layer scales by |cos|), so unscaled positions dominate every patch token and most of a
        score ends up in the bias; < 1 restores the balance (changes the function; distillation adapts).
    input_encoding: "folded" (CLIP normalisation folded into the first conv, METHOD.md §2) or
        "normalize6" (the official code's 6-channel Normalize; for importing its checkpoints).
    official_c_proj: compatibility with the official RN attention pool, which bypasses c_proj's B-cos
        scale (c_proj acts as a plain linear).
    official_v_proj: compatibility with the official converter, which leaves the RN attention pool's
        q/k/v projections as plain linears (with qk="linear" the whole pool is then plain linear
        attention; models.official imports the paper's checkpoints this way).
    """

    b: float = 2.0
    bias: bool = False
    attnpool_positional: Optional[bool] = None
    qk: str = "bcos"
    input_encoding: str = "folded"
    layernorm: str = "centered"
    positional: str = "bias"
    positional_scale: float = 1.0
    official_c_proj: bool = False
    official_v_proj: bool = False

    def __post_init__(self) -> None:
        if self.b < 1.0:
            raise ValueError(f"bcosify: b must be >= 1, got {self.b}")
        if self.qk not in QK_KINDS:
            raise ValueError(f"bcosify: qk must be one of {QK_KINDS}, got {self.qk!r}")
        if self.layernorm not in LAYERNORMS:
            raise ValueError(f"bcosify: layernorm must be one of {LAYERNORMS}, got {self.layernorm!r}")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"bcosify: input_encoding must be one of {INPUT_ENCODINGS}, "
                             f"got {self.input_encoding!r}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"bcosify: positional must be one of {POSITIONALS}, got {self.positional!r}")
        if not (self.positional_scale > 0 and self.positional_scale < float("inf")):
            raise ValueError(f"bcosify: positional_scale must be a finite number > 0, got {self.positional_scale}")
        if self.positional == "input" and self.input_encoding != "folded":
            raise ValueError("bcosify: positional 'input' needs input_encoding 'folded' (the tower must see "
                             "[x, 1-x] itself)")

    @property
    def keep_positional(self) -> bool:
        return self.bias if self.attnpool_positional is None else self.attnpool_positional

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BcosifySpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"bcosify spec: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)
