"""Degenerate image embeddings (zero / non-finite) are refused with one line by explain, eval, localize,
the trainer's zero-shot check and serve; never NaN in a JSON file.

The degenerate model is the one users meet: open_clip's random RN init B-cosified at B = 2 without
refitting the BatchNorm statistics; every layer shrinks by its cosine factor and the embedding
underflows to exactly 0.
"""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.models.embedding_check import (DegenerateEmbeddingError, EmbeddingWatch, check_image_embeddings,
                                              degenerate_rows)
from tests._train_data import write_img2dataset, write_tiny_teacher, write_wds_classification
from tests.conftest import TINY_RN


@pytest.fixture(scope="module")
def raw_rn():
    """open_clip's own random init of the tiny RN (not made B-cos friendly)."""
    torch.manual_seed(0)
    return bcos_clip.load_clip("RN50", **TINY_RN)[0]


@pytest.fixture(scope="module")
def zero_model(raw_rn):
    model = bcosify_eval(raw_rn)
    with torch.no_grad():
        assert torch.count_nonzero(model.encode_image(torch.rand(2, 3, 64, 64))) == 0, "setup: a zero embedding"
    return model


def bcosify_eval(clip):
    return bcos_clip.bcosify(clip, b=2.0, bias=False).eval()


@pytest.fixture(scope="module")
def zero_ckpt(zero_model, tmp_path_factory):
    return str(bcos_clip.save(zero_model, tmp_path_factory.mktemp("zero") / "ckpt"))


@pytest.fixture(scope="module")
def nan_ckpt(tiny_rn_bcos, tmp_path_factory):
    broken = copy.deepcopy(tiny_rn_bcos)
    with torch.no_grad():
        broken.visual.attnpool.c_proj.weight[0, 0] = float("nan")
    return str(bcos_clip.save(broken, tmp_path_factory.mktemp("nan") / "ckpt"))


@pytest.fixture(scope="module")
def wds_root(tmp_path_factory):
    return write_wds_classification(tmp_path_factory.mktemp("wds") / "tiny", n=6)


def _png(path) -> str:
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(path)
    return str(path)


