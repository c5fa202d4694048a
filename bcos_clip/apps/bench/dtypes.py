"""CUDA autocast's dtype policy, reproduced on CPU tensors (for the memory and cost accounting).

CPU and CUDA autocast cast the same matmul-like ops to the low-precision dtype, but CUDA also runs a
list of ops in fp32 that CPU autocast leaves in bf16 (`layer_norm`, `pow`, `rsqrt`, `exp`, `softmax`,
`sum`, `linalg_vector_norm`, ...). Those casts decide what autograd saves (a LayerNorm under CUDA
autocast saves an fp32 copy of its input) and how many bytes every later op moves, so counting on CPU
"as on the GPU" needs them. `cuda_policy()` registers Python kernels at the AutocastCPU dispatch key for
exactly those ops (the op lists of ATen's autocast_mode.cpp: `AT_FORALL_FP32`,
`AT_FORALL_FP32_SET_OPT_DTYPE`), so that inside `torch.autocast("cpu", dtype)` every op gets the dtype it
gets on CUDA; the casts happen above autograd, as CUDA's do. The registration is removed on exit.

POLICIES maps a policy name ("cuda": emulated CUDA autocast, "cpu": CPU autocast as it is) to a context
manager factory taking the low-precision dtype.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List

import torch

# CUDA autocast's fp32 list (ops present in this torch; the loss functions and upsampling are omitted:
# no tower op uses them). Each entry: "op" or "op.overload".
CUDA_FP32 = ("acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
             "reciprocal", "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar",
             "softplus", "layer_norm", "native_layer_norm", "group_norm", "cosine_similarity",
             "logsumexp", "dist", "cdist", "renorm")
# fp32_set_opt_dtype: run in fp32 (output fp32) unless the caller gave a dtype.
CUDA_FP32_SET_OPT_DTYPE = ("prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
                           "linalg_vector_norm", "sum", "sum.dim_IntList")

_EXCLUDE = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _op(name: str) -> Any:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _fp32_kernel(op: Any) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        cast = [a.float() if _eligible(a) else a for a in args]
        kw = {k: v.float() if _eligible(v) else v for k, v in kwargs.items()}
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            return op(*cast, **kw)
    return kernel


def _set_opt_dtype_kernel(op: Any) -> Callable[..., Any]:
    names = [a.name for a in op._schema.arguments]
    pos = names.index("dtype")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        args_l: List[Any] = list(args)
        given = args_l[pos] if len(args_l) > pos else kwargs.get("dtype")
        if given is None and args_l and _eligible(args_l[0]):
            if len(args_l) > pos:
                args_l[pos] = torch.float32
            else:
                kwargs = {**kwargs, "dtype": torch.float32}
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            return op(*args_l, **kwargs)
    return kernel


@contextlib.contextmanager
def cuda_policy(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CPU autocast to `dtype` with CUDA autocast's fp32 ops (see the module docstring)."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        for name in CUDA_FP32:
            lib.impl(name, _fp32_kernel(_op(name)), "AutocastCPU")
        for name in CUDA_FP32_SET_OPT_DTYPE:
            lib.impl(name, _set_opt_dtype_kernel(_op(name)), "AutocastCPU")
        with torch.autocast("cpu", dtype=dtype):
            yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def cpu_policy(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Plain CPU autocast (what a CPU training step does)."""
    with torch.autocast("cpu", dtype=dtype):
        yield


@contextlib.contextmanager
def fp32_policy(dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """No autocast."""
    yield


POLICIES: Dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "cuda": cuda_policy, "cpu": cpu_policy, "fp32": fp32_policy}
