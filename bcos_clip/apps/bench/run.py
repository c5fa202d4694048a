"""`bcos-clip bench`: speed and memory of plain vs B-cos towers, explanations, zero-shot and distillation.

Every comparison is a ratio of rows measured in the same run on the same device. Rows run in order of
priority (batch-128 eager rows, then compiled towers, explanations, other batch sizes, zero-shot,
end-to-end distillation, profiles of missed targets); with a time budget, rows that would start too
late are skipped, and the JSON is rewritten after every row so that a cut-off run keeps what it has.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from bcos_clip.apps.bench import report as bench_report
from bcos_clip.apps.bench import tables as bench_tables
from bcos_clip.apps.bench.accounting import AccountingConfig, run_accounting
from bcos_clip.apps.bench.cost import DEVICE_SPECS
from bcos_clip.apps.bench.e2e import e2e_rows
from bcos_clip.apps.bench.extra import explain_rows, zeroshot_rows
from bcos_clip.apps.bench.profiling import profile_row
from bcos_clip.apps.bench.timing import Deadline, Row, guarded, skipped
from bcos_clip.apps.bench.towers import ModelSet, build_modelset, compile_variant, tower_row
from bcos_clip.nn import fused
from bcos_clip.runtime.device import pick_device

log = logging.getLogger(__name__)
SECTIONS = ("train", "infer", "compile", "explain", "zeroshot", "e2e", "profile")
EAGER_VARIANTS = ("plain", "bcos-reference", "bcos-formula", "bcos-fast")
Job = Tuple[str, float, Callable[[], List[Row]]]


@dataclass(frozen=True)
class BenchConfig:
    """What `bcos-clip bench` measures. `quick`: tiny towers, small batches, few iterations (CI)."""

    device: str = "auto"
    quick: bool = False
    output: Optional[str] = None
    models: Tuple[str, ...] = ("RN50", "ViT-B-16")
    batches: Tuple[int, ...] = (64, 128, 256)
    compile_batch: int = 128
    compile: str = "auto"  # auto: on for CUDA (full runs), off on CPU
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    iters: int = 10
    warmup: int = 3
    explain_ks: Tuple[int, ...] = (1, 16, 256)
    sections: Tuple[str, ...] = SECTIONS
    time_budget_s: float = 0.0  # 0 = no budget
    workers: int = 8  # e2e DataLoader workers
    threads: int = 0  # CPU intra-op threads during the run (0: torch's default; --quick: 1)
    triton: bool = True  # Triton kernels of the fast path on CUDA (False: its torch ops)
    memory: bool = False  # the saved-for-backward accounting (apps.bench.accounting; CPU, fake tensors)
    model_cost: bool = False  # the roofline cost model of the training step
    device_spec: str = "h200"  # the device of the cost model (apps.bench.cost.DEVICE_SPECS)
    measured: Optional[str] = None  # rows to validate the accounting against (default: this run on CUDA,
    #                                 else the repository's H200 run)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"bench: unknown sections {unknown}; known: {', '.join(SECTIONS)}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"bench: --compile must be auto, on or off, got {self.compile!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"bench: --precision must be auto, bf16 or fp32, got {self.precision!r}")
        if (self.memory or self.model_cost) and self.device_spec not in DEVICE_SPECS:
            raise ValueError(f"bench: --device-spec {self.device_spec!r}: choose one of {', '.join(DEVICE_SPECS)}")

    def resolved(self) -> "BenchConfig":
        """What runs: with ``quick``, tiny towers, one batch size of at most 4, one iteration, explanations
        with K <= 16, no DataLoader workers and 1 thread unless given (a smoke test of every row)."""
        if not self.quick:
            return self
        batch = min(self.compile_batch, 4)
        return dataclasses.replace(self, compile_batch=batch, batches=(batch,), iters=1, warmup=1,
                                   explain_ks=tuple(k for k in self.explain_ks if k <= 16) or (1,), workers=0,
                                   threads=self.threads or 1)


def environment(device: torch.device) -> Dict[str, Any]:
    try:
        import triton

        triton_version: Optional[str] = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "cpu_count": __import__("os").cpu_count()}


class Runner:
    """Runs jobs in order, records rows, rewrites the JSON after each job."""

    def __init__(self, cfg: BenchConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        self.compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda" and not cfg.quick)
        self.deadline = Deadline(cfg.time_budget_s)
        self.result: Dict[str, Any] = {"environment": environment(device), "precision": self.precision,
                                       "triton_kernels": bool(cfg.triton and device.type == "cuda"
                                                              and environment(device)["triton"]),
                                       "fast_features": list(fused.enabled_features()),
                                       "config": dataclasses.asdict(cfg), "rows": [], "profiles": {}}
        self.rows: List[Row] = self.result["rows"]

    def run_job(self, job: Job) -> None:
        name, need_s, fn = job
        if not self.deadline.allows(need_s):
            self.rows.append(skipped({"name": name}, f"time budget ({self.deadline.left():.0f} s left, "
                                                     f"needs ~{need_s:.0f} s)"))
            return
        holder: Row = {"name": name}
        with guarded(holder, self.device):
            for row in fn():
                self.rows.append(row)
                log.info("bench %s", _summary(row))
        if holder.get("status") != "ok":
            self.rows.append(holder)
        self.write()

    def write(self) -> None:
        bench_report.add_ratios(self.rows)
        self.result["targets"] = bench_report.targets(self.rows, self.cfg.compile_batch)
        if self.cfg.output:
            path = Path(self.cfg.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.result, indent=1, default=str))


def _summary(row: Row) -> str:
    keys = ("ms", "img_per_s", "peak_mem_gib", "compile_s", "status", "error", "note")
    parts = [f"{k}={row[k]:.2f}" if isinstance(row.get(k), float) else f"{k}={row[k]}" for k in keys if k in row]
    return f"{row.get('name')}: " + " ".join(parts)


def tower_jobs(r: Runner, ms: ModelSet, batch: int, variants: Tuple[str, ...], kinds: Tuple[str, ...],
               compiled: bool = False) -> List[Job]:
    cfg = r.cfg
    return [(f"{kind}/{ms.name}/{v}/b{batch}{'/compiled' if compiled else ''}", 10.0,
             lambda v=v, kind=kind: [tower_row(ms, v, kind, batch, r.precision, cfg.iters, cfg.warmup, compiled)])
            for v in variants for kind in kinds]


def compile_jobs(r: Runner, ms: ModelSet) -> List[Job]:
    jobs: List[Job] = []
    b = r.cfg.compile_batch
    for v in ("plain", "bcos-fast"):
        jobs.append((f"compile/{ms.name}/{v}", 100.0, lambda v=v: [compile_variant(ms, v, b, r.precision)]))
        jobs += [(f"{kind}/{ms.name}/{v}/b{b}/compiled", 8.0,
                  lambda v=v, kind=kind: [tower_row(ms, v, kind, b, r.precision, r.cfg.iters, r.cfg.warmup, True)]
                  if v in ms.compiled else [skipped({"name": f"{kind}/{ms.name}/{v}"}, "compile failed")])
                 for kind in ("train", "train_fwd")]
    return jobs


def plan(r: Runner, sets: List[ModelSet], workdir: Path) -> List[Job]:
    """Jobs in priority order: eager rows at compile_batch, end-to-end, the first model compiled,
    explanations, zero-shot, the other models compiled (other batch sizes come after the profiles)."""
    cfg, sec, b = r.cfg, set(r.cfg.sections), r.cfg.compile_batch
    jobs: List[Job] = []
    for ms in sets:
        if "train" in sec:
            jobs += tower_jobs(r, ms, b, EAGER_VARIANTS, ("train",)) + tower_jobs(r, ms, b, ("plain", "bcos-fast"),
                                                                                ("train_fwd",))
        if "infer" in sec:
            jobs += tower_jobs(r, ms, b, EAGER_VARIANTS + ("bcos-fast-folded",), ("infer",))
    if sets and "e2e" in sec:
        steps = 2 if cfg.quick else 10
        jobs.append((f"e2e/{sets[0].name}", 45.0, lambda: e2e_rows(sets[0], b, steps, cfg.workers, workdir)))
    if sets and "compile" in sec and r.compile:
        jobs += compile_jobs(r, sets[0])
    if sets and "explain" in sec:
        jobs.append((f"explain/{sets[0].name}", 40.0, lambda: explain_rows(sets[0], cfg.explain_ks, 3, 1)))
    if sets and "zeroshot" in sec:
        n = 16 if cfg.quick else 1024
        jobs.append((f"zeroshot/{sets[0].name}", 30.0, lambda: zeroshot_rows(sets[0], min(b, 128), n,
                                                                             "amp_bf16" if r.precision == "bf16"
                                                                             else "fp32")))
    for ms in sets[1:]:
        if "compile" in sec and r.compile:
            jobs += compile_jobs(r, ms)
    return jobs


def other_batch_jobs(r: Runner, sets: List[ModelSet]) -> List[Job]:
    """Eager rows at the batch sizes other than compile_batch (lowest priority)."""
    kinds = tuple(k for k in ("train", "infer") if k in r.cfg.sections)
    jobs: List[Job] = []
    for ms in sets:
        for batch in (x for x in r.cfg.batches if x != r.cfg.compile_batch):
            jobs += tower_jobs(r, ms, batch, ("plain", "bcos-reference", "bcos-fast"), kinds)
    return jobs


def profile_missed(r: Runner, sets: List[ModelSet]) -> None:
    """A top-ops profile of the B-cos and plain rows behind every missed tower target."""
    by_name = {ms.name: ms for ms in sets}
    for t in r.result.get("targets", []):
        model = next((m for m in by_name if t["target"].startswith(m + " ")), None)
        if model is None or t["met"] is not False or not r.deadline.allows(15.0):
            continue
        ms = by_name[model]
        compiled = "compiled" in t["target"]
        kind = "train_fwd" if t["target"].split(" ", 1)[1].startswith("forward") else "train"
        variants = ("plain", "bcos-fast") if compiled else ("bcos-reference", "bcos-fast")
        for v in variants:
            key = f"{kind}/{model}/{v}/b{r.cfg.compile_batch}{'/compiled' if compiled else ''}"
            if key in r.result["profiles"] or (compiled and v not in ms.compiled):
                continue
            holder: Row = {"name": f"profile/{key}"}
            with guarded(holder, r.device):
                r.result["profiles"][key] = profile_row(ms, v, kind, r.cfg.compile_batch, r.precision, compiled)
            if holder.get("status") != "ok":
                r.result["profiles"][key] = holder.get("error", "failed")
    r.write()


def accounting(r: Runner, t0: float) -> None:
    """The --memory / --model-cost sections (CPU), validated against this run's rows when it measured
    eager training rows on CUDA, else against --measured (default: the repository's H200 run)."""
    cfg = r.cfg
    if not r.deadline.allows(60.0 if cfg.quick else 150.0):
        r.result["accounting"] = {"status": "skipped", "note": f"time budget ({r.deadline.left():.0f} s left)"}
        return
    own = r.device.type == "cuda" and any(x.get("section") == "train" and x.get("ms") for x in r.rows)
    acfg = AccountingConfig(models=cfg.models, quick=cfg.quick, batch=16 if cfg.quick else cfg.compile_batch,
                            device_spec=cfg.device_spec, measured=cfg.measured, triton=cfg.triton)
    holder: Row = {"name": "accounting"}
    with guarded(holder, torch.device("cpu")):
        measured = {**r.result, "source": "this run"} if own and not cfg.measured else None
        r.result["accounting"] = run_accounting(acfg, cfg.memory, cfg.model_cost, measured)
        r.result["accounting_table"] = bench_tables.accounting_markdown(r.result["accounting"])
    if holder.get("status") != "ok":
        r.result["accounting"] = holder
    log.info("bench accounting done (%.0f s into the run)", time.perf_counter() - t0)
    r.write()


def run_bench(cfg: BenchConfig) -> Dict[str, Any]:
    """Run the benchmark; returns (and writes to cfg.output) the result dict with rows, targets, table."""
    cfg = cfg.resolved()
    device = pick_device(cfg.device)
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        if cfg.threads > 0:  # a loaded CI machine makes multi-threaded tiny ops crawl
            torch.set_num_threads(cfg.threads)
        torch.backends.cudnn.benchmark = device.type == "cuda"  # as training runs would (all variants)
        if device.type == "cpu":  # random-init towers produce denormals, which crawl on x86 CPUs
            torch.set_flush_denormal(True)
        with fused.fast_path(True, triton=cfg.triton):
            return _run(cfg, device)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.set_flush_denormal(False)


def _run(cfg: BenchConfig, device: torch.device) -> Dict[str, Any]:
    r = Runner(cfg, device)
    t0 = time.perf_counter()
    sets: List[ModelSet] = []
    for name in cfg.models if cfg.sections else ():  # accounting alone needs no model on the device
        holder: Row = {"name": f"build/{name}"}
        with guarded(holder, device):
            sets.append(build_modelset(name, device, cfg.quick))
        if holder.get("status") != "ok":
            r.rows.append(holder)
    with tempfile.TemporaryDirectory(prefix="bcos_bench_") as tmp:
        for job in plan(r, sets, Path(tmp)):
            r.run_job(job)
    r.write()
    if "profile" in cfg.sections and sets:
        profile_missed(r, sets)
    for job in other_batch_jobs(r, sets):
        r.run_job(job)
    if cfg.memory or cfg.model_cost:
        accounting(r, t0)
    r.result["elapsed_s"] = time.perf_counter() - t0
    r.result["table"] = bench_report.table(r.rows)
    r.result["targets_table"] = bench_report.targets_table(r.result["targets"])
    r.write()
    return r.result
