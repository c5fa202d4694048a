"""load_clip, save/load round trips, readable errors."""
import json

import pytest
import torch

import bcos_clip
from bcos_clip import load_clip
from bcos_clip.models import CheckpointMismatchError, deep_merge
from tests.conftest import TINY_RN


def test_save_load_reproduces_outputs_exactly(tiny_rn_bcos, tmp_path):
    bcos_clip.save(tiny_rn_bcos, tmp_path / "ckpt")
    loaded = bcos_clip.load(tmp_path / "ckpt")
    images = torch.rand(2, 3, 64, 64)
    tokens = tiny_rn_bcos.tokenizer(["a red circle", "a dog"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), tiny_rn_bcos.eval().encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), tiny_rn_bcos.encode_text(tokens))
    assert loaded.spec == tiny_rn_bcos.spec
    assert loaded.tokenizer.context_length == 32
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["bcosify"]["b"] == 2.0 and cfg["source"]["name"] == "RN50"
    assert "torch" in cfg["versions"]


def test_vit_round_trip(tiny_vit_bcos, tmp_path):
    bcos_clip.save(tiny_vit_bcos, tmp_path / "v")
    loaded = bcos_clip.load(tmp_path / "v")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), tiny_vit_bcos.eval().encode_image(x))


def test_mismatching_checkpoint_lists_the_key_diff(tiny_rn_bcos, tmp_path):
    from safetensors.torch import load_file, save_file
    bcos_clip.save(tiny_rn_bcos, tmp_path / "c")
    state = load_file(str(tmp_path / "c" / "model.safetensors"))
    state.pop("visual.layer1.0.conv1.weight")
    state["visual.extra.weight"] = torch.zeros(1)
    state["visual.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    save_file(state, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        bcos_clip.load(tmp_path / "c")
    msg = str(err.value)
    assert "missing keys: visual.layer1.0.conv1.weight" in msg
    assert "unexpected keys: visual.extra.weight" in msg
    assert "visual.conv1.weight: expected" in msg


def test_load_clip_errors_and_config_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown model name 'NotAModel-7'"):
        load_clip("NotAModel-7")
    with pytest.raises(FileNotFoundError, match="model config file not found"):
        load_clip(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="neither a file nor a known tag"):
        load_clip("RN50", pretrained="no-such-tag", **TINY_RN)
    cfg = deep_merge({"embed_dim": 1024, "vision_cfg": {"layers": [3, 4, 6, 3], "width": 64,
                                                        "image_size": 224}, "text_cfg": {"context_length": 77,
                                                                                         "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
                     TINY_RN)
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    model, preprocess, tokenizer = load_clip(str(tmp_path / "tiny.json"))
    assert tokenizer.context_length == 32
    assert tokenizer(["a"]).shape == (1, 32)
    assert preprocess.transforms[0].size in (64, [64], (64, 64))
    # a local checkpoint path as `pretrained`
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again, _, _ = load_clip(str(tmp_path / "tiny.json"), pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(again.visual.conv1.weight, model.visual.conv1.weight)


def test_pretrained_tag_offline_gives_clear_error(monkeypatch):
    import open_clip

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(open_clip, "download_pretrained", no_network)
    with pytest.raises(RuntimeError, match="could not download pretrained weights RN50/openai"):
        load_clip("RN50", pretrained="openai", **TINY_RN)


def test_load_rejects_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        bcos_clip.load(tmp_path)
