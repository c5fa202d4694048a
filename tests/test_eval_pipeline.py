"""Zero-shot classification / retrieval and linear probe with tiny models, end to end; every metric is
checked against a value computed here from embeddings of the same images (plain loops in
test_eval_metrics' references). Also caches, suites with failed rows, the CLI and torchrun-style
sharding (a gloo group of 2 processes)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from bcos_clip.evaluation.suite import run_suite
from bcos_clip.evaluation.suite_files import Suite, SuiteEntry
from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle, evaluate
from tests.test_eval_data import (CLASSNAMES, TEMPLATES, image_bytes, write_classification, write_folder,
                                  write_hf, write_multilabel, write_retrieval, write_split)
from tests.test_eval_metrics import ref_classification, ref_map, ref_retrieval


@pytest.fixture(scope="module")
def plain(tiny_vit):
    from bcos_clip.models import PlainCLIP

    model, _, tokenizer = tiny_vit
    return PlainCLIP.from_clip(model, tokenizer).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    return {"root": root, "toy": write_classification(root / "toy", ext="webp"),
            "toyjpg": write_classification(root / "toyjpg", ext="jpg", seed=7),
            "ml": write_multilabel(root / "ml"), "ret": write_retrieval(root / "ret")}


def shard_images(folder: Path, ext: str):
    """Decode every image of ``folder``'s tar shards in order, independently of the readers."""
    import tarfile

    n = int((folder / "nshards.txt").read_text())
    out = []
    for s in range(n):
        with tarfile.open(folder / f"{s}.tar") as tar:
            for m in tar.getmembers():
                if m.name.endswith("." + ext):
                    out.append(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
    return out


@torch.no_grad()
def embed_images(model, images) -> np.ndarray:
    x = torch.stack([model.preprocess(im) for im in images])
    return F.normalize(model.encode_image(x).float(), dim=-1).numpy()


@torch.no_grad()
def embed_class(model, name: str, templates) -> np.ndarray:
    prompts = [t.replace("{c}", name) for t in templates]
    e = F.normalize(model.encode_text(model.tokenizer(prompts)).float(), dim=-1).mean(0)
    return (e / e.norm()).numpy()


def cfg_for(tmp_path, data, **kw) -> EvalConfig:
    return EvalConfig(output=str(tmp_path / "out"), dataset_root=str(data["root"] / "{dataset}"),
                      batch_size=7, **kw)


def check_close(got: dict, ref: dict) -> None:
    for k, v in ref.items():
        assert (got[k] is None) == (v is None), k
        if v is not None:
            assert got[k] == pytest.approx(v, abs=1e-9), k


@pytest.mark.parametrize("name,ext", [("toy", "webp"), ("toyjpg", "jpg")])
def test_zeroshot_classification_matches_reference(plain, data, tmp_path, name, ext):
    rec = evaluate(ModelHandle(plain, "tiny-vit"), f"wds/{name}", "zeroshot_classification", cfg_for(tmp_path, data))
    img = embed_images(plain, shard_images(data["root"] / name / "test", ext))
    W = np.stack([embed_class(plain, c, TEMPLATES) for c in CLASSNAMES], axis=1)
    check_close(rec["metrics"], ref_classification(100 * img @ W, np.array(data[name])))
    assert rec["n_samples"] == len(data[name]) and rec["n_templates"] == 2 and rec["status"] == "ok"
    (cached,) = (tmp_path / "out" / "cache" / "classifiers").glob("*.pt")
    assert np.allclose(torch.load(cached).numpy(), W, atol=1e-5)  # the classifier itself


def test_multilabel_map_and_retrieval_match_reference(tiny_vit_bcos, data, tmp_path):
    model = tiny_vit_bcos
    cfg = cfg_for(tmp_path, data)
    rec = evaluate(ModelHandle(model, "bcos"), "wds/ml", "zeroshot_classification", cfg)
    img = embed_images(model, shard_images(data["root"] / "ml" / "test", "png"))
    W = np.stack([embed_class(model, c, ["a photo of a {c}."]) for c in CLASSNAMES[:4]], axis=1)
    assert rec["metrics"]["mean_average_precision"] == pytest.approx(ref_map(100 * img @ W, data["ml"]), abs=1e-6)
    rec = evaluate(ModelHandle(model, "bcos"), "wds/ret", "zeroshot_retrieval", cfg)
    img = embed_images(model, shard_images(data["root"] / "ret" / "test", "jpg"))
    texts = [c for caps in data["ret"] for c in caps]
    with torch.no_grad():
        txt = F.normalize(model.encode_text(model.tokenizer(texts)).float(), dim=-1).numpy()
    t2i = [i for i, caps in enumerate(data["ret"]) for _ in caps]
    for k in (1, 5, 10):
        ir, tr = ref_retrieval(img, txt, t2i, k)
        assert rec["metrics"][f"image_retrieval_recall@{k}"] == pytest.approx(ir)
        assert rec["metrics"][f"text_retrieval_recall@{k}"] == pytest.approx(tr)
    assert rec["metrics"]["image_retrieval_recall@10"] == 1.0  # 8 images: top-10 holds them all


def test_linear_probe_head_and_feature_cache(plain, data, tmp_path):
    cfg = cfg_for(tmp_path, data)
    rec = evaluate(ModelHandle(plain, "tiny-vit"), "wds/toy", "linear_probe", cfg)
    head = load_file(rec["probe_head"])
    img = embed_images(plain, shard_images(data["root"] / "toy" / "test", "webp"))
    logits = img @ head["weight"].numpy().T + head["bias"].numpy()
    ref = ref_classification(logits, np.array(data["toy"]))
    check_close({k: rec["metrics"]["lp_" + k] for k in ref}, ref)
    cached = sorted((tmp_path / "out" / "cache" / "features").rglob("*.pt"))
    assert [p.name for p in cached] == ["test.pt", "train.pt"]
    stamp = [p.stat().st_mtime_ns for p in cached]
    again = evaluate(ModelHandle(plain, "tiny-vit"), "wds/toy", "linear_probe", cfg)
    assert again["metrics"] == rec["metrics"] and [p.stat().st_mtime_ns for p in cached] == stamp


def test_classifier_cache_reused_and_rebuilt_on_new_templates(plain, data, tmp_path, monkeypatch):
    root = tmp_path / "wds"
    write_classification(root / "toy", n_test=12, n_train=6)
    cfg = EvalConfig(output=str(tmp_path / "out"), dataset_root=str(root / "{dataset}"))
    first = evaluate(ModelHandle(plain, "m"), "toy", "zeroshot_classification", cfg)
    cache = tmp_path / "out" / "cache" / "classifiers"
    assert len(list(cache.glob("*.pt"))) == 1
    import bcos_clip.evaluation.classifier as clf

    def no_rebuild(*a, **k):
        raise AssertionError("classifier rebuilt although cached")

    monkeypatch.setattr(clf, "build_classifier", no_rebuild)
    second = evaluate(ModelHandle(plain, "m"), "toy", "zeroshot_classification", cfg)
    assert second["metrics"] == first["metrics"]
    monkeypatch.undo()
    (root / "toy" / "zeroshot_classification_templates.txt").write_text("itap of a {}.\n")
    third = evaluate(ModelHandle(plain, "m"), "toy", "zeroshot_classification", cfg)
    assert len(list(cache.glob("*.pt"))) == 2 and third["templates_digest"] != first["templates_digest"]


def test_hf_and_image_folder_through_the_same_path(plain, tmp_path):
    labels = write_hf(tmp_path / "hfset")
    cfg = EvalConfig(output=str(tmp_path / "out"))
    rec = evaluate(ModelHandle(plain, "m"), f"hf:{tmp_path / 'hfset'}", "zeroshot_classification", cfg)
    import datasets

    imgs = list(datasets.load_from_disk(str(tmp_path / "hfset"))["test"]["image"])
    W = np.stack([embed_class(plain, c, ["a photo of a {c}.", "a picture of a {c}.", "an image of a {c}."])
                  for c in CLASSNAMES], axis=1)
    check_close(rec["metrics"], ref_classification(100 * embed_images(plain, [i.convert("RGB") for i in imgs]) @ W,
                                                   np.array(labels)))
    write_folder(tmp_path / "imgs")
    rec = evaluate(ModelHandle(plain, "m"), f"folder:{tmp_path / 'imgs'}", "linear_probe", cfg)
    assert rec["dataset"] == f"folder:{tmp_path / 'imgs'}" and rec["n_samples"] == 12 and rec["probe"]["n_train"] == 12


def test_suite_goes_on_past_broken_datasets_and_skips_existing(plain, data, tmp_path):
    root = tmp_path / "wds"
    write_classification(root / "good", n_test=6, n_train=6)
    write_classification(root / "corrupt", n_test=6, n_train=6)
    write_split(root / "corrupt", "test", [[("webp", b"garbage"), ("cls", b"1")]])
    write_classification(root / "noshards", n_test=6, n_train=6)
    (root / "noshards" / "test" / "nshards.txt").unlink()
    write_classification(root / "fewnames", n_test=6, n_train=6, classnames=CLASSNAMES[:2])
    suite = Suite("t", tuple(SuiteEntry(d, "zeroshot_classification") for d in
                             ("good", "missing", "corrupt", "noshards", "fewnames", "tfds:x")))
    cfg = EvalConfig(output=str(tmp_path / "out"), dataset_root=str(root / "{dataset}"), workers=1)
    recs = run_suite(suite, cfg, [ModelHandle(plain, "m")], groups={})
    status = {r["dataset"]: (r["status"], r.get("error", "")) for r in recs}
    assert status["good"][0] == "ok"
    assert "not found" in status["missing"][1] and "corrupt image" in status["corrupt"][1]
    assert "nshards.txt" in status["noshards"][1] and "lists only 2 classes" in status["fewnames"][1]
    assert "unknown dataset" in status["tfds:x"][1]
    assert all("\n" not in e for _, e in status.values())
    good = tmp_path / "out" / "good__m__zeroshot_classification.json"
    stamp = good.stat().st_mtime_ns
    again = run_suite(suite, EvalConfig(**{**cfg.__dict__, "skip_existing": True}), [ModelHandle(plain, "m")],
                      groups={})
    assert good.stat().st_mtime_ns == stamp and len(again) == 5  # failed rows are retried


def test_cli_eval_and_report(tiny_vit_bcos, data, tmp_path, capsys):
    import bcos_clip
    from bcos_clip.cli import main

    ckpt = bcos_clip.save(tiny_vit_bcos, tmp_path / "student")
    out, rep = tmp_path / "res", tmp_path / "rep"
    rc = main(["eval", "--model", str(ckpt), "--dataset", "wds/toy", "--dataset", "wds/missing",
               "--dataset-root", str(data["root"] / "{dataset}"), "--task", "zeroshot-classification",
               "--task", "linear_probe", "--out", str(out), "--batch-size", "16", "--fewshot_epochs", "2"])
    assert rc == 1  # the missing dataset failed; the others ran
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["missing__student__linear_probe.json", "missing__student__zeroshot_classification.json",
                     "toy__student__linear_probe.json", "toy__student__zeroshot_classification.json"]
    assert json.loads((out / files[3]).read_text())["is_bcos"] is True
    assert main(["report", str(out), "--out", str(rep)]) == 0
    assert "| other | toy |" in (rep / "report.md").read_text() and (rep / "group_means.png").is_file()
    assert main(["eval", "--model", str(ckpt), "--out", str(out)]) == 2  # neither --dataset nor --suite
    assert "--dataset" in capsys.readouterr().err


def test_teacher_and_student_share_the_text_digest(plain, tiny_vit_bcos):
    from bcos_clip.runtime.hashing import model_digest, text_tower_digest

    assert text_tower_digest(plain) == text_tower_digest(tiny_vit_bcos)  # one classifier cache for both
    assert model_digest(plain) != model_digest(tiny_vit_bcos)  # separate feature caches
