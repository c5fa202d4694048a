"""One training step of a tower, run for accounting (saved bytes, op costs) rather than timing.

The step is the benchmark's (`bench_towers.make_train_step`): forward of the tower under autocast, loss
1 - cos(out, target), backward. It runs either on real CPU tensors or on fake tensors
(torch._subclasses.FakeTensorMode: shapes, dtypes, strides and storages without data or compute), so
that a full-size tower at batch 128 is counted in seconds; both see the same ops.

Variants are the benchmark's plus `bcos-fast-v1`: the fast path as the H200 measured it on 2026-11-26
(B-cos scale Functions only, every other layer on its formula), for validating the cost model against
those rows. `label_modules` tags every autograd node with the module that created it, so backward ops
can be attributed to layers too.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.apps.bench.dtypes import POLICIES
from bcos_clip.apps.bench.towers import VARIANT_FEATURES, ModelSet, input_fn, path_ctx, tower_for

KINDS: Dict[str, str] = {  # module class -> layer kind
    "Conv2d": "conv", "BcosConv2d": "conv", "ReferenceBcosConv2d": "conv",
    "BatchNorm2d": "batchnorm", "UncenteredBatchNorm2d": "batchnorm",
    "ReferenceUncenteredBatchNorm2d": "batchnorm",
    "Linear": "linear", "NonDynamicallyQuantizableLinear": "linear", "BcosLinear": "linear",
    "ReferenceBcosLinear": "linear",
    "LayerNorm": "layernorm", "LayerNormFp32": "layernorm", "BcosLayerNorm": "layernorm",
    "GELU": "activation", "QuickGELU": "activation", "GatedActivation": "activation",
    "ReLU": "relu", "AvgPool2d": "pool", "Identity": "other",
    "MultiheadAttention": "attention", "BcosSelfAttention": "attention",
    "AttentionPool2d": "attention pool", "BcosAttentionPool2d": "attention pool",
}


def kind_of(module: Optional[nn.Module]) -> str:
    """The layer kind of a module ("tower" for containers and the tower's own ops)."""
    if module is None:
        return "loss"
    return KINDS.get(type(module).__name__, "tower")


@dataclass
class Subject:
    """A tower variant ready to step: module, input preparation, sizes."""

    model: str
    variant: str
    tower: nn.Module
    prep: Callable[[torch.Tensor], torch.Tensor]
    image_size: int
    embed_dim: int
    channels_last: bool


def subject(ms: ModelSet, variant: str) -> Subject:
    tower_variant = "bcos-fast" if variant.startswith("bcos-fast") else variant
    return Subject(ms.name, variant, tower_for(ms, tower_variant), input_fn(ms, tower_variant),
                   ms.image_size, ms.embed_dim, ms.channels_last)


class ModuleStack:
    """Forward hooks that keep the stack of modules being run and tag autograd nodes with them."""

    def __init__(self, tower: nn.Module) -> None:
        self.names = {m: n or "<tower>" for n, m in tower.named_modules()}
        self.stack: List[nn.Module] = []
        self._inputs: List[Set[Any]] = []
        self._handles = []
        for m in tower.modules():
            self._handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._post, always_call=True))

    @property
    def current(self) -> Optional[nn.Module]:
        return self.stack[-1] if self.stack else None

    def _pre(self, mod: nn.Module, args: Any, kwargs: Any) -> None:
        self.stack.append(mod)
        flat = list(args) + list(kwargs.values())
        self._inputs.append({t.grad_fn for t in flat if isinstance(t, torch.Tensor) and t.grad_fn is not None})

    def _post(self, mod: nn.Module, args: Any, out: Any) -> None:
        self.stack.pop()
        boundary = self._inputs.pop()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        todo = [t.grad_fn for t in outs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        seen: Set[Any] = set()
        while todo:  # tag this module's nodes (inner modules tagged theirs first)
            node = todo.pop()
            if node is None or node in seen or node in boundary:
                continue
            seen.add(node)
            node.metadata.setdefault("module", self.names[mod])
            node.metadata.setdefault("kind", kind_of(mod))
            todo.extend(n for n, _ in node.next_functions)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@contextlib.contextmanager
def fake_state(tower: nn.Module, mode: Any) -> Iterator[Dict[str, torch.Tensor]]:
    """Fake copies of the tower's parameters and buffers (for torch.func.functional_call)."""
    state: Dict[str, torch.Tensor] = {}
    for name, p in tower.named_parameters():
        state[name] = mode.from_tensor(p.detach()).requires_grad_(p.requires_grad)
    for name, b in tower.named_buffers():
        state[name] = mode.from_tensor(b)
    yield state


def run_step(sub: Subject, batch: int, policy: str, fake: bool, backward: bool = True,
             forward_ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             seed: int = 0) -> None:
    """One training step of `sub` at `batch` images with dtype policy `policy` (bench_dtypes.POLICIES);
    `forward_ctx()` wraps the forward only (e.g. saved-tensor hooks); backward=False stops after the
    loss."""
    sub.tower.train()
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, sub.image_size, sub.image_size, generator=g)
    if sub.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = torch.randn(batch, sub.embed_dim, generator=g)
    if not fake:
        _step(sub, lambda x: sub.tower(x), images, target, policy, forward_ctx, backward)
        return
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)  # constants of the input preparation
    with fake_state(sub.tower, mode) as state:
        images, target = mode.from_tensor(images), mode.from_tensor(target)
        with mode:
            _step(sub, lambda x: torch.func.functional_call(sub.tower, state, (x,)), images, target, policy,
                  forward_ctx, backward)


def _step(sub: Subject, run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
          target: torch.Tensor, policy: str, forward_ctx: Callable[[], contextlib.AbstractContextManager],
          backward: bool) -> None:
    for p in sub.tower.parameters():
        p.grad = None
    with path_ctx(sub.variant):
        with forward_ctx(), POLICIES[policy]():
            out = run(sub.prep(images))
        loss = 1.0 - F.cosine_similarity(out.float(), target, dim=-1).mean()
        if backward:
            loss.backward()
    for p in sub.tower.parameters():
        p.grad = None
