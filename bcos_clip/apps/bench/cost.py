"""`bcos-clip bench --model-cost`: a roofline cost model of one training step, counted on CPU.

Every aten op of the step (forward and backward) passes through a TorchDispatchMode that records its
FLOPs (torch.utils.flop_counter's formulas; attention by the SDPA formulas) and the bytes it moves: the
distinct elements of its tensor inputs and outputs at their dtypes (a broadcast operand counts once;
views, detach and allocations move nothing). With `bench_dtypes.cuda_policy` the dtypes are those of
CUDA bf16 autocast, and on fake tensors (bench_step) a full tower at batch 128 is counted in seconds.
The fast path's Triton kernels (CUDA only) are stood in for by torch ops counted as one kernel each,
with the bytes the kernel reads and writes.

Predicted time of an op on a device (DEVICE_SPECS, the one table of figures and their sources):
max(FLOPs / peak matmul rate [matmul-class ops only], bytes / HBM bandwidth) + one launch cost per
kernel; the step is the sum. The model has no notion of cache reuse, kernel-specific inefficiency
(e.g. a slow backward kernel) or CPU dispatch limits; bench_validate compares it with measured rows.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bcos_clip.apps.bench.step import ModuleStack, Subject, kind_of, run_step
from bcos_clip.nn import fused, fused_triton
from bcos_clip.nn.fused_torch import TorchKernels


@dataclass(frozen=True)
class DeviceSpec:
    """Figures of one GPU for the roofline."""

    name: str
    matmul_flops: float  # dense bf16/fp16 tensor-core FLOP/s
    fp32_matmul_flops: float  # fp32 (non-tensor-core) FLOP/s, for fp32 matmuls
    hbm_bytes_per_s: float
    launch_s: float  # per kernel
    source: str


LAUNCH_SOURCE = ("launch: 5 us per kernel, a round figure for eager PyTorch's per-op cost (dispatcher + "
                 "cudaLaunchKernel, commonly 3-10 us on a fast host); the least certain figure here")
DEVICE_SPECS: Dict[str, DeviceSpec] = {
    "h200": DeviceSpec("NVIDIA H200 SXM", 989.5e12, 67e12, 4.8e12, 5e-6,
                       "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/h200): BF16 1,979 TFLOPS with "
                       "sparsity = 989.5 dense, FP32 67 TFLOPS, HBM3e 4.8 TB/s; " + LAUNCH_SOURCE),
    "h100": DeviceSpec("NVIDIA H100 SXM", 989.5e12, 67e12, 3.35e12, 5e-6,
                       "NVIDIA H100 datasheet: BF16 1,979 TFLOPS with sparsity, FP32 67 TFLOPS, HBM3 "
                       "3.35 TB/s; " + LAUNCH_SOURCE),
    "a100": DeviceSpec("NVIDIA A100 SXM 80GB", 312e12, 19.5e12, 2.039e12, 5e-6,
                       "NVIDIA A100 datasheet: BF16 312 TFLOPS dense, FP32 19.5 TFLOPS, HBM2e 2,039 GB/s; "
                       + LAUNCH_SOURCE),
}

_FREE = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias",
         "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "set_", "resize_"}
_SDPA_FWD = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_efficient_attention"}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "_scaled_mm"}


@dataclass
class Op:
    """One kernel-level op of the step."""

    phase: str  # "forward" | "backward"
    op: str
    module: str
    kind: str
    flops: int
    bytes: int
    launches: int
    matmul: bool
    low_precision: bool


def distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements t addresses (broadcast dims with stride 0 count once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(tree: Any) -> List[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _sdpa_flops(name: str, args: Tuple[Any, ...], out: Any) -> int:
    if name in _SDPA_FWD:
        return int(flop_counter.sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape))
    return int(flop_counter.sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape,
                                                     args[3].shape))


class CostCounter(TorchDispatchMode):
    """Records an Op for every aten op that launches a kernel (see the module docstring)."""

    def __init__(self, stack: ModuleStack) -> None:
        super().__init__()
        self.stack, self.ops, self.paused, self.phase = stack, [], False, "forward"

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.paused:
            self._record(func, args, kwargs, out)
        return out

    def _where(self) -> Tuple[str, str]:
        node = torch._C._current_autograd_node()
        if node is not None:
            return node.metadata.get("module", "<loss>"), node.metadata.get("kind", "loss")
        mod = self.stack.current
        return self.stack.names.get(mod, "<loss>"), kind_of(mod)

    def _record(self, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], out: Any) -> None:
        name = func._overloadpacket.__name__
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        if name in _FREE or not outs:
            return
        in_storages = {t.untyped_storage()._cdata for t in ins}
        if not func._schema.is_mutable and all(t.untyped_storage()._cdata in in_storages for t in outs):
            return  # a view
        flops = 0
        if func._overloadpacket in flop_counter.flop_registry:
            flops = int(flop_counter.flop_registry[func._overloadpacket](*args, **kwargs, out_val=out))
        elif name.startswith("_scaled_dot_product"):
            flops = _sdpa_flops(name.replace("_backward", ""), args, out) if not name.endswith("backward") \
                else _sdpa_flops(name, args, out)
        launches = sum(bool(m) for m in args[-1]) if name == "convolution_backward" else 1
        matmul = name in _MATMUL or name.startswith("_scaled_dot_product")
        low = any(t.dtype in (torch.bfloat16, torch.float16) for t in ins)
        module, kind = self._where()
        self.add(Op(self.phase, name, module, kind, flops,
                    sum(distinct_bytes(t) for t in ins) + sum(distinct_bytes(t) for t in outs),
                    launches, matmul, low))

    def add(self, op: Op) -> None:
        self.ops.append(op)

    @contextlib.contextmanager
    def kernel(self, name: str, reads: List[torch.Tensor]) -> Iterator[List[torch.Tensor]]:
        """Count the ops inside as one kernel `name` reading `reads`, writing what is appended."""
        writes: List[torch.Tensor] = []
        self.paused = True
        try:
            yield writes
        finally:
            self.paused = False
        module, kind = self._where()
        self.add(Op(self.phase, name, module, kind, 0,
                    sum(distinct_bytes(t) for t in reads + writes), 1, False, True))


class KernelStandIn:
    """fused_triton's kernels as torch ops (nn.fused_torch), each call counted as one kernel with the
    bytes it reads and writes (nn.fused.kernel_stand_in); the statistics' partials at the Triton shape."""

    view3 = staticmethod(fused_triton.view3)

    def __init__(self, counter: CostCounter) -> None:
        self.counter, self.torch = counter, TorchKernels()

    def sumsq(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        with self.counter.kernel("triton:sumsq", [x]) as w:
            w.append(self.torch.sumsq(x, dim))
        return w[0]

    def scale_fwd(self, z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
        with self.counter.kernel("triton:scale_fwd", [z, s]) as w:
            w.append(self.torch.scale_fwd(z, s, b, dim, eps))
        return w[0]

    def scale_bwd(self, g: torch.Tensor, y: torch.Tensor, s: torch.Tensor, b: float, dim: int,
                  eps: float, from_z: bool = False, shift: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
        reads = [g, y, s] + (list(shift[:4]) if shift is not None else [])
        with self.counter.kernel("triton:scale_bwd", reads) as w:
            w.extend(self.torch.scale_bwd(g, y, s, b, dim, eps, from_z, shift))
        return w[0], w[1].float()

    def scale_fwd_stats(self, z: torch.Tensor, s: torch.Tensor, b: float, eps: float) -> Tuple[torch.Tensor, Any]:
        with self.counter.kernel("triton:scale_fwd_stats", [z, s]) as w:
            y, part = self.torch.scale_fwd_stats(z, s, b, eps, rows=fused_triton.stats_rows(z))
            w.extend([y, *part])
        return y, part

    def bn_finalize(self, part: Any, weight: torch.Tensor, running_var: torch.Tensor, momentum: float,
                    eps: float, total: int) -> torch.Tensor:
        with self.counter.kernel("triton:bn_finalize", [*part, weight, running_var]) as w:
            w.extend([self.torch.bn_finalize(part, weight, running_var, momentum, eps, total), running_var])
        return w[0]


@dataclass
class CostAccount:
    model: str
    variant: str
    batch: int
    triton: bool
    ops: List[Op] = field(default_factory=list)

    def predict(self, spec: DeviceSpec) -> List[Tuple[Op, float]]:
        return [(op, op_time(op, spec)) for op in self.ops]

    def totals(self, spec: DeviceSpec) -> Dict[str, float]:
        t: Dict[str, float] = collections.Counter()
        for op, s in self.predict(spec):
            t[op.phase + "_s"] += s
            t[op.phase + "_launches"] += op.launches
            t[op.phase + "_bytes"] += op.bytes
            t[op.phase + "_flops"] += op.flops
        t["step_s"] = t["forward_s"] + t["backward_s"]
        return dict(t)


def op_time(op: Op, spec: DeviceSpec) -> float:
    """Roofline time of one op plus its launch costs (seconds)."""
    compute = 0.0
    if op.matmul and op.flops:
        compute = op.flops / (spec.matmul_flops if op.low_precision else spec.fp32_matmul_flops)
    return max(compute, op.bytes / spec.hbm_bytes_per_s) + op.launches * spec.launch_s


def count_step(sub: Subject, batch: int, triton: bool = True, policy: str = "cuda",
               fake: bool = True) -> CostAccount:
    """The ops of one training step of `sub` (CUDA bf16 autocast dtypes; Triton kernels stood in for
    when `triton`, as on a CUDA machine with Triton)."""
    stack = ModuleStack(sub.tower)
    counter = CostCounter(stack)
    acc = CostAccount(sub.model, sub.variant, batch, triton)

    @contextlib.contextmanager
    def forward_ctx() -> Iterator[None]:
        counter.phase = "forward"
        yield
        counter.phase = "backward"  # the loss and everything after the tower

    stand_in = fused.kernel_stand_in(KernelStandIn(counter)) if triton else contextlib.nullcontext()
    try:
        with stand_in, counter:
            run_step(sub, batch, policy, fake, forward_ctx=forward_ctx)
    finally:
        stack.close()
    acc.ops = counter.ops
    return acc
