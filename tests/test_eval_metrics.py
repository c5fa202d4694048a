"""Metrics against plain-loop references, the linear probe, result JSON, suites and reports
(no model needed)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bcos_clip.evaluation.linear_probe import (WD_GRID, ProbeConfig, fewshot_indices, fit_and_evaluate,
                                               save_probe, search_weight_decay, train_probe)
from bcos_clip.evaluation.metrics import (classification_metrics, mean_average_precision, retrieval_metrics)
from bcos_clip.evaluation.report import build_report
from bcos_clip.evaluation.results import make_record, read_results, result_path, write_record
from bcos_clip.evaluation.suite_files import load_groups, load_suite


# --------------------------------------------------------------------------- references (loops)


def ref_classification(logits: np.ndarray, y: np.ndarray) -> dict:
    n, c = logits.shape
    order = [sorted(range(c), key=lambda j: -logits[i, j]) for i in range(n)]
    acc1 = sum(order[i][0] == y[i] for i in range(n)) / n
    acc5 = sum(y[i] in order[i][:5] for i in range(n)) / n if c >= 5 else None
    recalls = [sum(order[i][0] == k for i in range(n) if y[i] == k) / sum(y == k) for k in range(c) if (y == k).any()]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": sum(recalls) / len(recalls)}


def ref_map(scores: np.ndarray, t: np.ndarray) -> float:
    """Mean over *all* classes of the non-interpolated AP, a class without positives counting 0
    (CLIP_benchmark's mAP); entries < 0 ("difficult") are left out of their class's ranking."""
    aps = []
    for j in range(scores.shape[1]):
        keep = [i for i in range(len(t)) if t[i, j] >= 0]
        ranked = sorted(keep, key=lambda i: -scores[i, j])
        hits, precs = 0, []
        for r, i in enumerate(ranked, 1):
            if t[i, j] > 0:
                hits += 1
                precs.append(hits / r)
        aps.append(sum(precs) / len(precs) if precs else 0.0)
    return sum(aps) / len(aps)


def ref_retrieval(img: np.ndarray, txt: np.ndarray, t2i: list, k: int) -> tuple:
    s = img @ txt.T
    img_r = np.mean([t2i[t] in np.argsort(-s[:, t])[:k] for t in range(len(t2i))])
    txt_r = np.mean([any(t2i[t] == i for t in np.argsort(-s[i])[:k]) for i in range(len(img))])
    return img_r, txt_r


def test_classification_metrics_match_loops():
    g = torch.Generator().manual_seed(0)
    for c in (3, 7):
        logits, y = torch.randn(40, c, generator=g), torch.randint(0, c, (40,), generator=g)
        got, ref = classification_metrics(logits, y), ref_classification(logits.numpy(), y.numpy())
        for key in ref:
            assert (got[key] is None) == (ref[key] is None)
            if ref[key] is not None:
                assert got[key] == pytest.approx(ref[key], abs=1e-12)


def test_map_counts_classes_without_positives_as_zero():
    # 4 images, 3 classes; class 2 has no positive image. Per-class AP: 1, 1/2 (its positive ranks second),
    # 0 -> CLIP_benchmark's mAP (1 + 0.5 + 0) / 3 = 0.5, where dropping the empty class would give 0.75.
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.1, 0.7, 0.2], [0.3, 0.2, 0.9]])
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)
    assert mean_average_precision(scores, targets) == pytest.approx(0.5)
    assert mean_average_precision(scores, targets) == pytest.approx(ref_map(scores.numpy(), targets.numpy()))
    assert mean_average_precision(scores[:, :2], targets[:, :2]) == pytest.approx(0.75)


def test_map_and_retrieval_match_loops():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(30, 5, generator=g)
    targets = (torch.rand(30, 5, generator=g) < 0.3).float()
    targets[0, :] = -1  # "difficult": ignored
    assert mean_average_precision(scores, targets) == pytest.approx(ref_map(scores.numpy(), targets.numpy()))
    img = torch.nn.functional.normalize(torch.randn(9, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(18, 8, generator=g), dim=-1)
    t2i = [i // 2 for i in range(18)]
    got = retrieval_metrics(img, txt, torch.tensor(t2i), ks=(1, 5))
    for k in (1, 5):
        ir, tr = ref_retrieval(img.numpy(), txt.numpy(), t2i, k)
        assert got[f"image_retrieval_recall@{k}"] == pytest.approx(ir)
        assert got[f"text_retrieval_recall@{k}"] == pytest.approx(tr)


# --------------------------------------------------------------------------- linear probe


def separable(n_per_class: int, classes: int = 4, dim: int = 16, seed: int = 0):
    centers = torch.nn.functional.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)),
                                            dim=-1) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[y] + 0.3 * torch.randn(len(y), dim, generator=g)
    return torch.nn.functional.normalize(x, dim=-1), y


def test_probe_on_separable_features_is_perfect(tmp_path):
    train, test = separable(30), separable(10, seed=1)
    assert np.linalg.matrix_rank(train[0].numpy()) > 1
    probe, metrics, used = fit_and_evaluate(train, test, 4, ProbeConfig(epochs=20))
    assert metrics["lp_acc1"] == 1.0 and metrics["lp_mean_per_class_recall"] == 1.0 and metrics["lp_acc5"] is None
    assert used["n_train"] == 120 and used["weight_decay"] == 0.0
    again = train_probe(*train, 4, ProbeConfig(epochs=20), 0.0)
    assert torch.equal(again.weight, probe.weight)  # deterministic
    path = save_probe(probe, tmp_path / "head.safetensors", ["a", "b", "c", "d"], used)
    head = load_file(str(path))
    assert torch.equal(head["weight"], probe.weight) and head["bias"].shape == (4,)


def test_fewshot_is_seeded_and_balanced():
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)
    a, b, c = fewshot_indices(y, 4, 0), fewshot_indices(y, 4, 0), fewshot_indices(y, 4, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(y[a]).tolist() == [4, 4, 4] and len(set(a.tolist())) == 12
    with pytest.raises(ValueError, match="class 2 has only 5"):
        fewshot_indices(y, 6, 0)
    _, _, used = fit_and_evaluate(separable(8), separable(3, seed=2), 4, ProbeConfig(fewshot_k=2, epochs=2))
    assert used["n_train"] == 8


def test_weight_decay_search_on_validation():
    train, val = separable(20, seed=3), separable(10, seed=4)
    wd, tried = search_weight_decay(train, val, 4, ProbeConfig(epochs=3))
    assert wd in WD_GRID and 9 <= len(tried) <= 17
    assert tried[f"{wd:.3e}"] == max(tried.values())
    assert wd == WD_GRID[0]  # separable: the small decays tie at 100%, ties go to the smaller decay
    _, metrics, used = fit_and_evaluate(train, val, 4, ProbeConfig(epochs=3, val_proportion=0.25))
    assert used["wd_search"] and used["n_train"] == 80 and metrics["lp_acc1"] == 1.0


# --------------------------------------------------------------------------- results, suites, report


def test_results_are_strict_json_without_nan(tmp_path):
    rec = make_record(dataset="vtab/x", model="runs/student", pretrained=None, label="student",
                      task="zeroshot_classification", metrics={"acc1": 0.5, "acc5": float("nan")},
                      n_samples=np.int64(3), extra=[float("inf"), torch.tensor(0.25)])
    path = write_record(result_path(tmp_path, "vtab/x", "student", rec["task"]), rec)
    assert path.name == "vtab-x__student__zeroshot_classification.json"
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["metrics"]["acc5"] is None and data["extra"] == [None, 0.25] and data["n_samples"] == 3
    assert {"dataset", "model", "pretrained", "task", "metrics", "language"} <= set(data)
    assert data["versions"]["torch"]


def test_suites_and_groups_ship_with_the_package():
    groups = load_groups()
    clip = load_suite("clip_benchmark")
    names = {e.dataset for e in clip.entries}
    assert len(names) == 41 and {"imagenet1k", "vtab/pcam", "vtab/dmlab", "flickr30k"} <= names
    assert all(e.group == groups[e.dataset] for e in clip.entries)
    counts = {g: sum(e.group == g for e in clip.entries) for g in ("natural", "specialized", "structured")}
    assert counts == {"natural": 22, "specialized": 7, "structured": 9}
    lp = load_suite("eval/suites/linear_probe.yaml")
    assert len(lp.entries) == 29 and {e.task for e in lp.entries} == {"linear_probe"}
    demo = load_suite("demo")
    from bcos_clip.data.shapes.world import DEMO_TASKS, RETRIEVAL_TASK

    assert {e.dataset: e.group for e in demo.entries if e.task != "zeroshot_retrieval"} == DEMO_TASKS
    assert [e.dataset for e in demo.entries if e.task == "zeroshot_retrieval"] == [RETRIEVAL_TASK]


def _write(tmp_path, dataset, label, task, metrics, group=None, status="ok", bcos=False):
    rec = make_record(dataset=dataset, model=label, pretrained=None, label=label, task=task, metrics=metrics,
                      status=status, error="boom" if status != "ok" else None, group=group, is_bcos=bcos)
    write_record(result_path(tmp_path, dataset, label, task), rec)


@pytest.mark.parametrize("backend", ["matplotlib", "pillow"])
def test_report_tables_group_means_and_diffs(tmp_path, backend):
    res = tmp_path / "res"
    values = {("vtab/cifar10", "teacher"): 0.8, ("vtab/cifar10", "student"): 0.7, ("mnist", "teacher"): 0.5,
              ("mnist", "student"): 0.6, ("vtab/pets", "teacher"): 0.4, ("vtab/pets", "student"): 0.2}
    for (d, m), v in values.items():
        _write(res, d, m, "zeroshot_classification", {"acc1": v, "acc5": None}, bcos=m == "student")
    _write(res, "vtab/dmlab", "student", "zeroshot_classification", {}, status="failed", bcos=True)
    _write(res, "vtab/dmlab", "teacher", "zeroshot_classification", {"acc1": 0.3}, bcos=False)
    _write(res, "flickr30k", "teacher", "zeroshot_retrieval",
           {"image_retrieval_recall@5": 0.9, "text_retrieval_recall@5": 0.95})
    (res / "notes.json").write_text("[1, 2]")  # not a result: ignored
    paths = build_report(res, tmp_path / "rep", plot_backend=backend)
    md = paths.markdown.read_text()
    # teacher first (plain before B-cos); natural mean teacher (0.8+0.4)/2, student (0.7+0.2)/2
    assert "| group | dataset | teacher | student | Δ student |" in md
    assert "| **natural** | **mean of 2** | **60.00** | **45.00** | **-15.00** |" in md
    assert "| specialized | mnist | 50.00 | 60.00 | +10.00 |" in md
    assert "| structured | vtab/dmlab | 30.00 | failed | – |" in md and "student / vtab/dmlab: boom" in md
    assert md.index("natural") < md.index("specialized") < md.index("structured")
    assert "flickr30k (image R@5)" in md
    rows = list(csv.DictReader(paths.csv.open()))
    mean = [r for r in rows if r["dataset"] == "mean" and r["group"] == "natural" and r["model"] == "student"]
    assert float(mean[0]["value"]) == pytest.approx(0.45) and float(mean[0]["diff_to_first"]) == pytest.approx(-0.15)
    assert paths.plot.stat().st_size > 1000 and paths.plot.read_bytes()[:4] == b"\x89PNG"
    assert len(read_results(res)) == 9
    order = build_report(res, tmp_path / "rep2", models=["student", "teacher"], plot_backend=backend)
    assert "| group | dataset | student | teacher | Δ teacher |" in order.markdown.read_text()
