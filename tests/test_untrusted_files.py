"""No loader unpickles a file a user may have downloaded (run folders, released checkpoints, caches,
weights, shards). Every loader that reads user files gets a file carrying a payload whose unpickling
would create a marker file: the marker never appears, and the error (where there is one) is one line
naming the file."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import numpy.testing._private.utils as np_test_utils
import pytest
import torch
import webdataset as wds

import bcos_clip
from bcos_clip.cli import main
from tests._official_ckpt import Payload, lightning_checkpoint, lightning_state_dict, their_tower_state
from tests._train_data import caption, image_bytes, write_img2dataset, write_tiny_teacher


class TolerantNamePayload:
    """A payload through a global inside the namespaces a trainer's file may name (numpy's runstring
    execs its argument): the restricted loader turns it into an inert record, so it never runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (np_test_utils.runstring, (f"open({self.path!r}, 'w').close()", {}))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a payload ran"


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _raises_one_line(fn, *match: str) -> str:
    with pytest.raises(Exception) as err:
        fn()
    assert isinstance(err.value, (ValueError, FileNotFoundError)), repr(err.value)
    line = _one_line(str(err.value))
    assert all(m in line for m in match), line
    return line


# -- train --resume ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_inputs(tiny_rn, tmp_path_factory):
    root = tmp_path_factory.mktemp("run_inputs")
    teacher = write_tiny_teacher(root / "teacher", model=tiny_rn[0])
    return teacher, write_img2dataset(root / "data", n_shards=1, per_shard=4)


def _step_dir(run: Path, tiny_rn_bcos, step: int = 3) -> Path:
    d = run / "checkpoints" / f"step_{step:08d}"
    bcos_clip.save(tiny_rn_bcos, d)
    (d / "train_config.json").write_text("{}")
    (run / "checkpoints" / "latest").symlink_to(d.name)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    return d


def _train(run_inputs, run: Path, resume: str) -> int:
    (model, pretrained), data = run_inputs
    return main(["train", "--model", model, "--pretrained", pretrained, "--train-data", data, "--output", str(run),
                 "--batch-size", "2", "--steps", "4", "--workers", "0", "--resume", resume])


@pytest.mark.parametrize("resume", ["dir", "latest"])
def test_resume_refuses_a_pickled_train_state(run_inputs, tiny_rn_bcos, tmp_path, marker, capsys, resume):
    run = tmp_path / "run"
    step = _step_dir(run, tiny_rn_bcos)
    torch.save({"step": 3, "optimizer": Payload(marker)}, step / "train_state.pt")  # what old versions wrote
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc = _train(run_inputs, run, str(step) if resume == "dir" else "latest")
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "train_state.pt" in line and "pickled trainer state" in line and f"--model {step}" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the run folder is untouched


@pytest.mark.parametrize("resume", ["dir", "latest"])
def test_resume_refuses_a_pickle_in_the_new_state_files(run_inputs, tiny_rn_bcos, tmp_path, marker, capsys, resume):
    """A crafted folder may put a pickle where the safetensors / JSON state belongs: still data only."""
    run = tmp_path / "run"
    step = _step_dir(run, tiny_rn_bcos)
    torch.save({"t0": Payload(marker)}, step / "train_state.safetensors")
    (step / "train_state.json").write_text(json.dumps({"format": "bcos_clip.train_state", "version": 1,
                                                       "state": {"step": {"__tensor__": "t0"}}}))
    rc = _train(run_inputs, run, str(step) if resume == "dir" else "latest")
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "train_state.safetensors" in line
    (step / "train_state.json").write_bytes(pickle.dumps(Payload(marker)))
    rc = _train(run_inputs, run, str(step) if resume == "dir" else "latest")
    assert rc == 2 and "train_state.json" in _one_line(capsys.readouterr().err)


# -- import-official -----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["lightning", "lightning-tolerated-name", "stripped", "bare", "safetensors-name"])
def test_import_official_refuses_payloads(tiny_rn, tmp_path, marker, capsys, form):
    teacher = tiny_rn[0]
    tower = their_tower_state(teacher.visual)
    ckpt = lightning_checkpoint(lightning_state_dict(tower, {}))
    path = tmp_path / ("x.safetensors" if form == "safetensors-name" else "x.ckpt")
    if form == "lightning":
        ckpt["hyper_parameters"]["criterion"] = Payload(marker)
        torch.save(ckpt, path)
    elif form == "lightning-tolerated-name":
        ckpt["callbacks"]["x"] = TolerantNamePayload(marker)
        torch.save(ckpt, path)
    elif form == "stripped":
        torch.save({**{f"model.{k}": v for k, v in tower.items()}, "extra": Payload(marker)}, path)
    else:
        torch.save(Payload(marker), path)
    (tmp_path / "rn.json").write_text(json.dumps(teacher.bcos_clip_source["model_cfg"]))
    rc = main(["import-official", str(path), "--out", str(tmp_path / "out"), "--teacher", str(tmp_path / "rn.json"),
               "--pretrained", "none"])
    err = capsys.readouterr().err
    if form == "lightning-tolerated-name":  # an inert record: the import goes on, the payload never runs
        assert rc == 0, err
        return
    line = _one_line(err)
    assert rc == 2 and str(path) in line, line
    assert ("builtins.exec" in line and "--trust-pickle" in line) if form != "safetensors-name" else "cannot read" in line
    assert not (tmp_path / "out").exists()


