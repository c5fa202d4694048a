"""End to end through the CLI in subprocesses: torchrun DDP on 2 CPU processes (gloo), and resume
after SIGKILL reproducing the uninterrupted run's later losses."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bcos_clip
from bcos_clip.runtime.runfiles import read_metrics
from tests._train_data import losses_by_step, subprocess_env, write_img2dataset, write_tiny_teacher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_files(tiny_rn, tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher"), model=tiny_rn[0])


def _train_argv(teacher_files, data, output, *extra):
    return ["-m", "bcos_clip.cli", "--log-level", "WARNING", "train", "--model", teacher_files[0],
            "--pretrained", teacher_files[1], "--train-data", data, "--output", str(output),
            "--batch-size", "4", "--log-every", "1", "--lr", "1e-3", "--seed", "1", *extra]


def test_torchrun_ddp_two_cpu_ranks(teacher_files, tmp_path):
    data = write_img2dataset(tmp_path / "data", n_shards=5, per_shard=6)  # 3 + 2 shards per rank
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_train_argv(teacher_files, data, out, "--epochs", "2", "--workers", "2", "--loss", "cosine",
                        "--save-every", "3", "--device", "cpu")]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    ranks = summary["ranks"]
    assert summary["plan"]["steps_per_epoch"] == 4 and summary["plan"]["world_size"] == 2
    assert [r["steps"] for r in ranks] == [8, 8]
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]  # identical weights on both ranks
    shards0, shards1 = set(ranks[0]["shards"]), set(ranks[1]["shards"])
    assert shards0 and shards1 and not shards0 & shards1 and len(shards0 | shards1) == 5
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))
    assert (out / "checkpoints" / "latest").resolve().name == "step_00000008"
    bcos_clip.load(out / "checkpoints" / "latest")


def test_resume_after_sigkill_reproduces_the_later_losses(teacher_files, tmp_path):
    data = write_img2dataset(tmp_path / "data", n_shards=3, per_shard=8)
    args = ("--steps", "12", "--save-every", "3", "--workers", "0", "--loss", "text_kd")
    ref = tmp_path / "uninterrupted"
    proc = subprocess.run([sys.executable, *_train_argv(teacher_files, data, ref, *args)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, *_train_argv(teacher_files, data, out, *args)],
                              env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    resumed_at = int(latest.resolve().name.split("_")[1])
    assert resumed_at < 12

    proc = subprocess.run([sys.executable, *_train_argv(teacher_files, data, out, *args, "--resume", "latest")],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, got = losses_by_step(read_metrics(ref)), losses_by_step(read_metrics(out))
    assert sorted(got) == list(range(1, 13))  # the killed run's extra records were replaced
    later = [s for s in expected if s > resumed_at]
    assert later and max(abs(got[s] - expected[s]) for s in later) < 1e-5
