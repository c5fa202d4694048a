"""torchrun-style evaluation: a gloo group of 2 processes splits the shards, rank 0 gathers and
writes; the numbers equal a single-process run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_eval_data import write_classification, write_split


def _worker(rank: int, ckpt: str, data_root: str, out: str, init: str) -> None:
    import torch.distributed as dist

    import bcos_clip
    from bcos_clip.runtime.distributed import rank_world
    from bcos_clip.evaluation.suite import run_suite
    from bcos_clip.evaluation.suite_files import Suite, SuiteEntry
    from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle, evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        assert rank_world() == (rank, 2)
        cfg = EvalConfig(output=out, dataset_root=data_root, batch_size=4)
        handle = ModelHandle(bcos_clip.load(ckpt), "student")
        for task in ("zeroshot_classification", "linear_probe"):
            rec = evaluate(handle, "wds/toy", task, cfg)
            assert (rec is None) == (rank != 0)
        # a shard only rank 1 reads is corrupt: both ranks fail that row in step and go on
        suite = Suite("t", (SuiteEntry("bad", "zeroshot_classification"), SuiteEntry("toy", "zeroshot_retrieval"),
                            SuiteEntry("toy", "zeroshot_classification")))
        recs = run_suite(suite, EvalConfig(output=out + "_suite", dataset_root=str(Path(data_root).parent / "{dataset}"),
                                           batch_size=4), [handle], groups={})
        if rank == 0:
            assert [r["status"] for r in recs] == ["failed", "failed", "ok"]
            assert "rank 1" in recs[0]["error"] and "corrupt image" in recs[0]["error"]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_process(tiny_vit_bcos, tmp_path):
    import bcos_clip
    from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle, evaluate

    write_classification(tmp_path / "toy", n_test=23, n_train=20)  # 5 and 4 shards
    write_classification(tmp_path / "bad", n_test=10, n_train=5)  # 2 test shards; rank 1 reads 1.tar
    write_split(tmp_path / "bad1", "test", [[("webp", b"garbage"), ("cls", b"0")]])
    (tmp_path / "bad" / "test" / "1.tar").write_bytes((tmp_path / "bad1" / "test" / "0.tar").read_bytes())
    ckpt = str(bcos_clip.save(tiny_vit_bcos, tmp_path / "student"))
    single = tmp_path / "single"
    for task in ("zeroshot_classification", "linear_probe"):
        evaluate(ModelHandle(bcos_clip.load(ckpt), "student"), "wds/toy", task,
                 EvalConfig(output=str(single), dataset_root=str(tmp_path / "toy"), batch_size=4))
    dist_out = tmp_path / "dist"
    mp.spawn(_worker, args=(ckpt, str(tmp_path / "toy"), str(dist_out), f"file://{tmp_path / 'pg'}"),
             nprocs=2, join=True)
    for task in ("zeroshot_classification", "linear_probe"):
        name = f"toy__student__{task}.json"
        a, b = (json.loads((d / name).read_text()) for d in (single, dist_out))
        assert b["world_size"] == 2 and b["n_samples"] == a["n_samples"] == 23
        for k, v in a["metrics"].items():
            assert b["metrics"][k] == pytest.approx(v, abs=1e-6), (task, k)
