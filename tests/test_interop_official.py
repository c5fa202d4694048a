"""import-official on checkpoints laid out as the paper's trainer writes them (shrebox/B-cosification,
CLIP RN50 experiments; see tests/_official_ckpt.py): the Lightning last.ckpt (model and EMA), its
stripped .pth, safetensors, and the open_clip-named layout of earlier synthetic checkpoints. The
imported tower's embeddings and explanations equal a reference forward written from their equations
(float32 and float64)."""
import json

import pytest
import torch
from safetensors.torch import save_file

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.models import CheckpointMismatchError
from bcos_clip.models.official import OFFICIAL_SPEC, import_official, official_key, tower_layout
from tests._official_ckpt import (Payload, foreign_classes, hparams_with_objects, lightning_checkpoint,
                                  lightning_state_dict, reference_explanation, reference_tower, rel, stripped,
                                  their_tower_state, to_open_clip_names)

P = "model.model."  # Lightning module .model (their network wrapper) -> .model (the CLIP image tower)


@pytest.fixture(scope="module")
def official(tiny_rn, tmp_path_factory):
    """(teacher CLIP, their tower tensors, their EMA tower tensors, Lightning dict, path of last.ckpt)."""
    teacher = tiny_rn[0]
    tower, ema_tower = their_tower_state(teacher.visual, seed=0), their_tower_state(teacher.visual, seed=1)
    ckpt = lightning_checkpoint(lightning_state_dict(tower, teacher.visual.state_dict(), ema_tower))
    path = tmp_path_factory.mktemp("official") / "last.ckpt"
    torch.save(ckpt, path)
    return teacher, tower, ema_tower, ckpt, path


@pytest.fixture(scope="module")
def imported(official):
    teacher, *_, path = official
    return import_official(path, teacher)


def _reference(model, tower, images, heads):
    pp = model.source["preprocess_cfg"]
    with torch.no_grad():
        return reference_tower(tower, torch.cat([images, 1 - images], 1), pp["mean"], pp["std"], heads)


def test_their_layout_and_the_key_mapping(official, imported):
    teacher, tower, _, ckpt, _ = official
    model, _, info = imported
    # the fixture's layout: downsample renumbered 0 (AvgPool), 1 (conv), 2 (BN); prefixes as their trainer's
    assert "layer2.0.downsample.1.linear.weight" in tower and "layer2.0.downsample.2.running_var" in tower
    assert not any(".downsample.0." in k for k in tower) and tower_layout(tower) == "positional"
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"model", "clip_model", "ema"}
    assert ckpt["state_dict"]["model.model.bn1.num_batches_tracked"].dtype == torch.int64
    expected = {  # literal spot checks of every kind of key
        "conv1.linear.weight": "visual.conv1.weight",
        "bn1.weight": "visual.bn1.weight",
        "bn1.running_var": "visual.bn1.running_var",
        "bn1.running_mean": None,
        "bn1.num_batches_tracked": None,
        "layer2.0.downsample.1.linear.weight": "visual.layer2.0.downsample.0.weight",
        "layer2.0.downsample.2.weight": "visual.layer2.0.downsample.1.weight",
        "layer2.0.downsample.2.running_var": "visual.layer2.0.downsample.1.running_var",
        "layer2.0.downsample.2.running_mean": None,
        "attnpool.q_proj.weight": "visual.attnpool.q_proj.weight",
        "attnpool.v_proj.weight": "visual.attnpool.v_proj.weight",
        "attnpool.c_proj.linear.weight": "visual.attnpool.c_proj.weight",
    }
    for key, target in expected.items():
        assert official_key(key) == target, key
    assert official_key("layer2.0.downsample.0.linear.weight", "open_clip") == "visual.layer2.0.downsample.0.weight"
    state = model.state_dict()
    loaded = {official_key(k): v for k, v in tower.items() if official_key(k) is not None}
    assert set(loaded) == {k for k in state if k.startswith("visual.")}  # every tower tensor, nothing else
    assert all(torch.equal(state[k], v) for k, v in loaded.items())
    assert info["layout"] == "positional" and info["tensors_loaded"] == len(loaded) and info["epoch"] == 89
    assert info["experiment_name"].startswith("resnet_50_clip_b2") and info["teacher_visual"] == "from the checkpoint"


