"""Paths stay inside: a checkpoint's tokenizer files resolve only inside the checkpoint (no `..`, absolute
path or link leading out; a hub name only when asked), `export` copies and `serve --examples` serves
regular files inside their folder only."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.runtime.contained import OutsideFolderError

SECRET = "secret outside the folder\n"


@pytest.fixture(scope="module")
def ckpt(tiny_rn_bcos, tmp_path_factory):
    return bcos_clip.save(tiny_rn_bcos, tmp_path_factory.mktemp("ckpt") / "student")


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "secret.txt"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _copy(ckpt: Path, dest: Path) -> Path:
    shutil.copytree(ckpt, dest, symlinks=True)
    return dest


def _edit_config(directory: Path, text_cfg=None, tokenizer=None) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["model_cfg"]["text_cfg"].update(text_cfg or {})
    config["tokenizer"].update(tokenizer or {})
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture
def tokenizer_folder(tmp_path):
    """A transformers tokenizer folder (open_clip's BPE), as a checkpoint would bundle it."""
    pytest.importorskip("transformers")
    from tests.test_interop_hf import _bpe_tokenizer

    folder = tmp_path / "tok"
    _bpe_tokenizer(folder)
    return folder


@pytest.fixture
def no_hub(monkeypatch):
    """Every HFTokenizer construction is recorded (and needs no network)."""
    import open_clip.tokenizer

    calls = []

    def fake(name, *args, **kwargs):
        calls.append(name)
        return open_clip.tokenizer.SimpleTokenizer(context_length=kwargs.get("context_length", 77))

    monkeypatch.setattr(open_clip.tokenizer, "HFTokenizer", fake)
    return calls


@pytest.mark.parametrize("files", ["../../outside_tok", "ABSOLUTE"])
def test_tokenizer_files_outside_the_checkpoint_are_refused(ckpt, tmp_path, tokenizer_folder, files):
    d = _copy(ckpt, tmp_path / "run" / "ckpt")
    outside = tmp_path / "outside_tok"
    shutil.copytree(tokenizer_folder, outside)
    name = str(outside) if files == "ABSOLUTE" else files
    _edit_config(d, {"hf_tokenizer_name": "tokenizer"}, {"files": name})
    with pytest.raises(OutsideFolderError, match="outside the checkpoint"):
        bcos_clip.load(d)


def test_a_link_in_the_bundled_tokenizer_leading_out_is_refused(ckpt, tmp_path, tokenizer_folder, secret):
    d = _copy(ckpt, tmp_path / "ckpt")
    shutil.copytree(tokenizer_folder, d / "tokenizer")
    _edit_config(d, {"hf_tokenizer_name": "tokenizer"}, {"files": "tokenizer"})
    assert bcos_clip.load(d) is not None  # the bundled tokenizer, inside: fine
    (d / "tokenizer" / "merges.txt").unlink()
    (d / "tokenizer" / "merges.txt").symlink_to(secret)
    with pytest.raises(OutsideFolderError, match="points outside the folder"):
        bcos_clip.load(d)


def test_a_hub_tokenizer_name_is_used_only_when_asked(ckpt, tmp_path, no_hub, capsys):
    d = _copy(ckpt, tmp_path / "ckpt")
    _edit_config(d, {"hf_tokenizer_name": "someorg/some-tokenizer"})
    with pytest.raises(OutsideFolderError, match="hub name"):
        bcos_clip.load(d)
    assert no_hub == []  # refused before any tokenizer (and network) call
    assert main(["--log-level", "ERROR", "explain", "--model", str(d), "--image", "x.png", "--prompt", "a",
                 "--output", str(tmp_path / "expl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "allow_hub=True" in err, err
    bcos_clip.load(d, allow_hub=True)
    assert no_hub == ["someorg/some-tokenizer"]
    _edit_config(d, {"hf_tokenizer_name": None, "hf_model_name": "someorg/text-model"})
    with pytest.raises(OutsideFolderError, match="text model 'someorg/text-model'"):
        bcos_clip.load(d)


def test_save_bundles_a_hub_tokenizer(tmp_path, tokenizer_folder):
    """A model whose tokenizer came from the hub saves its files: the checkpoint reloads offline."""
    clip, _, tokenizer = bcos_clip.load_clip(
        "RN50", embed_dim=64, vision_cfg=dict(layers=[1, 1, 1, 1], width=16, image_size=64, head_width=16),
        text_cfg=dict(width=64, layers=1, heads=4, context_length=32, hf_tokenizer_name=str(tokenizer_folder)))
    model = bcos_clip.bcosify(clip)
    model.source["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "someorg/some-tokenizer"  # as if downloaded
    out = bcos_clip.save(model, tmp_path / "ckpt")
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()
    loaded = bcos_clip.load(out)
    assert loaded.tokenizer(["a dog"]).tolist() == tokenizer(["a dog"]).tolist()


# --------------------------------------------------------------------------- export


def test_export_refuses_links_out_of_the_checkpoint(ckpt, tmp_path, secret, capsys):
    d = _copy(ckpt, tmp_path / "ckpt")
    (d / "conversion_report.json").symlink_to(secret)
    out = tmp_path / "hub"
    assert main(["--log-level", "ERROR", "export", str(d), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "conversion_report.json" in err and "outside" in err, err
    assert not any(SECRET in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    (d / "conversion_report.json").unlink()
    weights = d / "model.safetensors"
    moved = tmp_path / "elsewhere" / "model.safetensors"
    weights.rename(moved)
    weights.symlink_to(moved)
    assert main(["--log-level", "ERROR", "export", str(d), "--output", str(out)]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_export_follows_links_inside_and_skips_results_linked_from_elsewhere(ckpt, tmp_path, secret):
    run = tmp_path / "run"
    step = _copy(ckpt, run / "checkpoints" / "step_00000002")
    (run / "checkpoints" / "latest").symlink_to("step_00000002")  # a link inside: fine
    (step / "weights").mkdir()
    (step / "model.safetensors").rename(step / "weights" / "model.safetensors")
    (step / "model.safetensors").symlink_to("weights/model.safetensors")
    (run / "results").mkdir()
    record = {"dataset": "toy", "model": "m", "task": "zeroshot_classification", "metrics": {"acc1": 0.5}}
    (run / "results" / "toy.json").write_text(json.dumps(record))
    leak = tmp_path / "elsewhere" / "other.json"
    leak.write_text(json.dumps({**record, "dataset": "leaked", "note": SECRET}))
    (run / "results" / "other.json").symlink_to(leak)
    (run / "metrics.jsonl").symlink_to(secret)
    out = tmp_path / "hub"
    assert main(["--log-level", "ERROR", "export", str(run / "checkpoints" / "latest"), "--output", str(out)]) == 0
    assert sorted(p.name for p in (out / "results").iterdir()) == ["toy.json"]
    assert not (out / "metrics.jsonl").exists()
    assert not any(SECRET.strip() in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    assert (out / "model.safetensors").read_bytes() == (step / "weights" / "model.safetensors").read_bytes()
    bcos_clip.load(out)


# --------------------------------------------------------------------------- serve --examples


def test_serve_examples_are_regular_files_inside_the_folder(tmp_path, secret):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from bcos_clip.apps.serve.api import create_app, list_examples
    from tests.test_serve_api import png

    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "red.png").write_bytes(png(7))
    (folder / "alias.png").symlink_to("red.png")  # a link inside: offered
    (folder / "hostname.png").symlink_to("/etc/hostname")
    (folder / "secret.png").symlink_to(secret)
    (folder / "up.png").symlink_to(Path("..") / "elsewhere" / "secret.txt")
    examples = list_examples(folder)
    assert sorted(examples) == ["alias.png", "red.png"]
    with TestClient(create_app(object(), examples=examples), base_url="http://localhost") as client:
        assert client.get("/examples").json() == {"examples": ["alias.png", "red.png"]}
        assert client.get("/examples/alias.png").content == png(7)
        for name in ("hostname.png", "secret.png", "up.png", "..%2Felsewhere%2Fsecret.txt"):
            assert client.get(f"/examples/{name}").status_code == 404, name
        (folder / "red.png").unlink()  # swapped for a link after start-up: refused when read
        (folder / "red.png").symlink_to(secret)
        r = client.get("/examples/red.png")
        assert r.status_code == 404 and SECRET not in r.text
