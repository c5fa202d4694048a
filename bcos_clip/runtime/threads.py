"""Torch CPU threads: one rule for every command that sets them.

- The thread count is torch's default (one intra-op thread per physical core, or ``OMP_NUM_THREADS``)
  unless the user asks for another (``--threads N``); it is never guessed from how busy the cores look
  at the start, since a moment's load then decides a run of many minutes (issue 15: ``demo --quick`` on
  1 thread, 311 s instead of ~110 s).
- OpenMP threads that wait for each other wait passively (``OMP_WAIT_POLICY=PASSIVE``, set by the CLI
  at start-up unless the user set it). With the runtime's default (spinning), a thread that spins holds
  a core that its partner, descheduled by another process, needs. The policy is read when torch loads
  its OpenMP runtime, so it has to be set before ``import torch``.

Measured on this project's 2-core VM shared with other developers (its cores ~2.0 busy before every run,
so never idle), 20 steps of the quick demo's distillation, s/step of the last 10 steps, two passes
(``benchmarks/bench_demo_threads.py``, 2026-12-01)::

                                  1 thread      2 threads, passive   2 threads, spinning
    no extra load                 0.81 / 0.62   0.93 / 0.71          2.64 / 1.88
    + one core kept busy          1.36 / 1.62   0.85 / 1.71          10.16 / > 12 (stopped at 240 s)

and the quick demo at load ~11: 31 s per distillation step with 2 spinning threads, 2.6 s with 2 passive
ones. So 2 passive threads cost at most ~15 % against 1 thread on a fully loaded machine, while on an idle
one 2 threads are ~1.6x faster (README: the full demo 9.8 min with 2 threads, 15.8 min with 1): torch's
default count with passive waiting, whatever the load at the start.

Example (the first lines of a command-line program)::

    prefer_passive_waiting()     # before anything imports torch
    ...
    set_threads(args.threads)    # None: torch's default
"""
from __future__ import annotations

import os
import sys
from typing import Optional

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; it takes effect only if torch is not
    imported yet. Returns whether the policy in effect for this process's torch is passive."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"


def wait_policy() -> str:
    """The OpenMP wait policy of this process ("PASSIVE", "ACTIVE" or "default")."""
    return os.environ.get(WAIT_POLICY, "").strip().upper() or "default"


def set_threads(threads: Optional[int]) -> int:
    """Set torch's intra-op threads to ``threads`` (None: leave torch's default, whatever else runs on the
    machine at this moment); returns the count in use."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


__all__ = ["WAIT_POLICY", "prefer_passive_waiting", "set_threads", "wait_policy"]