def _one_line(err: str) -> str:
    """The one error line (progress bars aside), and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("bcos-clip")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_check_counts_zero_and_nonfinite_rows():
    emb = torch.randn(5, 8)
    emb[1] = 0
    emb[3, 2] = float("inf")
    zero, bad = degenerate_rows(emb)
    assert zero.tolist() == [False, True, False, False, False] and bad.tolist() == [False] * 3 + [True, False]
    with pytest.raises(DegenerateEmbeddingError, match=r"model m: the image embedding is zero for 1 of 5 images and "
                                                       r"non-finite for 1 of 5 images \(here\)"):
        check_image_embeddings(emb, "m", "here")
    assert degenerate_rows(torch.full((1, 4), 1e-30))[0].item()  # the fp32 norm underflows: zero
    watch = EmbeddingWatch("m")
    watch(torch.ones(3, 4))
    with pytest.raises(DegenerateEmbeddingError, match="zero for 2 of 5 images"):
        watch(torch.zeros(2, 4))
    assert check_image_embeddings(torch.ones(2, 3), "m").shape == (2, 3)


def test_explain_cli_refuses_a_zero_embedding_without_writing(zero_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["explain", "--model", zero_ckpt, "--image", _png(tmp_path / "a.png"), "--prompt", "a dog",
               "--output", str(out), "--device", "cpu"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and zero_ckpt in line and "zero for 1 of 1 images" in line and "recalibrate_batchnorm" in line
    assert not (out / "scores.json").exists() and not list(out.glob("*.png"))  # no NaN file, no black panel


def test_explain_library_refuses_nonfinite(nan_ckpt, tmp_path):
    with pytest.raises(DegenerateEmbeddingError, match="non-finite for 2 of 2 images"):
        bcos_clip.explain(bcos_clip.load(nan_ckpt), torch.rand(2, 3, 64, 64), ["a dog"])


def test_eval_cli_refuses_instead_of_chance_accuracy(zero_ckpt, wds_root, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["eval", "--model", zero_ckpt, "--dataset", "wds/tiny", "--dataset_root", wds_root,
               "--output", str(out), "--batch-size", "4"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "zero for 4 of 4 images" in line and zero_ckpt in line and "tiny/test" in line
    assert not [p for p in out.rglob("*.json") if json.loads(p.read_text()).get("status") == "ok"]


def test_localize_cli_refuses(zero_ckpt, wds_root, tmp_path, capsys):
    rc = main(["localize", "--model", zero_ckpt, "--dataset", "wds/tiny", "--dataset_root", wds_root,
               "--output", str(tmp_path / "loc"), "--grid", "2", "--n-grids", "1", "--threshold", "0"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "zero for 6 of 6 images" in line and zero_ckpt in line


def test_trainer_zeroshot_check_stops_the_run(raw_rn, tmp_path, capsys):
    """A student distilled from a raw (open_clip init) teacher: in train mode the batch statistics keep
    it alive, in eval mode (the zero-shot check) its embedding is 0."""
    teacher = write_tiny_teacher(tmp_path / "teacher", model=raw_rn)
    data = write_img2dataset(tmp_path / "cc3m", n_shards=1, per_shard=8)
    wds = write_wds_classification(tmp_path / "check", n=4)
    rc = main(["train", "--model", teacher[0], "--pretrained", teacher[1], "--train-data", data,
               "--output", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4", "--workers", "0",
               "--lr", "1e-9", "--zeroshot-data", wds, "--zeroshot-every", "1", "--zeroshot-samples", "4"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "zero for 4 of 4 images" in line and "zero-shot check at step 1" in line, line
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or "zeroshot_top1" not in metrics.read_text()


def test_serve_answers_422_through_the_same_check(zero_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from bcos_clip.apps.serve.api import create_app
    from bcos_clip.apps.serve.engine import ExplainEngine
    from bcos_clip.apps.serve.methods import BcosMethod, BcosPromptsMethod

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(buf, format="PNG")
    for method in (BcosMethod(zero_model), BcosPromptsMethod(zero_model)):
        with TestClient(create_app(ExplainEngine([method]))) as c:
            r = c.post("/explain", files={"image": ("a.png", buf.getvalue(), "image/png")},
                       data={"prompts": "a red circle"})
        assert r.status_code == 422 and "embedding is zero" in r.json()["detail"], r.text


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a JSON file")
    return json.loads(text, parse_constant=refuse)


def test_json_files_never_hold_nan(tiny_rn_bcos, tmp_path):
    from safetensors import safe_open

    from bcos_clip.evaluation.linear_probe import save_probe

    head = save_probe(torch.nn.Linear(4, 2), tmp_path / "p.safetensors", ["a", "b"], {"tried": {"1e-6": float("nan")}})
    with safe_open(str(head), "pt") as f:
        assert _strict(f.metadata()["info"]) == {"tried": {"1e-6": None}}
    with pytest.raises(ValueError, match=r"config.json 'extra': runs.1.loss is not a finite number"):
        bcos_clip.save(tiny_rn_bcos, tmp_path / "ckpt", extra={"runs": [{"loss": 1.0}, {"loss": float("nan")}]})
    assert not (tmp_path / "ckpt").exists()  # refused before anything is written
    from bcos_clip.train import TrainConfig

    cfg = TrainConfig(model="RN50", train_data="x", output=str(tmp_path), steps=1)
    object.__setattr__(cfg, "siglip_bias", float("-inf"))  # past any validation: the writer itself refuses
    with pytest.raises(ValueError, match="siglip_bias is not a finite number"):
        cfg.save_json(tmp_path)
    assert not (tmp_path / "train_config.json").exists()


def _eval_rank(rank: int, ckpt: str, root: str, init: str) -> None:
    import torch.distributed as dist

    from bcos_clip.evaluation.suite import run_suite
    from bcos_clip.evaluation.suite_files import Suite, SuiteEntry
    from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        suite = Suite("t", (SuiteEntry("toy", "zeroshot_classification"), SuiteEntry("toy", "linear_probe")))
        with pytest.raises(DegenerateEmbeddingError, match=r"rank \d: DegenerateEmbeddingError: model .*zero for"):
            run_suite(suite, EvalConfig(output=root + "_out", dataset_root=root, batch_size=4),
                      [ModelHandle(bcos_clip.load(ckpt), "zero")], groups={})
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_stops_on_a_degenerate_model(zero_ckpt, tmp_path):
    """torchrun-style: each rank finds the zero embeddings in its shards; all ranks stop in step (no rank
    waits alone in a collective) with the degenerate error, not a failed row."""
    import torch.multiprocessing as mp

    from tests.test_eval_data import write_classification

    write_classification(tmp_path / "toy", n_test=12, n_train=4)
    mp.spawn(_eval_rank, args=(zero_ckpt, str(tmp_path / "toy"), f"file://{tmp_path / 'pg'}"), nprocs=2, join=True)
    assert not list((tmp_path / "toy_out").rglob("*.json"))  # no result row, not even a failed one
