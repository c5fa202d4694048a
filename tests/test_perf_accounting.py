"""The accounting of `bcos-clip bench --memory / --model-cost`: CUDA autocast dtypes on CPU, saved bytes
on real and fake tensors, the op counter's FLOPs / bytes / kernels, the validation against measured rows,
and the memory targets on tiny towers (fast, CPU)."""
import json

import pytest
import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.apps.bench import validate as bench_validate
from bcos_clip.apps.bench.cost import DEVICE_SPECS, CostCounter, KernelStandIn, Op, count_step, op_time
from bcos_clip.apps.bench.dtypes import cuda_policy
from bcos_clip.apps.bench.memory import account, linearity
from bcos_clip.apps.bench.step import ModuleStack, subject
from bcos_clip.apps.bench.towers import build_modelset
from bcos_clip.nn import fused, fused_triton


@pytest.fixture(scope="module")
def tiny_sets():
    return {name: build_modelset(name, torch.device("cpu"), quick=True) for name in ("RN50", "ViT-B-16")}


def test_cuda_policy_gives_cuda_autocast_dtypes_and_is_removed_on_exit():
    x = torch.randn(3, 8, requires_grad=True)
    w = torch.randn(8, 8)
    with cuda_policy():
        y = F.linear(x, w)
        assert y.dtype == torch.bfloat16
        assert F.layer_norm(y, (8,)).dtype == torch.float32  # fp32 list
        assert y.sum().dtype == torch.float32 and y.softmax(-1).dtype == torch.float32  # set_opt_dtype
        assert y.softmax(-1, dtype=torch.bfloat16).dtype == torch.bfloat16
        assert (y * y).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.layer_norm(F.linear(x, w), (8,)).dtype == torch.bfloat16  # CPU autocast again


@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_fake_and_real_accounts_agree_and_grow_linearly(tiny_sets, name):
    sub = subject(tiny_sets[name], "bcos-fast")
    real, fake = account(sub, 2, fake=False), account(sub, 2, fake=True)
    # the meta kernel of layer_norm returns bf16 row statistics where the CPU kernel returns fp32
    assert fake.total_bytes == pytest.approx(real.total_bytes, rel=0.01)
    assert fake.weight_cast_bytes == real.weight_cast_bytes > 0
    lin = linearity(sub, (2, 4), 16)
    assert lin["rel_diff"] < 0.01 and lin["per_image_mib"] > 0


@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_fast_towers_save_at_most_1_25x_the_plain_tower(tiny_sets, name):
    """The issue's memory target, on the tiny towers (the full towers: bench --memory, README)."""
    plain = account(subject(tiny_sets[name], "plain"), 16).activation_bytes
    fast = account(subject(tiny_sets[name], "bcos-fast"), 16).activation_bytes
    v1 = account(subject(tiny_sets[name], "bcos-fast-v1"), 16).activation_bytes
    assert fast <= 1.25 * plain, fast / plain
    assert fast < v1  # the fast path of 2026-11-26 kept more


def test_saved_storages_are_counted_once_with_module_and_kind():
    lin = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())

    class Sub:
        model, variant, tower, image_size, embed_dim, channels_last = "t", "plain", lin, 4, 8, False

        @staticmethod
        def prep(x):
            return x.flatten(1)[:, :8]

    acc = account(Sub(), 3, policy="fp32", fake=False)
    kinds = {s.kind for s in acc.saved}
    assert {"linear", "activation"} <= kinds
    keys = [(s.module, s.producer) for s in acc.saved]
    assert len(keys) == len(set(keys))


def test_counter_flops_bytes_views_and_launches():
    stack = ModuleStack(torch.nn.Identity())
    counter = CostCounter(stack)
    a, b, row = torch.randn(16, 32), torch.randn(32, 8), torch.ones(32)
    with counter:
        a.mm(b)
        a.t()  # a view: no kernel
        a + row.expand(16, 32)  # a broadcast operand counts once
    names = [op.op for op in counter.ops]
    assert names == ["mm", "add"]
    mm, add = counter.ops
    assert mm.flops == 2 * 16 * 32 * 8 and mm.matmul
    assert mm.bytes == 4 * (16 * 32 + 32 * 8 + 16 * 8)
    assert add.bytes == 4 * (16 * 32 + 32 + 16 * 32) and not add.matmul


def test_stand_in_kernels_count_as_one_kernel_each():
    stack = ModuleStack(torch.nn.Identity())
    counter = CostCounter(stack)
    layer = bnn.BcosLinear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    with fused.kernel_stand_in(KernelStandIn(counter)), counter:
        layer(x).sum().backward()
    names = [op.op for op in counter.ops]
    for k in ("triton:sumsq", "triton:scale_fwd", "triton:scale_bwd"):
        assert names.count(k) == 1, names
    ref = layer(x)
    with fused.fast_path(False):
        assert torch.allclose(ref, layer(x), rtol=1e-5, atol=1e-6)