def test_import_reproduces_their_forward_fp32(official, imported):
    teacher, tower, *_ = official
    model = imported[0]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = _reference(model, tower, images, teacher.visual.attnpool.num_heads)
    with torch.no_grad():
        out = model.encode_image(images)
    assert ref.abs().max() > 1e-3 and torch.isfinite(ref).all()
    assert rel(out, ref) < 1e-5
    assert model.spec == OFFICIAL_SPEC
    pool = model.visual.attnpool
    assert pool.positional_embedding is None and pool.v_proj.b == 1.0 and pool.c_proj.b == 1.0
    assert model.visual.conv1.b == 2.0 and model.visual.layer1[0].conv2.b == 2.0
    tokens = model.tokenizer(["a dog"])  # text tower from the teacher
    assert torch.equal(model.encode_text(tokens), teacher.encode_text(tokens))


def test_float64_embeddings_and_explanations_equal_their_equations(official):
    """In float64 nothing rounds to float32 (Normalize6 constants, attention softmax): agreement to ~1e-15."""
    teacher, tower, *_, path = official
    model = import_official(path, teacher)[0].double()
    heads = teacher.visual.attnpool.num_heads
    pp = model.source["preprocess_cfg"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    text = torch.nn.functional.normalize(torch.randn(3, model.embed_dim, dtype=torch.float64), dim=-1)
    with torch.no_grad():
        out = model.encode_image(images)
    ref = _reference(model, tower, images, heads)
    assert out.dtype == torch.float64 and rel(out, ref) < 1e-12
    expl = bcos_clip.explain(model, images, text, method="prompts")
    c_ref, s_ref, b_ref = reference_explanation(tower, images, text, pp["mean"], pp["std"], heads)
    assert expl.contributions.dtype == torch.float64
    assert rel(expl.scores, s_ref) < 1e-12 and rel(expl.contributions, c_ref) < 1e-12 and rel(expl.bias, b_ref) < 1e-12
    assert b_ref.abs().max() > 1e-3  # the Normalize6 offset: a real bias term, measured by the replay
    total = expl.contributions.sum((-2, -1)) + expl.bias
    assert (total - expl.scores).abs().max() < 1e-12
    basis = bcos_clip.explain(model, images, text, method="basis")
    assert rel(basis.contributions, c_ref) < 1e-12 and rel(basis.bias, b_ref) < 1e-12


def test_ema_stripped_and_safetensors_forms(official, imported, tmp_path):
    teacher, tower, ema_tower, ckpt, path = official
    model = imported[0]
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    from_ema, _, info = import_official(path, teacher, ema=True)
    assert info["source_prefix"] == "ema.module.model." and info["layout"] == "positional"
    with torch.no_grad():
        assert rel(from_ema.encode_image(images),
                   _reference(model, ema_tower, images, teacher.visual.attnpool.num_heads)) < 1e-5
    torch.save(stripped(ckpt), tmp_path / "model.pth")
    torch.save(stripped(ckpt, ema=True), tmp_path / "ema.pth")
    save_file(stripped(ckpt), tmp_path / "model.safetensors")
    for name, like in (("model.pth", model), ("model.safetensors", model), ("ema.pth", from_ema)):
        again, _, info = import_official(tmp_path / name, teacher)
        assert info["teacher_visual"].startswith("from --teacher") and info["source_prefix"] == "model."
        assert all(torch.equal(again.visual.state_dict()[k], v) for k, v in like.visual.state_dict().items()), name
    with pytest.raises(ValueError, match="import it without --ema"):
        import_official(tmp_path / "ema.pth", teacher, ema=True)


def test_open_clip_named_layout_still_loads(official, imported, tmp_path):
    """Synthetic checkpoints keyed with open_clip's downsample names (-1, 0, 1) import as before."""
    teacher, tower, _, _, _ = official
    renamed = to_open_clip_names(tower)
    assert "layer2.0.downsample.0.linear.weight" in renamed and tower_layout(renamed) == "open_clip"
    torch.save(lightning_checkpoint(lightning_state_dict(renamed, teacher.visual.state_dict())), tmp_path / "o.ckpt")
    again, _, info = import_official(tmp_path / "o.ckpt", teacher)
    assert info["layout"] == "open_clip"
    assert all(torch.equal(again.visual.state_dict()[k], v) for k, v in imported[0].visual.state_dict().items())


def test_mismatching_checkpoint_lists_keys(official, tmp_path):
    teacher, tower, *_ = official
    bad = dict(tower)
    bad.pop("layer1.0.conv2.linear.weight")
    bad["layer1.0.conv1.bias"] = torch.zeros(3)
    bad["attnpool.v_proj.weight"] = torch.zeros(5, 5)
    torch.save(lightning_checkpoint(lightning_state_dict(bad, {})), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError) as err:
        import_official(tmp_path / "bad.ckpt", teacher)
    msg = str(err.value)
    assert "missing keys: layer1.0.conv2.weight" in msg and "unexpected keys: layer1.0.conv1.bias" in msg
    assert "attnpool.v_proj.weight: expected" in msg and "positional downsample keys" in msg and "\n" not in msg


def test_pickled_trainer_objects_load_without_trust_pickle(official, imported, tmp_path):
    """Lightning files pickle objects beside the tensors (AttributeDict, the trainer's config objects,
    Namespace, numpy values): read as inert records, never unpickled for real (the marker stays absent)."""
    teacher, tower, *_ = official
    marker = tmp_path / "unpickled"
    with foreign_classes(marker) as classes:
        ckpt = lightning_checkpoint(lightning_state_dict(tower, teacher.visual.state_dict()),
                                    extra_hparams=hparams_with_objects(classes),
                                    callback_extra={"best_epoch": __import__("numpy").int64(88)})
        torch.save(ckpt, tmp_path / "objects.ckpt")
        with pytest.raises(Exception):  # what weights_only alone says about such a file
            torch.load(tmp_path / "objects.ckpt", weights_only=True)
        again, _, info = import_official(tmp_path / "objects.ckpt", teacher)  # classes importable: still not run
    assert not marker.exists()
    assert info["experiment_name"].startswith("resnet_50_clip_b2") and info["global_step"] == 450450
    assert all(torch.equal(again.visual.state_dict()[k], v) for k, v in imported[0].visual.state_dict().items())


def _cli(path, out, teacher_args, *extra):
    return main(["import-official", str(path), "--out", str(out), *teacher_args, *extra])


class NotATensor:  # a custom class outside what a trainer's file is expected to name
    pass


def test_cli_import_official_end_to_end(official, imported, tmp_path, capsys):
    teacher, tower, ema_tower, ckpt, path = official
    (tmp_path / "rn.json").write_text(json.dumps(teacher.bcos_clip_source["model_cfg"]))
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    targs = ["--teacher", str(tmp_path / "rn.json"), "--pretrained", str(tmp_path / "teacher.pt")]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    heads = teacher.visual.attnpool.num_heads
    for name, extra, their in (("model", [], tower), ("ema", ["--ema"], ema_tower)):
        assert _cli(path, tmp_path / name, targs, *extra) == 0, capsys.readouterr().err
        loaded = bcos_clip.load(tmp_path / name)
        with torch.no_grad():
            assert rel(loaded.encode_image(images), _reference(loaded, their, images, heads)) < 1e-5, name
        assert loaded.spec == OFFICIAL_SPEC and (tmp_path / name / "teacher_visual.safetensors").is_file()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["extra"]["official"]["global_step"] == 450450 and config["extra"]["official"]["layout"] == "positional"
    # today's synthetic layout (open_clip names) through the same command
    torch.save(lightning_checkpoint(lightning_state_dict(to_open_clip_names(tower), {})), tmp_path / "synthetic.ckpt")
    assert _cli(tmp_path / "synthetic.ckpt", tmp_path / "synthetic", targs) == 0, capsys.readouterr().err
    with torch.no_grad():
        assert torch.equal(bcos_clip.load(tmp_path / "synthetic").encode_image(images),
                           bcos_clip.load(tmp_path / "model").encode_image(images))
    # a pickled object of an unexpected class, or a payload: refused without --trust-pickle, one line
    torch.save({**ckpt, "callbacks": NotATensor()}, tmp_path / "pickled.ckpt")
    torch.save({**ckpt, "callbacks": Payload(tmp_path / "marker")}, tmp_path / "payload.ckpt")
    capsys.readouterr()
    for name, names in (("pickled.ckpt", "NotATensor"), ("payload.ckpt", "builtins.exec")):
        rc = _cli(tmp_path / name, tmp_path / "x", targs)
        err = capsys.readouterr().err
        assert rc == 2 and names in err and "--trust-pickle" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "marker").exists() and not (tmp_path / "x").exists()
    assert _cli(tmp_path / "pickled.ckpt", tmp_path / "x", targs, "--trust-pickle") == 0  # the explicit opt-in


