"""Torch CPU threads: one rule for every command that sets them.

- The thread count is torch's default (one intra-op thread per physical core, or ``OMP_NUM_THREADS``)
  unless the user asks for another (``--threads N``); it is never guessed from how busy the cores look
  at the start, since a moment's load then decides a run of many minutes (issue 15: ``demo --quick`` on
  1 thread, 311 s instead of ~110 s).
- OpenMP threads that wait for each other wait passively (``OMP_WAIT_POLICY=PASSIVE``, set by the CLI
  at start-up unless the user set it). With the runtime's default (spinning), a thread that spins holds
  a core that its partner, descheduled by another process, needs: on this project's shared 2-core
  machine at load ~11 a demo distillation step took 31 s with 2 spinning threads and 2.6 s with 2
  passive ones (1 thread: about the same as passive); ``benchmarks/bench_demo_threads.py`` measures it.
  The policy is read when torch loads its OpenMP runtime, so it has to be set before ``import torch``.

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
