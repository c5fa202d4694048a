"""`bcos-clip bench`: plain vs B-cos towers (reference, fast, compiled), explanations, zero-shot and
end-to-end distillation throughput; ratios from one run, JSON output."""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_output
from bcos_clip.cli.types import int_list, non_negative_float, non_negative_int, positive_int
from bcos_clip.runtime.output_paths import check_output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    from bcos_clip.apps.bench.run import SECTIONS
    from bcos_clip.apps.bench.cost import DEVICE_SPECS

    p = sub.add_parser("bench", help="benchmark plain vs B-cos towers, explanations and distillation",
                       description="Measure training step / inference img/s and peak memory of the plain "
                                   "open_clip towers and their B-cosified versions (official-style reference "
                                   "formula, bcos_clip's formula, fast path, torch.compile), explanation, "
                                   "zero-shot and end-to-end distillation throughput. Ratios come from rows "
                                   "of the same run. Random weights (speed does not depend on them).")
    p.add_argument("--quick", action="store_true",
                   help="tiny towers, batch <= 8, 2 iterations, no compile: a CPU smoke test (CI)")
    p.add_argument("--device", default="auto", help="cuda, cuda:N or cpu (default: cuda when available)")
    add_output(p, required=False, help="JSON file to write (rows, ratios, targets, profiles)")
    p.add_argument("--models", default="RN50,ViT-B-16", help="comma-separated open_clip model names")
    p.add_argument("--batches", type=int_list(1), default=[64, 128, 256], help="batch sizes, e.g. 64,128,256")
    p.add_argument("--compile-batch", type=positive_int, default=128,
                   help="the batch of the compiled rows, targets and explanations ratios (default 128)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile rows (auto: on for CUDA, off on CPU and with --quick)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="autocast precision of the tower rows (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--iters", type=positive_int, default=10, help="timed iterations per row")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="warm-up iterations per row")
    p.add_argument("--explain-ks", type=int_list(1), default=[1, 16, 256], help="prompt counts K of explain rows")
    p.add_argument("--sections", default=None,
                   help=f"which timed parts to run ({', '.join(SECTIONS)}; default: all, or none when "
                        "--memory / --model-cost is given alone)")
    p.add_argument("--time-budget", type=non_negative_float, default=0.0,
                   help="seconds for the whole run: rows that would start too late are skipped (0: none)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="DataLoader workers of the end-to-end rows")
    p.add_argument("--triton", choices=["on", "off"], default="on",
                   help="Triton kernels of the fast path on CUDA (off: the same Functions with torch ops)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="CPU intra-op threads during the run (0: torch's default; --quick uses 1)")
    g = p.add_argument_group("accounting (CPU: counted on fake tensors, no GPU needed)")
    g.add_argument("--memory", action="store_true",
                   help="bytes saved for backward by one training step of every tower variant (batch "
                        "--compile-batch, CUDA bf16 autocast dtypes), per layer kind, with top contributors")
    g.add_argument("--model-cost", action="store_true",
                   help="FLOPs, bytes and kernels of every aten op of the training step and a roofline time "
                        "on --device-spec; both validated against measured rows")
    g.add_argument("--device-spec", default="h200", choices=sorted(DEVICE_SPECS),
                   help="the GPU of the cost model (figures and sources: bcos_clip/apps/bench/cost.py)")
    g.add_argument("--measured", default=None,
                   help="a bench JSON with measured rows to validate against (default: this run's rows on "
                        "CUDA, else benchmarks/results/h200_bench_2026-11-26.json of the repository)")
    p.set_defaults(func=run)


def _sections(args: argparse.Namespace) -> tuple:
    from bcos_clip.apps.bench.run import SECTIONS

    if args.sections is None:
        return () if (args.memory or args.model_cost) else SECTIONS
    return tuple(s.strip() for s in args.sections.split(",") if s.strip())


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.bench.run import BenchConfig, run_bench

    check_output_file(args.output)

    cfg = BenchConfig(
        device=args.device, quick=args.quick, output=args.output,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        batches=tuple(args.batches), compile_batch=args.compile_batch, compile=args.compile,
        precision=args.precision, iters=args.iters, warmup=args.warmup, explain_ks=tuple(args.explain_ks),
        sections=_sections(args),
        time_budget_s=args.time_budget, workers=args.workers, threads=args.threads,
        triton=args.triton == "on", memory=args.memory, model_cost=args.model_cost,
        device_spec=args.device_spec, measured=args.measured)
    result = run_bench(cfg)
    env = result["environment"]
    if result["rows"] or "accounting" not in result:
        print(f"# bcos-clip bench on {env['device_name']} ({env['device']}, torch {env['torch']}, "
              f"{result['precision']}), {result['elapsed_s']:.0f} s\n")
    else:
        print(f"# bcos-clip bench: accounting counted on the CPU (torch {env['torch']}), "
              f"{result['elapsed_s']:.0f} s\n")
    if result["rows"]:
        print(result["table"])
        print()
        print(result["targets_table"])
    if "accounting_table" in result:
        print(result["accounting_table"])
    if args.output:
        print(f"\nwrote {args.output}")
    return 0