def test_cli_errors_are_one_line(official, tmp_path, capsys):
    teacher, tower, *_ = official
    bad = {k: v for k, v in tower.items() if "layer3" not in k}
    torch.save(lightning_checkpoint(lightning_state_dict(bad, {})), tmp_path / "bad.ckpt")
    (tmp_path / "rn.json").write_text(json.dumps(teacher.bcos_clip_source["model_cfg"]))
    for name, expected in (("bad.ckpt", "missing keys: layer3.0"), ("nope.ckpt", "checkpoint not found")):
        rc = _cli(tmp_path / name, tmp_path / "o", ["--teacher", str(tmp_path / "rn.json"), "--pretrained", "none"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


@pytest.mark.slow
def test_full_size_rn50_layout():
    """The real RN50 architecture: every official key maps, and the import equals the reference forward."""
    from bcos_clip.models.official import OfficialCheckpoint
    torch.manual_seed(0)
    teacher, _, _ = bcos_clip.load_clip("RN50")
    tower = their_tower_state(teacher.visual)
    n_conv = 3 + 3 * 16 + 4  # stem, 16 bottlenecks, 4 downsamples; as many BNs (4 tensors each)
    assert len(tower) == n_conv + 4 * n_conv + 4
    assert sum(".downsample.1.linear.weight" in k for k in tower) == 4
    model, _, info = import_official(OfficialCheckpoint(tower, None, {"file": "synthetic-rn50"}), teacher)
    assert info["tensors_loaded"] == len(model.visual.state_dict()) == n_conv + 2 * n_conv + 4
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ref = _reference(model, tower, images, teacher.visual.attnpool.num_heads)
    with torch.no_grad():
        out = model.encode_image(images)
    assert torch.isfinite(ref).all() and ref.abs().max() > 0
    assert rel(out, ref) < 1e-4


def test_checkpoints_with_the_old_normalize6_buffers_still_load(imported, tmp_path):
    """Imports written before the Normalize6 constants followed the input dtype stored them as float32
    buffers (input_norm.mean / .std): such a checkpoint still loads, and computes the same."""
    from safetensors.torch import load_file

    model = imported[0]
    bcos_clip.save(model, tmp_path / "ck")
    weights = load_file(tmp_path / "ck" / "model.safetensors")
    assert not any(k.startswith("input_norm.") for k in weights)
    pp = model.source["preprocess_cfg"]
    weights["input_norm.mean"] = torch.tensor(list(pp["mean"]) + [1 - v for v in pp["mean"]]).view(1, 6, 1, 1)
    weights["input_norm.std"] = torch.tensor(list(pp["std"]) * 2).view(1, 6, 1, 1)
    save_file(weights, tmp_path / "ck" / "model.safetensors")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bcos_clip.load(tmp_path / "ck").encode_image(images), model.encode_image(images))
