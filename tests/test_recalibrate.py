"""`bcos_clip.recalibrate_batchnorm` and `bcos-clip bcosify --calibrate-data`: the refitted statistics
equal a float64 twin computed here, only BatchNorm buffers change, the B = 1 equivalence is untouched,
and a degenerate tower comes back to life."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import bcos_clip
from bcos_clip.cli import main
from bcos_clip.nn.norms import UncenteredBatchNorm2d
from tests._train_data import image_bytes, write_img2dataset, write_tiny_teacher, write_wds_classification
from tests.conftest import TINY_RN


@pytest.fixture(scope="module")
def raw_rn():
    torch.manual_seed(0)
    return bcos_clip.load_clip("RN50", **TINY_RN)[0]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _bns(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, UncenteredBatchNorm2d)}


@torch.no_grad()
def twin_statistics(model, batches):
    """The refit computed directly: a float64 copy, BatchNorms in training mode (batch statistics), every
    other module in eval mode; per layer the image-weighted mean of each batch's unbiased variance."""
    twin = copy.deepcopy(model).double().eval()
    seen = {n: [] for n in _bns(twin)}
    hooks = []
    for name, bn in _bns(twin).items():
        bn.train()
        hooks.append(bn.register_forward_pre_hook(lambda mod, inp, name=name: seen[name].append(inp[0].clone())))
    for x in batches:
        twin.encode_image(x.double())
    for h in hooks:
        h.remove()
    out = {}
    for name, xs in seen.items():
        total = sum(x.shape[0] for x in xs)
        acc = 0
        for x in xs:
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
            dev = flat - flat.mean(1, keepdim=True)
            acc = acc + x.shape[0] * (dev * dev).sum(1) / max(flat.shape[1] - 1, 1)
        out[name] = acc / total
    return out


def test_a_zero_tower_comes_back_and_matches_the_float64_twin(raw_rn):
    model = bcos_clip.bcosify(raw_rn, b=2.0).eval()
    x = _images(10)
    assert torch.count_nonzero(model.encode_image(x)) == 0  # the degenerate tower of issue 13
    expected = twin_statistics(model, [x[:4], x[4:8], x[8:]])
    report = bcos_clip.recalibrate_batchnorm(model, x, batch_size=4)
    assert (report.images, report.batches, report.skipped_with_bias) == (10, 3, [])
    assert sorted(report.refitted) == sorted(expected) and len(expected) > 10
    for name, bn in _bns(model).items():
        torch.testing.assert_close(bn.running_var.double(), expected[name], rtol=2e-4, atol=0)
    with torch.no_grad():
        emb = model.encode_image(_images(6, seed=1))
    norms = emb.norm(dim=-1)
    assert torch.isfinite(norms).all() and (norms > 1e-3).all()
    cos = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
    assert cos.min() < 0.999  # not one constant direction either


def test_only_batchnorm_buffers_change_and_modes_are_restored(tiny_rn_bcos):
    model = copy.deepcopy(tiny_rn_bcos).train()
    model.visual.layer1.eval()  # a mixed state must come back exactly
    modes = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_images(12), torch.arange(12)), batch_size=5)
    report = bcos_clip.recalibrate_batchnorm(model, loader, batches=2)
    assert (report.images, report.batches) == (10, 2)  # (images, labels) tuples, stopped after 2 batches
    assert {n: m.training for n, m in model.named_modules()} == modes
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{n}.running_var" for n in report.refitted}
    assert all(p.grad is None for p in model.parameters())


