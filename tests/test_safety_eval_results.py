"""Nothing partial, nothing lost in evaluation: a CLIP_benchmark test shard cut short fails its row (with
the count read before the cut) instead of scoring the samples before the cut, `report` shows the failed
row, and an evaluation results folder survives failing and repeated runs."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from bcos_clip.cli import main
from bcos_clip.data.readers.tar_complete import TruncatedShardError, tar_sample_count
from tests.test_eval_data import image_bytes, write_classification, write_split
from tests.test_safety_run_folder import snapshot

RESULT = "toy__student__zeroshot_classification.json"


def cut(shard: Path, sample: int, where: str) -> None:
    """Cut ``shard`` at sample ``sample``: before its header ("boundary"), inside the header or its data."""
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers()][2 * sample]  # two members (image, .cls) per sample
    at = {"boundary": member.offset, "header": member.offset + 100, "data": member.offset_data + 10}[where]
    shard.write_bytes(shard.read_bytes()[:at])


@pytest.fixture(scope="module")
def student(tiny_vit_bcos, tmp_path_factory):
    import bcos_clip

    return str(bcos_clip.save(tiny_vit_bcos, tmp_path_factory.mktemp("ckpt") / "student"))


def _eval(student, root, out, *extra) -> int:
    return main(["--log-level", "ERROR", "eval", "--model", student, "--dataset", "wds/toy", "--dataset_root",
                 str(root), "--output", str(out), "--batch-size", "8", *extra])


@pytest.mark.parametrize("where", ["boundary", "header", "data"])
def test_a_shard_cut_short_fails_the_row_with_the_count(student, tmp_path, where, capsys):
    root = tmp_path / "toy"
    write_classification(root, n_test=8, n_train=4)
    shutil.rmtree(root / "test")  # one test shard of 8 samples, as CLIP_benchmark writes small splits
    write_split(root, "test", [[("webp", image_bytes(i % 6, i)), ("cls", str(i % 6).encode())] for i in range(8)],
                per_shard=8)
    assert tar_sample_count(root / "test" / "0.tar") == 8
    cut(root / "test" / "0.tar", 5, where)
    with pytest.raises(TruncatedShardError, match="after 5 whole samples"):
        tar_sample_count(root / "test" / "0.tar")
    out = tmp_path / "results"
    assert _eval(student, root, out) == 1
    record = json.loads((out / RESULT).read_text())
    assert record["status"] == "failed" and record["metrics"] == {}
    assert "0.tar: cut short" in record["error"] and "after 5 whole samples" in record["error"]
    assert "FAILED" in capsys.readouterr().out
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "failed" in report and "cut short" in report


def test_a_results_folder_survives_failing_and_repeated_runs(student, tmp_path, capsys):
    root = tmp_path / "toy"
    write_classification(root, n_test=8, n_train=4)
    out = tmp_path / "results"
    assert _eval(student, root, out) == 0
    (out / "notes.md").write_text("my reading of these numbers\n")
    (out / "other__model__zeroshot_classification.json").write_text('{"dataset": "other"}\n')
    before = snapshot(out)
    good = json.loads((out / RESULT).read_text())
    assert good["status"] == "ok"

    shard = root / "test" / "0.tar"
    whole = shard.read_bytes()
    cut(shard, 2, "boundary")  # the data went bad since: the run fails, the earlier number stays
    capsys.readouterr()
    assert _eval(student, root, out) == 1
    assert "kept the earlier result" in capsys.readouterr().out
    assert snapshot(out) == before
    assert _eval(student, str(tmp_path / "nowhere"), out) == 1  # the dataset vanished: same
    assert snapshot(out) == before
    assert _eval(student, root, out / "notes.md") == 2  # --output is a file: refused before any work
    assert snapshot(out) == before

    shard.write_bytes(whole)  # a repeated, successful run: the same row is rewritten, nothing else
    assert _eval(student, root, out) == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != RESULT and not k.startswith("cache")} == \
        {k: v for k, v in before.items() if k != RESULT and not k.startswith("cache")}
    again = json.loads((out / RESULT).read_text())
    assert again["status"] == "ok" and again["metrics"] == good["metrics"]
