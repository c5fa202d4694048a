"""transformers CLIP folders as teachers: same embeddings as transformers, bcosify, offline checkpoints."""
import json
import shutil

import pytest
import torch

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.models import CheckpointMismatchError, PlainCLIP, is_checkpoint_dir, resolve_model
from bcos_clip.models.hf_clip import config_to_open_clip

transformers = pytest.importorskip("transformers")
TEXT = ["a photo of a dog.", "Two RED circles on grass", "x"]


def _scale_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights of unit-scale activations (HF's 0.02 init gives near-zero embeddings)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _bpe_tokenizer(directory, swap: bool = False):
    """A transformers CLIPTokenizer from open_clip's BPE files (swap: a different vocabulary)."""
    import gzip

    from open_clip.tokenizer import SimpleTokenizer, default_bpe
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in SimpleTokenizer().encoder.items()}
    if swap:
        vocab["dog</w>"], vocab["cat</w>"] = vocab["cat</w>"], vocab["dog</w>"]
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = transformers.CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tok.save_pretrained(str(directory))
    return tok


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny transformers CLIPModel saved with save_pretrained, its tokenizer and preprocessor config."""
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32),
        vision_config=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=48)
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    _scale_weights(model)
    d = tmp_path_factory.mktemp("hf") / "tiny-clip"
    model.save_pretrained(str(d))
    _bpe_tokenizer(d)
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "resample": 3,
         "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}}))
    return d


def hf_embeddings(directory, pixels, ids):
    hf = transformers.CLIPModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        image = hf.visual_projection(hf.vision_model(pixel_values=pixels).pooler_output)
        text = hf.text_projection(hf.text_model(input_ids=ids).pooler_output)
    return image, text


def assert_same_as_transformers(directory):
    model, preprocess, tokenizer = bcos_clip.load_clip(str(directory))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = tokenizer(TEXT)
    ref_image, ref_text = hf_embeddings(directory, pixels, ids)
    with torch.no_grad():
        image, text = model.encode_image(pixels), model.encode_text(ids)
    assert ref_image.abs().max() > 0.1 and ref_text.abs().max() > 0.1
    assert (image - ref_image).abs().max() < 1e-5
    assert (text - ref_text).abs().max() < 1e-5
    return model, tokenizer


def test_load_clip_matches_transformers(hf_dir):
    model, tokenizer = assert_same_as_transformers(hf_dir)
    assert type(tokenizer).__name__ == "SimpleTokenizer" and tokenizer.context_length == 32
    src = model.bcos_clip_source
    assert src["model_cfg"]["text_cfg"]["pool_type"] == "eos" and src["model_cfg"]["quick_gelu"] is True
    assert src["preprocess_cfg"]["mean"] == (0.5, 0.4, 0.3) and src["preprocess_cfg"]["size"] == 32
    # the folder's own tokenizer (pads with <|endoftext|>) gives the same text embeddings
    hf_ids = transformers.AutoTokenizer.from_pretrained(str(hf_dir))(
        TEXT, padding="max_length", max_length=32, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model.encode_text(hf_ids), model.encode_text(tokenizer(TEXT)), atol=1e-6)
    plain = resolve_model(str(hf_dir))
    assert isinstance(plain, PlainCLIP) and not is_checkpoint_dir(hf_dir)


def test_legacy_eos_gelu_and_eps_variants(hf_dir, tmp_path):
    d = tmp_path / "legacy"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"].update(eos_token_id=2, hidden_act="gelu", layer_norm_eps=1e-6)
    cfg["vision_config"].update(hidden_act="gelu", layer_norm_eps=1e-6)
    (d / "config.json").write_text(json.dumps(cfg))
    model, _ = assert_same_as_transformers(d)
    text_cfg = model.bcos_clip_source["model_cfg"]["text_cfg"]
    assert text_cfg["pool_type"] == "argmax" and text_cfg["norm_kwargs"] == {"eps": 1e-6}
    assert model.bcos_clip_source["model_cfg"]["quick_gelu"] is False


def test_config_mapping_rejects_unsupported(tmp_path):
    cfg = transformers.CLIPConfig(text_config=dict(hidden_act="gelu_new"), vision_config=dict(hidden_act="gelu"))
    with pytest.raises(ValueError, match="hidden_act"):
        config_to_open_clip(cfg, tmp_path)
    cfg = transformers.CLIPConfig(vision_config=dict(hidden_size=64, num_attention_heads=4, intermediate_size=100))
    mapped = config_to_open_clip(cfg, tmp_path)
    assert int(mapped["vision_cfg"]["width"] * mapped["vision_cfg"]["mlp_ratio"]) == 100
    assert mapped["embed_dim"] == cfg.projection_dim


def test_bcosify_equivalence_at_b1(hf_dir):
    model, _, _ = bcos_clip.load_clip(str(hf_dir))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pp = model.bcos_clip_source["preprocess_cfg"]
    normalized = (images - torch.tensor(pp["mean"]).view(1, 3, 1, 1)) / torch.tensor(pp["std"]).view(1, 3, 1, 1)
    converted = bcos_clip.bcosify(model, b=1.0, bias=True)
    with torch.no_grad():
        ref, out = model.encode_image(normalized), converted.encode_image(images)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-5
    assert converted.report.unconverted == []
    with pytest.raises(ValueError, match="is a transformers CLIP folder"):
        bcos_clip.load(hf_dir)


def test_bcosified_checkpoint_is_self_contained(hf_dir, tmp_path):
    model = bcos_clip.bcosify(bcos_clip.load_clip(str(hf_dir))[0], b=2.0)
    bcos_clip.save(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "hf_tokenizer_name" not in saved["model_cfg"]["text_cfg"]  # open_clip's tokenizer: nothing to bundle
    assert str(hf_dir) not in json.dumps({k: v for k, v in saved.items() if k != "source"})
    loaded = bcos_clip.load(tmp_path / "ckpt")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.eval().encode_image(images))


def test_own_tokenizer_is_bundled_and_reloads_offline(hf_dir, tmp_path):
    d = tmp_path / "own-tok"
    shutil.copytree(hf_dir, d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (d / f).unlink(missing_ok=True)
    _bpe_tokenizer(d, swap=True)  # not open_clip's vocabulary: the folder's tokenizer must be used
    clip, _, tokenizer = bcos_clip.load_clip(str(d))
    assert type(tokenizer).__name__ == "HFTokenizer"
    from open_clip.tokenizer import SimpleTokenizer
    cat_id = SimpleTokenizer().encoder["cat</w>"]
    assert tokenizer(["a dog"])[0, 2].item() == cat_id  # the swapped vocabulary is in use
    model = bcos_clip.bcosify(clip, b=2.0)
    bcos_clip.save(model, tmp_path / "ckpt")
    moved = tmp_path / "moved-away"
    d.rename(moved)  # the checkpoint must not need the transformers folder
    loaded = bcos_clip.load(tmp_path / "ckpt")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.eval().encode_image(images))
        assert torch.equal(loaded.tokenizer(TEXT), tokenizer(TEXT))
        assert torch.equal(loaded.encode_text(loaded.tokenizer(TEXT)), model.encode_text(tokenizer(TEXT)))
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").is_file()


def test_bad_folders_give_clear_errors(hf_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    d = tmp_path / "broken"
    shutil.copytree(hf_dir, d)
    state = load_file(str(d / "model.safetensors"))
    state.pop("text_model.encoder.layers.1.mlp.fc2.weight")
    state["vision_model.extra.weight"] = torch.zeros(2)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        bcos_clip.load_clip(str(d))
    msg = str(err.value)
    assert "missing keys: text_model.encoder.layers.1.mlp.fc2.weight" in msg
    assert "unexpected keys: vision_model.extra.weight" in msg
    state = load_file(str(hf_dir / "model.safetensors"))
    state["visual_projection.weight"] = torch.zeros(7, 64)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"visual.proj: expected \(64, 48\), found \(64, 7\)"):
        bcos_clip.load_clip(str(d))
    with pytest.raises(ValueError, match="do not pass pretrained"):
        bcos_clip.load_clip(str(hf_dir), pretrained="openai")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        bcos_clip.load_clip(str(d))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "clip_vision_model"}))
    rc = main(["bcosify", "--model", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a transformers CLIP folder" in err and len(err.strip().splitlines()) == 1