def test_b1_bias_equivalence_is_untouched(tiny_rn):
    clip = tiny_rn[0].eval()
    exact = bcos_clip.bcosify(clip, b=1.0, bias=True).eval()
    state = {k: v.clone() for k, v in exact.state_dict().items()}
    with pytest.raises(ValueError, match="bias folded from the plain model's statistics"):
        bcos_clip.recalibrate_batchnorm(exact, _images(4))
    assert all(torch.equal(v, state[k]) for k, v in exact.state_dict().items())
    x = _images(3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(exact.encode_image(x), clip.encode_image(exact.teacher_preprocess.transforms[-1](x)),
                                   rtol=1e-4, atol=1e-5)


def test_inputs_and_errors(tiny_rn_bcos, tiny_vit_bcos):
    model = copy.deepcopy(tiny_rn_bcos)
    saved = {n: bn.running_var.clone() for n, bn in _bns(model).items()}

    def broken():
        yield _images(2)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        bcos_clip.recalibrate_batchnorm(model, broken())
    assert all(torch.equal(bn.running_var, saved[n]) for n, bn in _bns(model).items())  # nothing half-done
    with pytest.raises(ValueError, match="no image"):
        bcos_clip.recalibrate_batchnorm(model, [])
    with pytest.raises(ValueError, match="must be an"):
        bcos_clip.recalibrate_batchnorm(model, [torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="batches must be >= 1"):
        bcos_clip.recalibrate_batchnorm(model, _images(2), batches=0)
    with pytest.raises(ValueError, match="no uncentered BatchNorm"):
        bcos_clip.recalibrate_batchnorm(tiny_vit_bcos, torch.rand(2, 3, 32, 32))
    u8 = (_images(4) * 255).round().to(torch.uint8)
    as_dicts = copy.deepcopy(tiny_rn_bcos)
    bcos_clip.recalibrate_batchnorm(as_dicts, [{"images": u8}])
    bcos_clip.recalibrate_batchnorm(model, u8.float() / 255)
    assert all(torch.allclose(a.running_var, b.running_var) for a, b in zip(_bns(as_dicts).values(), _bns(model).values()))


@pytest.mark.parametrize("kind", ["wds", "shards", "folder"])
def test_bcosify_cli_calibrates_from_each_source(raw_rn, tmp_path, capsys, kind):
    teacher = write_tiny_teacher(tmp_path / "teacher", model=raw_rn)
    if kind == "wds":
        data = write_wds_classification(tmp_path / "wds", n=12)
    elif kind == "shards":
        data = str(tmp_path / "shards")
        write_img2dataset(tmp_path / "shards", n_shards=2, per_shard=6)
    else:
        data = tmp_path / "images" / "sub"
        data.mkdir(parents=True)
        for i in range(12):
            (data / f"{i}.jpg").write_bytes(image_bytes(i))
        (data / "broken.jpg").write_bytes(b"not a jpeg")
        data = str(data.parent)
    out = tmp_path / "ckpt"
    rc = main(["bcosify", "--model", teacher[0], "--pretrained", teacher[1], "--calibrate-data", data,
               "--calibrate-batches", "3", "--calibrate-batch-size", "4", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "refitted the running variance of" in capsys.readouterr().out
    info = json.loads((out / "config.json").read_text())["extra"]["batchnorm_recalibration"]
    assert info["images"] == 12 and info["batches"] == 3 and info["data"] == data
    assert json.loads((out / "conversion_report.json").read_text())["batchnorm_recalibration"] == info
    with torch.no_grad():
        emb = bcos_clip.load(out).encode_image(_images(2))
    assert (emb.norm(dim=-1) > 0).all()


def test_bcosify_cli_calibration_errors(tmp_path, capsys, tiny_rn):
    teacher = write_tiny_teacher(tmp_path / "teacher", model=tiny_rn[0])
    base = ["bcosify", "--model", teacher[0], "--pretrained", teacher[1], "--output", str(tmp_path / "o")]
    (tmp_path / "empty").mkdir()
    cases = [(["--calibrate-data", str(tmp_path / "nowhere")], "no such folder"),
             (["--calibrate-data", str(tmp_path / "empty")], "empty: folder"),
             (["--calibrate-batches", "2"], "need --calibrate-data"),
             (["--calibrate-data", str(tmp_path), "--calibrate-batch-size", "0"], "--calibrate-batch-size must be >= 1"),
             (["--calibrate-data", str(tmp_path / "wds"), "--b", "1", "--bias"], "bias folded")]
    write_wds_classification(tmp_path / "wds", n=2)
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