def test_conv_batchnorm_pair_counts_its_shared_kernels_and_no_statistics_pass():
    """nn.fused_conv_bn under the stand-in: the statistics come from the scale kernel (no
    batch_norm_update_stats pass), the backward adds no per-channel pass, the partials at the Triton shape."""
    pair = torch.nn.Sequential(bnn.BcosConv2d(4, 6, 3, padding=1), bnn.UncenteredBatchNorm2d(6)).train()
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    ops = {}
    for feats in (None, [f for f in fused.FEATURES if f != "conv_bn"]):
        counter = CostCounter(ModuleStack(pair))
        with fused.fast_path(True, features=feats), fused.kernel_stand_in(KernelStandIn(counter)), counter:
            pair(x).sum().backward()
        ops[feats is None] = counter.ops
    names = [op.op for op in ops[True]]
    for k in ("triton:sumsq", "triton:scale_fwd_stats", "triton:bn_finalize", "triton:scale_bwd",
              "native_batch_norm", "native_batch_norm_backward", "convolution_backward"):
        assert names.count(k) == 1, names
    assert "batch_norm_update_stats" not in names and "add_" not in names
    assert "batch_norm_update_stats" in [op.op for op in ops[False]]
    assert sum(op.launches for op in ops[True]) < sum(op.launches for op in ops[False])
    stats = next(op for op in ops[True] if op.op == "triton:scale_fwd_stats")
    rows = fused_triton.stats_rows(torch.empty(2, 6, 9, 9))
    assert stats.bytes == (2 * 6 * 81) * 8 + 2 * 81 * 4 + rows * (2 * 6 + 1) * 4  # z, y, s, partials


def test_roofline_time_of_an_op():
    spec = DEVICE_SPECS["h200"]
    big_mm = Op("forward", "mm", "m", "linear", int(2e12), int(1e6), 1, True, True)
    copy = Op("forward", "copy_", "m", "tower", 0, int(4.8e9), 1, False, True)
    assert op_time(big_mm, spec) == pytest.approx(2e12 / spec.matmul_flops + spec.launch_s)
    assert op_time(copy, spec) == pytest.approx(1e-3 + spec.launch_s)


def test_cost_of_tiny_towers_orders_the_variants(tiny_sets):
    spec = DEVICE_SPECS["h200"]
    for name in ("RN50", "ViT-B-16"):
        t = {v: count_step(subject(tiny_sets[name], v), 8).totals(spec)["step_s"]
             for v in ("plain", "bcos-reference", "bcos-fast-v1", "bcos-fast")}
        assert t["bcos-fast"] < t["bcos-fast-v1"] < t["bcos-reference"], t


def _row(section, model, variant, ms, mem=None):
    return {"section": section, "model": model, "variant": variant, "batch": 128, "compiled": False,
            "ms": ms, "peak_mem_gib": mem}


def test_validation_errors_and_the_modelled_code(tmp_path):
    measured = {"environment": {"device_name": "GPU X"},
                "rows": [_row("train", "RN50", "plain", 40.0, 6.0), _row("train", "RN50", "bcos-fast", 80.0, 12.0),
                         _row("train_fwd", "RN50", "plain", 20.0), _row("train_fwd", "RN50", "bcos-fast", 30.0)]}
    pred = {"RN50": {"plain": {"forward_ms": 10.0, "step_ms": 20.0},
                     "bcos-fast-v1": {"forward_ms": 20.0, "step_ms": 50.0}}}
    rows = {(r["row"], r["variant"]): r for r in bench_validate.validate_cost(pred, measured, 128)}
    assert rows[("step", "bcos-fast")]["modelled_as"] == "bcos-fast-v1"  # no fast_features: the old code
    assert rows[("step", "bcos-fast")]["error"] == pytest.approx(2.5 / 2.0 - 1)
    assert rows[("forward", "bcos-fast")]["error"] == pytest.approx(2.0 / 1.5 - 1)
    measured["fast_features"] = list(fused.FEATURES)
    assert bench_validate.modelled_variant(measured, "bcos-fast") == "bcos-fast"
    mem = bench_validate.validate_memory({"RN50": {"plain": 5.0, "bcos-fast": 11.0}},
                                         {"RN50": {"plain": 1.0, "bcos-fast": 1.0}}, measured, 128)
    fast = next(r for r in mem if r["variant"] == "bcos-fast")
    assert fast["predicted_ratio"] == pytest.approx(2.0) and fast["measured_ratio"] == pytest.approx(2.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        bench_validate.load_measured(str(bad))
    bad.write_text(json.dumps({"rows": 3}))
    with pytest.raises(ValueError, match="'rows' list"):
        bench_validate.load_measured(str(bad))


def test_default_measured_rows_are_the_repositorys_h200_run():
    """Without --measured the accounting validates against benchmarks/results/h200_bench_2026-11-26.json
    (the house move had left the default pointing inside the package: no validation, silently)."""
    measured = bench_validate.load_measured(None)
    assert measured is not None and measured["rows"]
    assert bench_validate.device_of(measured).endswith("benchmarks/results/h200_bench_2026-11-26.json)")
