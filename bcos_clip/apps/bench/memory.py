"""`bcos-clip bench --memory`: the bytes autograd keeps for backward in one training step.

What a training step keeps between its forward and its backward sets its peak memory on any device.
Every tensor autograd saves passes through `torch.autograd.graph.saved_tensors_hooks`; the accountant
counts each underlying storage once (two ops saving views of one tensor keep one buffer), attributes
it to the innermost module running when it was first saved (its layer kind: conv, batchnorm, linear,
layernorm, activation, attention, ...) and names the op that produced it. Saved parameters are not
counted (they are resident anyway); their autocast casts are ("weight casts": batch-independent).

Everything but the weight casts grows linearly with the batch: `account` runs the real forward on CPU
at small batches, and the same ops on fake tensors (bench_step) at any batch, e.g. 128 in seconds;
`linearity` checks that the real batches and the fake one agree.
"""
from __future__ import annotations

import collections
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch

from bcos_clip.apps.bench.step import ModuleStack, Subject, kind_of, run_step
from bcos_clip.nn import fused
from bcos_clip.nn.fused_torch import TorchKernels

MIB = float(1 << 20)


@dataclass
class Saved:
    """One storage kept for backward."""

    module: str
    kind: str
    producer: str
    dtype: str
    shape: str  # with the batch as N, e.g. "N×197×768", "(N·197)×768"
    nbytes: int
    category: str  # "activation" | "weight cast"


@dataclass
class MemoryAccount:
    model: str
    variant: str
    batch: int
    policy: str
    fake: bool
    saved: List[Saved] = field(default_factory=list)

    @property
    def activation_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved if s.category == "activation")

    @property
    def weight_cast_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved if s.category == "weight cast")

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.weight_cast_bytes

    def by_kind(self) -> Dict[str, int]:
        out: Dict[str, int] = collections.Counter()
        for s in self.saved:
            out["weight casts" if s.category == "weight cast" else s.kind] += s.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def top(self, n: int = 10) -> List[Dict[str, Any]]:
        """The largest groups of saved activations: (module pattern, producer, dtype, shape), summed."""
        groups: Dict[Tuple[str, str, str, str], List[int]] = collections.defaultdict(list)
        for s in self.saved:
            if s.category == "activation":
                groups[(re.sub(r"\.\d+\.", ".*.", s.module), s.producer, s.dtype, s.shape)].append(s.nbytes)
        rows = [{"module": k[0], "producer": k[1], "dtype": k[2], "shape": k[3], "count": len(v),
                 "mib": sum(v) / MIB} for k, v in groups.items()]
        return sorted(rows, key=lambda r: -r["mib"])[:n]

    def summary(self) -> Dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "batch": self.batch, "policy": self.policy,
                "fake": self.fake, "saved_mib": self.total_bytes / MIB,
                "activation_mib": self.activation_bytes / MIB, "weight_cast_mib": self.weight_cast_bytes / MIB,
                "by_kind_mib": {k: v / MIB for k, v in self.by_kind().items()}, "top": self.top()}


def shape_text(shape: Tuple[int, ...], batch: int) -> str:
    """A shape with the batch written N: (128, 197, 768) -> "N×197×768"; (25216, 768) -> "(N·197)×768"."""
    dims = [str(d) for d in shape]
    if dims and batch > 1 and shape[0] % batch == 0:
        k = shape[0] // batch
        dims[0] = "N" if k == 1 else f"(N·{k})"
    return "×".join(dims) if dims else "scalar"


_VIEWS = {"TBackward0", "ViewBackward0", "UnsafeViewBackward0", "TransposeBackward0", "PermuteBackward0",
          "ExpandBackward0", "AliasBackward0", "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1"}


def _weight_derived(t: torch.Tensor) -> bool:
    """True when t is (a view of) a dtype cast of a leaf parameter (autocast's weight casts)."""
    node, cast = t.grad_fn, False
    for _ in range(5):
        if node is None:
            return False
        name = type(node).__name__
        if name == "AccumulateGrad":
            return cast
        if name not in _VIEWS and name != "ToCopyBackward0":
            return False
        cast = cast or name == "ToCopyBackward0"
        nexts = [n for n, _ in node.next_functions if n is not None]
        if len(nexts) != 1:
            return False
        node = nexts[0]
    return False


def _param_cast(t: torch.Tensor, module: Any) -> bool:
    """True when t has the shape of one of the module's own parameters in another dtype: the weight
    cast a fused layer Function keeps (made without autograd, so _weight_derived cannot see it)."""
    if module is None:
        return False
    return any(p.shape == t.shape and p.dtype != t.dtype for p in module.parameters(recurse=False))


def _is_param(t: torch.Tensor) -> bool:
    base = t._base if t._base is not None else t
    return base.is_leaf and base.requires_grad


def account(sub: Subject, batch: int, policy: str = "cuda", fake: bool = True) -> MemoryAccount:
    """Saved-for-backward storages of one training step of `sub` (forward only: nothing is freed before
    the backward starts)."""
    acc = MemoryAccount(sub.model, sub.variant, batch, policy, fake)
    stack = ModuleStack(sub.tower)
    seen: Dict[int, Any] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st._cdata
        if key in seen or _is_param(t):
            return t
        seen[key] = st  # keeps the storage alive, so its address cannot be reused during the step
        mod = stack.current
        cat = "weight cast" if _weight_derived(t) or _param_cast(t, mod) else "activation"
        acc.saved.append(Saved(stack.names.get(mod, "<loss>"), kind_of(mod),
                               t.grad_fn.name() if t.grad_fn is not None else "(no grad_fn)",
                               str(t.dtype).replace("torch.", ""), shape_text(t.shape, batch), st.nbytes(), cat))
        return t

    # the CUDA policy runs the kernel paths (nn.fused_conv_bn) as on a GPU with Triton, in torch ops
    kernels = fused.kernel_stand_in(TorchKernels()) if policy == "cuda" else contextlib.nullcontext()
    try:
        with kernels:
            run_step(sub, batch, policy, fake, backward=False,
                     forward_ctx=lambda: torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
    finally:
        stack.close()
    return acc


def linearity(sub: Subject, batches: Tuple[int, int], fake_batch: int, policy: str = "cuda"
              ) -> Dict[str, Any]:
    """Real CPU accounts at two small batches, extrapolated linearly, against the fake-tensor account at
    `fake_batch`: per-image and constant bytes, and the relative difference."""
    b1, b2 = batches
    a1, a2 = account(sub, b1, policy, fake=False), account(sub, b2, policy, fake=False)
    per_image = (a2.total_bytes - a1.total_bytes) / (b2 - b1)
    const = a1.total_bytes - b1 * per_image
    big = account(sub, fake_batch, policy, fake=True)
    predicted = const + fake_batch * per_image
    return {"model": sub.model, "variant": sub.variant, "policy": policy, "real_batches": [b1, b2],
            "real_saved_mib": [a1.total_bytes / MIB, a2.total_bytes / MIB],
            "per_image_mib": per_image / MIB, "constant_mib": const / MIB,
            "weight_cast_mib": a1.weight_cast_bytes / MIB, "fake_batch": fake_batch,
            "fake_saved_mib": big.total_bytes / MIB, "extrapolated_mib": predicted / MIB,
            "rel_diff": abs(big.total_bytes - predicted) / max(big.total_bytes, 1)}
