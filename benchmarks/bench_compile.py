"""torch.compile of the full-size towers on CPU: graph breaks, compiled == eager, compile time, step ratio.

For RN50 and ViT-B-16 (random weights, 224 px), training mode, fp32 (CPU):
- `torch._dynamo.explain` over the training step (forward + loss) of the B-cos fast and the plain tower:
  graph and graph-break counts (also under bf16 autocast);
- compiled (inductor) vs eager: output and every parameter gradient of one step, relative max errors
  (per tensor and against the largest gradient), beside eager fp32 vs the same step in float64: the
  small-batch RN50 step is ill-conditioned enough that fp32 itself is that far from exact;
- compile time (the first compiled step, forward + backward) and step times, eager and compiled, B-cos
  fast / plain: the four steps are interleaved and each kind's median is taken, as a shared machine's
  load changes within minutes. CPU ratios are not GPU ratios: on a CPU the convolutions and matmuls
  dominate and elementwise passes are cheap relative to them.

    nice -n 10 python benchmarks/bench_compile.py --output benchmarks/results/cpu2core_compile.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.apps.bench.towers import build_modelset, input_fn
from bcos_clip.nn import UncenteredBatchNorm2d


def _step(tower: torch.nn.Module, prep: Callable, x: torch.Tensor, target: torch.Tensor) -> Callable:
    def run(module: Callable) -> List[torch.Tensor]:
        for p in tower.parameters():
            p.grad = None
        state = {k: v.clone() for k, v in tower.state_dict().items()}
        out = module(prep(x))
        (1.0 - F.cosine_similarity(out.float(), target, dim=-1).mean()).backward()
        grads = [p.grad.clone() for p in tower.parameters()]
        tower.load_state_dict(state)
        return [out.detach()] + grads
    return run


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def max_errors(compiled: List[torch.Tensor], eager: List[torch.Tensor], names: List[str]) -> Dict[str, Any]:
    """Relative max error of the output and of every parameter gradient, max|c - e| / max|e|; gradients
    below 1e-6 of the largest (the attention pool's key bias, which softmax ignores; the q / k weights of
    a randomly initialised B-cos ViT) are left out of the worst gradient, as their relative error is
    rounding noise, and listed."""
    scale = max(e.abs().max().item() for e in eager[1:])
    grads = [(_rel(c, e), n) for c, e, n in zip(compiled[1:], eager[1:], names)
             if e.abs().max().item() >= 1e-6 * scale]
    worst = max(grads)
    glob = max((c - e).abs().max().item() for c, e in zip(compiled[1:], eager[1:])) / scale
    return {"output_rel_error": _rel(compiled[0], eager[0]), "grad_global_rel_error": glob,
            "grad_rel_error": worst[0], "worst_grad": worst[1],
            "zero_grads_left_out": [n for (e, n) in zip(eager[1:], names) if e.abs().max().item() < 1e-6 * scale]}


def explain(tower: torch.nn.Module, prep: Callable, x: torch.Tensor, target: torch.Tensor,
            autocast: bool) -> Dict[str, Any]:
    torch._dynamo.reset()

    def loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = tower(prep(x))
        return 1.0 - F.cosine_similarity(out.float(), target, dim=-1).mean()

    ex = torch._dynamo.explain(loss)(x, target)
    return {"graphs": ex.graph_count, "graph_breaks": ex.graph_break_count,
            "reasons": [str(r.reason) for r in ex.break_reasons][:5]}


def wake_batchnorms(tower: torch.nn.Module, seed: int = 0) -> None:
    """open_clip initialises every residual branch's last BatchNorm weight to 0, which leaves most of a
    random RN50's gradients ~0 (nothing to compare): draw all BatchNorm weights from [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tower.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, UncenteredBatchNorm2d)) and m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))


def variant_rows(ms: Any, variant: str, batch: int) -> Tuple[Dict[str, Any], Dict[str, Callable]]:
    """Explain counts, compile time and compiled-vs-eager errors; the eager and compiled step callables."""
    tower, prep = ms.towers[variant].train(), input_fn(ms, variant)
    wake_batchnorms(tower)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, ms.image_size, ms.image_size, generator=g)
    if ms.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randn(batch, ms.embed_dim, generator=g)
    row: Dict[str, Any] = {"explain_fp32": explain(tower, prep, x, target, False),
                           "explain_bf16_autocast": explain(tower, prep, x, target, True)}
    run = _step(tower, prep, x, target)
    eager = run(tower)
    torch._dynamo.reset()
    compiled_tower = torch.compile(tower)
    t0 = time.perf_counter()
    compiled = run(compiled_tower)
    row["compile_s"] = time.perf_counter() - t0
    names = [n for n, _ in tower.named_parameters()]
    row.update(max_errors(compiled, eager, names))
    tower.double()  # the same step in float64: how far fp32 itself is from exact (a baseline)
    exact = _step(tower, lambda t: prep(t).double(), x, target.double())(tower)
    tower.float()
    row["eager_fp32_vs_fp64"] = max_errors(eager, [t.float() for t in exact], names)
    return row, {"eager": lambda: run(tower), "compiled": lambda: run(compiled_tower)}


def interleaved_ms(steps: Dict[str, Callable], iters: int) -> Dict[str, float]:
    """Median milliseconds of each step, the steps taken in turn `iters` times."""
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(iters):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="RN50,ViT-B-16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5, help="interleaved rounds of the four timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    result: Dict[str, Any] = {"machine": f"{platform.processor() or 'cpu'}, {args.threads} threads",
                              "torch": torch.__version__, "batch": args.batch, "precision": "fp32", "towers": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        ms = build_modelset(name, torch.device("cpu"), quick=False)
        rows, steps = {}, {}
        for v in ("plain", "bcos-fast"):
            rows[v], fns = variant_rows(ms, v, args.batch)
            steps.update({f"{v}/{k}": fn for k, fn in fns.items()})
        ms_by = interleaved_ms(steps, args.iters)
        for v in ("plain", "bcos-fast"):
            rows[v].update(eager_step_ms=ms_by[f"{v}/eager"], compiled_step_ms=ms_by[f"{v}/compiled"])
        for kind in ("eager_step_ms", "compiled_step_ms"):
            rows[f"bcos_over_plain_{kind}"] = rows["bcos-fast"][kind] / rows["plain"][kind]
        result["towers"][name] = rows
        print(json.dumps({name: rows}, indent=1))
        if args.output:
            with open(args.output, "w") as fh:
                json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
