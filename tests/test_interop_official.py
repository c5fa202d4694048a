"""import-official: a synthetic checkpoint with exactly the official keys and shapes (shrebox/B-cosification,
CLIP RN50 experiments), mapped key by key, and outputs equal to a reference forward written here from
their layers' semantics."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.models import CheckpointMismatchError
from bcos_clip.models.official import OFFICIAL_SPEC, import_official, official_key

QK_GAIN = 30.0  # large q/k weights: attention far from uniform, so q/k semantics matter
P = "model.model."  # Lightning module .model (their BcosifyNetwork) -> .model (the CLIP image tower)


def official_state(teacher_visual: nn.Module, seed: int = 0) -> dict:
    """Their Lightning state_dict for a converted ModifiedResNet: every conv a BcosifyConv2d
    (`.linear.weight`, 6 input channels for the stem conv), every BN a bias-free BatchNormUncentered2d
    (weight, running_mean, running_var, num_batches_tracked), attnpool without positional embedding or
    biases (q/k/v plain Linears, c_proj a BcosifyLinear), plus the frozen teacher tower as clip_model.*."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, mod in teacher_visual.named_modules():
        if isinstance(mod, nn.Conv2d):
            cin = 6 if name == "conv1" else mod.in_channels
            w = torch.randn(mod.out_channels, cin, *mod.kernel_size, generator=g)
            sd[f"{P}{name}.linear.weight"] = w * (2.0 / w.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        elif isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            sd[f"{P}{name}.weight"] = 0.5 + torch.rand(n, generator=g)
            sd[f"{P}{name}.running_mean"] = torch.rand(n, generator=g) - 0.5
            sd[f"{P}{name}.running_var"] = 0.5 + torch.rand(n, generator=g)
            sd[f"{P}{name}.num_batches_tracked"] = torch.tensor(12345)
    pool = teacher_visual.attnpool
    c, out = pool.k_proj.in_features, pool.c_proj.out_features
    for proj in ("k", "q", "v"):
        gain = 1.0 if proj == "v" else QK_GAIN
        sd[f"{P}attnpool.{proj}_proj.weight"] = torch.randn(c, c, generator=g) * gain / math.sqrt(c)
    sd[f"{P}attnpool.c_proj.linear.weight"] = torch.randn(out, c, generator=g) / math.sqrt(c)
    for k, v in teacher_visual.state_dict().items():
        sd[f"clip_model.{k}"] = v.clone()
    return sd


def lightning_checkpoint(sd: dict) -> dict:
    return {"state_dict": sd, "epoch": 89, "global_step": 450450, "pytorch-lightning_version": "2.2.1",
            "hyper_parameters": {"dataset": "ImageNet", "base_network": "clip_bcosification",
                                 "experiment_name": "resnet_50_clip_b2_noBias_randomResizedCrop_sigLip_"
                                                    "ImageNet_bcosification"}}


def reference_forward(sd: dict, images: torch.Tensor, mean, std, heads: int) -> torch.Tensor:
    """Their forward, from their code's semantics: Normalize6 -> B-cos (B=2) convs with unfold patch norms
    sqrt(sum x^2 + 1e-6), uncentered BN (running var), ReLU, anti-aliasing avg pools, then the attention
    pool as plain multi-head attention with the q/k/v/c weights and no biases."""
    m = torch.tensor(list(mean) + [1 - v for v in mean]).view(1, 6, 1, 1)
    s = torch.tensor(list(std) * 2).view(1, 6, 1, 1)
    x = (torch.cat([images, 1 - images], 1) - m) / s

    def conv(x, name, stride=1, padding=0):
        w = sd[f"{P}{name}.linear.weight"]
        z = F.conv2d(x, w, stride=stride, padding=padding)
        cols = F.unfold(x, w.shape[-1], padding=padding, stride=stride)  # (N, C*k*k, L)
        norm = (cols.square().sum(1) + 1e-6).sqrt().view(z.shape[0], 1, *z.shape[2:])
        return z * (z.abs() / norm)

    def bn(x, name):
        return sd[f"{P}{name}.weight"].view(1, -1, 1, 1) * x / (sd[f"{P}{name}.running_var"].view(1, -1, 1, 1)
                                                               + 1e-5).sqrt()

    x = F.relu(bn(conv(x, "conv1", 2, 1), "bn1"))
    x = F.relu(bn(conv(x, "conv2", 1, 1), "bn2"))
    x = F.avg_pool2d(F.relu(bn(conv(x, "conv3", 1, 1), "bn3")), 2)
    for layer in range(1, 5):
        block = 0
        while f"{P}layer{layer}.{block}.conv1.linear.weight" in sd:
            b = f"layer{layer}.{block}"
            stride = 2 if layer > 1 and block == 0 else 1
            out = F.relu(bn(conv(x, f"{b}.conv1"), f"{b}.bn1"))
            out = F.relu(bn(conv(out, f"{b}.conv2", 1, 1), f"{b}.bn2"))
            out = F.avg_pool2d(out, stride) if stride > 1 else out
            out = bn(conv(out, f"{b}.conv3"), f"{b}.bn3")
            identity = x
            if f"{P}{b}.downsample.0.linear.weight" in sd:
                pooled = F.avg_pool2d(x, stride) if stride > 1 else x
                identity = bn(conv(pooled, f"{b}.downsample.0"), f"{b}.downsample.1")
            x = F.relu(out + identity)
            block += 1
    t = x.flatten(2).permute(2, 0, 1)
    t = torch.cat([t.mean(0, keepdim=True), t])
    w = {p: sd[f"{P}attnpool.{p}_proj.weight"] for p in "qkv"}
    out, _ = F.multi_head_attention_forward(
        t[:1], t, t, t.shape[-1], heads, None, None, None, None, False, 0.0,
        sd[f"{P}attnpool.c_proj.linear.weight"], None, training=False, need_weights=False,
        use_separate_proj_weight=True, q_proj_weight=w["q"], k_proj_weight=w["k"], v_proj_weight=w["v"])
    return out[0]


@pytest.fixture(scope="module")
def official(tiny_rn, tmp_path_factory):
    """(teacher CLIP, official state dict, path of the Lightning .ckpt)."""
    teacher = tiny_rn[0]
    sd = official_state(teacher.visual)
    path = tmp_path_factory.mktemp("official") / "last.ckpt"
    torch.save(lightning_checkpoint(sd), path)
    return teacher, sd, path


@pytest.fixture(scope="module")
def imported(official):
    teacher, _, path = official
    return import_official(path, teacher)


def test_key_mapping_key_by_key(official, imported):
    _, sd, _ = official
    model, _, info = imported
    state = model.state_dict()
    expected = {  # literal spot checks of every kind of key
        f"{P}conv1.linear.weight": "visual.conv1.weight",
        f"{P}bn1.weight": "visual.bn1.weight",
        f"{P}bn1.running_var": "visual.bn1.running_var",
        f"{P}bn1.running_mean": None,
        f"{P}bn1.num_batches_tracked": None,
        f"{P}layer2.0.downsample.0.linear.weight": "visual.layer2.0.downsample.0.weight",
        f"{P}layer2.0.downsample.1.running_var": "visual.layer2.0.downsample.1.running_var",
        f"{P}attnpool.q_proj.weight": "visual.attnpool.q_proj.weight",
        f"{P}attnpool.v_proj.weight": "visual.attnpool.v_proj.weight",
        f"{P}attnpool.c_proj.linear.weight": "visual.attnpool.c_proj.weight",
    }
    for key, target in expected.items():
        assert official_key(key[len(P):]) == target, key
    loaded = set()
    for key, tensor in sd.items():
        if key.startswith("clip_model."):
            continue
        name = key[len(P):]
        if name.endswith((".running_mean", ".num_batches_tracked")):
            assert official_key(name) is None
            continue
        target = "visual." + (name.replace(".linear.weight", ".weight"))
        assert official_key(name) == target
        assert torch.equal(state[target], tensor), key
        loaded.add(target)
    visual_keys = {k for k in state if k.startswith("visual.")}
    assert loaded == visual_keys  # every tower tensor comes from the checkpoint, nothing else
    assert info["tensors_loaded"] == len(visual_keys) and info["epoch"] == 89
    assert info["experiment_name"].startswith("resnet_50_clip_b2") and info["teacher_visual"] == \
        "from the checkpoint"


def test_import_reproduces_their_forward(official, imported, tiny_rn):
    teacher, sd, _ = official
    model, _, _ = imported
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    pp = model.source["preprocess_cfg"]
    with torch.no_grad():
        ref = reference_forward(sd, images, pp["mean"], pp["std"], teacher.visual.attnpool.num_heads)
        out = model.encode_image(images)
    assert ref.abs().max() > 1e-3 and torch.isfinite(ref).all()
    assert ((out - ref).norm() / ref.norm()).item() < 1e-5
    assert model.spec == OFFICIAL_SPEC
    pool = model.visual.attnpool
    assert pool.positional_embedding is None and pool.v_proj.b == 1.0 and pool.c_proj.b == 1.0
    assert model.visual.conv1.b == 2.0 and model.visual.layer1[0].conv2.b == 2.0
    tokens = model.tokenizer(["a dog"])  # text tower from the teacher
    assert torch.equal(model.encode_text(tokens), teacher.encode_text(tokens))
    # explanations: the Normalize6 offset is not in the pixel contributions but in the measured bias
    expl = bcos_clip.explain(model, images, ["a dog", "a cat"])
    total = expl.contributions.sum((-2, -1)) + expl.bias
    assert (total - expl.scores).abs().max() <= 1e-6 + 1e-4 * expl.scores.abs().max()
    assert expl.bias.abs().max() > 1e-3


def test_stripped_and_ema_forms(official, imported, tmp_path):
    teacher, sd, _ = official
    model = imported[0]
    stripped = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    torch.save(stripped, tmp_path / "stripped.pth")
    again, _, info = import_official(tmp_path / "stripped.pth", teacher)
    assert info["teacher_visual"].startswith("from --teacher")
    assert all(torch.equal(again.visual.state_dict()[k], v) for k, v in model.visual.state_dict().items())
    ema = {("ema.module." + k[len("model."):] if k.startswith(P) else k): v for k, v in sd.items()}
    torch.save(lightning_checkpoint(ema), tmp_path / "ema.ckpt")
    with pytest.raises(ValueError, match="no EMA weights"):
        import_official(tmp_path / "stripped.pth", teacher, ema=True)
    from_ema, _, _ = import_official(tmp_path / "ema.ckpt", teacher, ema=True)
    assert torch.equal(from_ema.visual.conv1.weight, model.visual.conv1.weight)


def test_mismatching_checkpoint_lists_keys(official, tmp_path):
    teacher, sd, _ = official
    bad = dict(sd)
    bad.pop(f"{P}layer1.0.conv2.linear.weight")
    bad[f"{P}layer1.0.conv1.bias"] = torch.zeros(3)
    bad[f"{P}attnpool.v_proj.weight"] = torch.zeros(5, 5)
    torch.save(lightning_checkpoint(bad), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError) as err:
        import_official(tmp_path / "bad.ckpt", teacher)
    msg = str(err.value)
    assert "missing keys: layer1.0.conv2.weight" in msg and "unexpected keys: layer1.0.conv1.bias" in msg
    assert "attnpool.v_proj.weight: expected" in msg and "\n" not in msg


class NotATensor:  # stands in for a custom object pickled into a checkpoint
    pass


def test_cli_import_official_end_to_end(official, imported, tmp_path, capsys):
    teacher, sd, path = official
    cfg = teacher.bcos_clip_source["model_cfg"]
    (tmp_path / "rn.json").write_text(json.dumps(cfg))
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    out = tmp_path / "imported"
    rc = main(["import-official", str(path), "--out", str(out), "--teacher", str(tmp_path / "rn.json"),
               "--pretrained", str(tmp_path / "teacher.pt")])
    assert rc == 0, capsys.readouterr().err
    loaded = bcos_clip.load(out)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), imported[0].encode_image(images), rtol=1e-5, atol=1e-6)
    assert loaded.spec == OFFICIAL_SPEC and (out / "teacher_visual.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["official"]["global_step"] == 450450
    # a pickled custom object: refused without --trust-pickle, one line
    torch.save({**lightning_checkpoint(sd), "callbacks": NotATensor()}, tmp_path / "pickled.ckpt")
    rc = main(["import-official", str(tmp_path / "pickled.ckpt"), "--out", str(tmp_path / "x"),
               "--teacher", str(tmp_path / "rn.json"), "--pretrained", str(tmp_path / "teacher.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    rc = main(["import-official", str(tmp_path / "pickled.ckpt"), "--out", str(tmp_path / "x"), "--trust-pickle",
               "--teacher", str(tmp_path / "rn.json"), "--pretrained", str(tmp_path / "teacher.pt")])
    assert rc == 0


def test_cli_errors_are_one_line(official, tmp_path, capsys):
    teacher, sd, _ = official
    bad = {k: v for k, v in sd.items() if "layer3" not in k}
    torch.save(lightning_checkpoint(bad), tmp_path / "bad.ckpt")
    (tmp_path / "rn.json").write_text(json.dumps(teacher.bcos_clip_source["model_cfg"]))
    for name, expected in (("bad.ckpt", "missing keys: layer3.0"), ("nope.ckpt", "checkpoint not found")):
        rc = main(["import-official", str(tmp_path / name), "--out", str(tmp_path / "o"),
                   "--teacher", str(tmp_path / "rn.json"), "--pretrained", "none"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


@pytest.mark.slow
def test_full_size_rn50_layout():
    """The real RN50 architecture: every official key maps, and the import equals the reference forward."""
    from bcos_clip.models.official import OfficialCheckpoint
    torch.manual_seed(0)
    teacher, _, _ = bcos_clip.load_clip("RN50")
    sd = official_state(teacher.visual)
    tower = {k[len(P):]: v for k, v in sd.items() if k.startswith(P)}
    n_conv = 3 + 3 * 16 + 4  # stem, 16 bottlenecks, 4 downsamples; as many BNs (4 tensors each)
    assert len(tower) == n_conv + 4 * n_conv + 4
    model, _, info = import_official(OfficialCheckpoint(tower, None, {"file": "synthetic-rn50"}), teacher)
    assert info["tensors_loaded"] == len(model.visual.state_dict()) == n_conv + 2 * n_conv + 4
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pp = model.source["preprocess_cfg"]
    with torch.no_grad():
        ref = reference_forward(sd, images, pp["mean"], pp["std"], teacher.visual.attnpool.num_heads)
        out = model.encode_image(images)
    assert torch.isfinite(ref).all() and ref.abs().max() > 0
    assert ((out - ref).norm() / ref.norm()).item() < 1e-4
