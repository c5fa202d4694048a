"""`bcos-clip explain` and `bcos-clip localize` end to end on a tiny checkpoint, and their bad input."""
import importlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import bcos_clip
from bcos_clip.apps.explain_files import ExplainFilesConfig, explain_files
from bcos_clip.cli import main
from bcos_clip.explain.prompts import prompt_embeddings

CLASSES = [f"{c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "star", "triangle")]


@pytest.fixture(scope="module")
def checkpoint(tiny_rn_bcos, tmp_path_factory):
    return str(bcos_clip.save(tiny_rn_bcos, tmp_path_factory.mktemp("ckpt") / "student"))


def _png(path, seed, size=(70, 90)):
    rng = np.random.default_rng(seed)
    a = (rng.random((*size, 3)) * 255).astype(np.uint8)
    a[10:40, 20:60] = rng.integers(0, 255, 3)
    Image.fromarray(a).save(path)
    return str(path)


def test_explain_cli_writes_pngs_and_scores(checkpoint, tmp_path, capsys):
    imgs = [_png(tmp_path / "one.png", 0), _png(tmp_path / "two.jpg", 1)]
    out = tmp_path / "out"
    argv = ["explain", "--model", checkpoint, "--image", imgs[0], "--image", imgs[1], "--prompt", "a red square",
            "--prompt", "a blue sky", "--templates", "a photo of {}.", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["prompts"] == ["a red square", "a blue sky"] and len(scores["images"]) == 2
    assert scores["completeness_max_abs_error"] < 1e-5
    assert scores["colour_smooth_px"] == 5  # the official 15 px at 224, scaled to the 64-px input
    assert all(abs(sum(i["probs"]) - 1) < 1e-5 for i in scores["images"])
    pairs = sorted(p.name for p in out.glob("0*.png"))
    assert pairs == ["00_one__00_a-red-square.png", "00_one__01_a-blue-sky.png",
                     "01_two__00_a-red-square.png", "01_two__01_a-blue-sky.png"]
    for name in pairs + ["sheet.png", "sheet_overlay.png"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.width >= 3 * 64
    assert "best prompt" in capsys.readouterr().out


def test_explain_bad_input(checkpoint, tmp_path, capsys, monkeypatch, plain_rn_model):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    base = ["explain", "--model", checkpoint, "--prompt", "a dog", "--out", str(tmp_path / "o")]
    assert main(base + ["--image", str(bad)]) == 2
    assert "broken.jpg: cannot read it as an image" in capsys.readouterr().err
    assert main(base + ["--image", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --prompt is required
        main(["explain", "--model", checkpoint, "--image", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no prompts"):
        explain_files(ExplainFilesConfig(model=checkpoint, images=(str(bad),), prompts=(), output=str(tmp_path)))
    monkeypatch.setattr(importlib.import_module("bcos_clip.apps.explain_files"), "resolve_model", lambda *a, **k: plain_rn_model)
    assert main(base + ["--image", _png(tmp_path / "ok.png", 2)]) == 2
    err = capsys.readouterr().err
    assert "B-cos model" in err and "baselines" in err and "--method gradcam" in err


@pytest.fixture(scope="module")
def plain_rn_model(tiny_rn):
    from bcos_clip.models import PlainCLIP

    return PlainCLIP.from_clip(tiny_rn[0], tiny_rn[2]).eval()


def _write_wds(root, images, labels, classnames):
    import webdataset as wds

    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nan image of a {c}.\n")
    (root / "test" / "nshards.txt").write_text("1\n")
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        for i, (img, lab) in enumerate(zip(images, labels)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            sink.write({"__key__": f"s{i:04d}", "png": buf.getvalue(), "cls": str(int(lab)).encode()})


def test_localize_cli_end_to_end(checkpoint, tiny_rn_bcos, tmp_path, monkeypatch, capsys, plain_rn_model):
    """A wds folder whose labels are the tiny (random) model's own predictions: every image is
    correct, so the game runs end to end on real B-cos explanations (threshold 0)."""
    g = torch.Generator().manual_seed(0)
    lo = torch.nn.functional.interpolate(torch.rand(160, 3, 4, 4, generator=g), size=(64, 64), mode="bilinear")
    w = torch.rand(160, 1, 1, 1, generator=g)
    imgs = ((w * lo + (1 - w) * torch.rand(160, 3, 64, 64, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)
    text = prompt_embeddings(tiny_rn_bcos, CLASSES, ["a photo of a {c}.", "an image of a {c}."], torch.device("cpu"))
    with torch.no_grad():
        pred = (tiny_rn_bcos.encode_image(imgs.float() / 255) @ text.T).argmax(-1)
    assert len(pred.unique()) >= 4, "test setup: the tiny model must predict at least 4 classes"
    root = tmp_path / "wds_tiny"
    _write_wds(root, imgs.permute(0, 2, 3, 1).numpy(), pred, CLASSES)
    out = tmp_path / "loc"
    argv = ["localize", "--model", checkpoint, "--dataset", "wds/tiny", "--dataset_root", str(root), "--output",
            str(out), "--grid", "2", "--n-grids", "3", "--threshold", "0", "--examples", "1", "--per-class", "3"]
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((out / "localization_tiny_bcos.json").read_text())
    assert res["n_grids"] == 3 and res["grid"] == 2 and res["method"] == "bcos" and 0 <= res["mean"] <= 1
    assert all(len(set(g["classes"])) == 4 for g in res["per_grid"])
    for png in (out / "histogram_tiny_bcos.png", out / "examples_tiny_bcos" / "grid_00.png"):
        with Image.open(png) as im:
            assert im.format == "PNG"
    assert "mean" in capsys.readouterr().out
    monkeypatch.setattr(importlib.import_module("bcos_clip.apps.localize"), "resolve_model",
                        lambda *a, **k: plain_rn_model)
    assert main(argv[:-10] + ["--method", "bcos"]) == 2
    assert "baselines" in capsys.readouterr().err
    missing = ["localize", "--model", checkpoint, "--dataset", "wds/tiny", "--dataset_root", str(tmp_path / "nowhere"),
               "--output", str(out), "--method", "gradcam"]
    assert main(missing) == 2
    assert "not found" in capsys.readouterr().err
