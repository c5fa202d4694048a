"""`bcos-clip bench --quick` as a smoke test: every section runs on CPU and the JSON holds its rows
(no timing assertions: timings of a shared CI machine mean nothing)."""
import json

import pytest

from bcos_clip.cli import main


@pytest.mark.slow
def test_bench_quick_writes_rows_targets_and_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    failed = [r for r in rows if r.get("status", "ok") not in ("ok", "skipped")]
    assert not failed, failed
    by_section = {}
    for r in rows:
        by_section.setdefault(r.get("section"), []).append(r)
    for section in ("train", "train_fwd", "infer", "explain", "zeroshot", "e2e"):
        assert any(r.get("status", "ok") == "ok" for r in by_section.get(section, [])), section
    variants = {r["variant"] for r in by_section["train"]}
    assert {"plain", "bcos-reference", "bcos-formula", "bcos-fast"} <= variants
    fast = [r for r in by_section["train"] if r["variant"] == "bcos-fast"]
    assert all("ratio_vs_plain" in r and "speedup_vs_reference" in r for r in fast)
    assert {t["target"].split(" ")[0] for t in result["targets"]} >= {"RN50", "ViT-B-16", "explanations:"}
    assert result["environment"]["device"] == "cpu"
    printed = capsys.readouterr().out
    assert "| row | img/s |" in printed and "| target |" in printed


def test_bench_rejects_bad_flags():
    from bcos_clip.apps.bench.run import BenchConfig

    with pytest.raises(ValueError, match="unknown sections"):
        BenchConfig(sections=("train", "nope"))
    with pytest.raises(ValueError, match="--compile"):
        BenchConfig(compile="maybe")


def test_quick_config_is_resolved_into_a_new_one_not_mutated():
    import dataclasses

    from bcos_clip.apps.bench.run import BenchConfig

    cfg = BenchConfig(quick=True, compile_batch=128, explain_ks=(1, 16, 256))
    assert (cfg.batches, cfg.iters, cfg.workers) == ((64, 128, 256), 10, 8)  # as given: frozen, untouched
    quick = cfg.resolved()
    assert (quick.compile_batch, quick.batches, quick.iters, quick.warmup) == (4, (4,), 1, 1)
    assert (quick.explain_ks, quick.workers, quick.threads) == ((1, 16), 0, 1)
    assert dataclasses.replace(quick, quick=False).resolved() == dataclasses.replace(quick, quick=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iters = 3


@pytest.mark.slow
def test_bench_quick_memory_and_model_cost_smoke(tmp_path, capsys):
    """`bcos-clip bench --quick --memory --model-cost --output FILE.json`: the accounting alone, on CPU."""
    out = tmp_path / "acc.json"
    assert main(["bench", "--quick", "--memory", "--model-cost", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == []  # no timed section unless asked for
    acc = result["accounting"]
    for model in ("RN50", "ViT-B-16"):
        variants = acc["memory"][model]["variants"]
        assert variants["bcos-fast"]["saved_mib"] > 0 and variants["plain"]["ratio_vs_plain"] == 1.0
        assert {"layernorm", "linear"} & set(variants["bcos-fast"]["by_kind_mib"]) or model == "RN50"
        cost = acc["cost"]["towers"][model]["bcos-fast"]
        assert cost["step_ms"] > cost["forward_ms"] > 0 and cost["launches"] > 0 and cost["top_ops"]
        assert all(r["rel_diff"] < 0.01 for r in acc["memory"][model]["linearity"])
    assert acc["cost"]["device_spec"]["name"] == "NVIDIA H200 SXM"
    assert "## Saved for backward" in capsys.readouterr().out