# -- evaluation caches -------------------------------------------------------------------------------

def test_eval_caches_refuse_payloads(tiny_rn_bcos, tmp_path, marker):
    from bcos_clip.evaluation.classifier import cached_classifier
    from bcos_clip.evaluation.features import LoaderSettings, cached_split_features, feature_cache_path

    classnames, templates = ["red", "blue"], ["a {c} square."]
    cached_classifier(tiny_rn_bcos, classnames, templates, torch.device("cpu"), tmp_path)  # writes the cache
    (path,) = (tmp_path / "classifiers").glob("*.pt")
    torch.save(Payload(marker), path)
    _raises_one_line(lambda: cached_classifier(tiny_rn_bcos, classnames, templates, torch.device("cpu"), tmp_path),
                     str(path), "classifier cache", "delete it")

    dataset = type("Dataset", (), {"name": "wds/shapes", "root": str(tmp_path), "classnames": classnames})()
    path = feature_cache_path(tmp_path, "0" * 40, dataset, "test", "fp32")
    path.parent.mkdir(parents=True)
    torch.save({"features": torch.zeros(2, 3), "targets": Payload(marker)}, path)
    _raises_one_line(lambda: cached_split_features(tiny_rn_bcos, dataset, "test", LoaderSettings(), tmp_path,
                                                   "0" * 40), str(path), "feature cache")


# -- model weights -------------------------------------------------------------------------------------

def test_weight_files_refuse_payloads(tiny_rn, tiny_rn_bcos, tmp_path, marker):
    from bcos_clip.models.hf_clip import read_hf_weights

    hf = tmp_path / "hf"
    hf.mkdir()
    torch.save({"vision_model.embeddings.patch_embedding.weight": Payload(marker)}, hf / "pytorch_model.bin")
    _raises_one_line(lambda: read_hf_weights(hf), "pytorch_model.bin", "not unpickled")

    (tmp_path / "rn.json").write_text(json.dumps(tiny_rn[0].bcos_clip_source["model_cfg"]))
    torch.save({"state_dict": {"x": Payload(marker)}}, tmp_path / "teacher.pt")
    _raises_one_line(lambda: bcos_clip.load_clip(str(tmp_path / "rn.json"), str(tmp_path / "teacher.pt")),
                     "teacher.pt", "builtins.exec")

    bcos_clip.save(tiny_rn_bcos, tmp_path / "ck")
    torch.save(Payload(marker), tmp_path / "ck" / "model.safetensors")  # a pickle where safetensors belong
    _raises_one_line(lambda: bcos_clip.load(tmp_path / "ck"), "model.safetensors")


def test_text_cache_refuses_a_pickled_chunk(tmp_path, marker):
    from bcos_clip.train.text_targets import CaptionCache

    (tmp_path / "chunk-00000.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    _raises_one_line(lambda: CaptionCache(str(tmp_path), "fp"), "chunk-00000.safetensors", "--text-cache")


# -- data -----------------------------------------------------------------------------------------------

def test_teacher_pretraining_shards_never_decode_pickled_members(tmp_path, marker):
    """webdataset's default decoders unpickle .pyd / .pickle members and torch.load .pth ones."""
    from bcos_clip.apps.demo.teacher import load_caption_shards

    blob = pickle.dumps(Payload(marker))
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    with wds.TarWriter(str(tmp_path / "0.tar")) as sink:
        for i in range(2):
            sink.write({"__key__": f"{i:04d}", "jpg": image_bytes(i), "txt": caption(i), "pyd": blob,
                        "pickle": blob, "pth": buf.getvalue()})
    images, captions = load_caption_shards(str(tmp_path / "0.tar"), 32)
    assert images.shape == (2, 3, 32, 32) and captions == [caption(0), caption(1)]


def test_benchmark_npy_targets_refuse_object_arrays(marker):
    from bcos_clip.data.readers.wds import decode_target

    buf = io.BytesIO()
    np.save(buf, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    _raises_one_line(lambda: decode_target("npy", buf.getvalue(), "shard 0.tar: sample s0001", None),
                     "sample s0001", ".npy")
