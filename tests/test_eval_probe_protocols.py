"""Both linear-probe protocols on tiny features. CLIP_benchmark's is checked against a reference written
the way its own code trains (global RNG seeded, ``nn.Linear``, a shuffling DataLoader, AdamW, cosine per
step): same weights to the last bit. The paper's keeps its settings (20 epochs, batch 512)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bcos_clip.evaluation import probe_clip_benchmark as cb
from bcos_clip.evaluation.linear_probe import ProbeConfig
from bcos_clip.evaluation.probe import PROTOCOLS, run_probe

LP_KEYS = {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "weight_decay", "epochs", "seed", "fewshot_k",
           "normalized"}


def blobs(n_per_class: int, classes: int = 3, dim: int = 8, seed: int = 0, noise: float = 0.8):
    centers = torch.nn.functional.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(7)), dim=-1)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat(n_per_class)
    x = centers[y] + noise * torch.randn(len(y), dim, generator=g) / math.sqrt(dim)
    return torch.nn.functional.normalize(x, dim=-1), y


def reference_train(x, y, out_dim, wd, lr, epochs, batch, seed):
    """Written as CLIP_benchmark's train(): the global RNG, nn.Linear's own init, DataLoader(shuffle=True)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Linear(x.shape[1], out_dim)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
        steps = len(loader)
        for epoch in range(epochs):
            for i, (xb, yb) in enumerate(loader):
                for group in opt.param_groups:
                    group["lr"] = 0.5 * (1 + np.cos(np.pi * (i + epoch * steps) / (epochs * steps))) * lr
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
    return model


def test_init_and_epoch_order_draw_as_torch_does():
    with torch.random.fork_rng():
        torch.manual_seed(5)
        ref = torch.nn.Linear(6, 4)
        orders = [[int(i) for b in torch.utils.data.DataLoader(range(10), batch_size=3, shuffle=True) for i in b]
                  for _ in range(2)]
    gen = torch.Generator().manual_seed(5)
    layer = cb.init_linear(6, 4, gen)
    assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)
    assert [cb.epoch_order(10, gen).tolist() for _ in range(2)] == orders


def test_training_equals_the_reference_to_the_last_bit():
    x, y = blobs(9)
    cfg = ProbeConfig(epochs=3, batch_size=4, lr=0.1, seed=3)
    ours = cb.train_head(x, y, 3, 1e-3, cfg)
    ref = reference_train(x, y, 3, 1e-3, 0.1, 3, 4, 3)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)


def test_random_split_and_fewshot_order():
    gen = torch.Generator().manual_seed(1)
    tr, va = cb.random_split_indices(11, 0.3, gen)
    parts = torch.utils.data.random_split(range(11), [0.7, 0.3], generator=torch.Generator().manual_seed(1))
    assert tr.tolist() == list(parts[0].indices) and va.tolist() == list(parts[1].indices)
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 4)
    keep = cb.fewshot_order(y, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(y[keep]).tolist() == [3, 3, 3]
    counts, expected = {}, []  # the first 3 of each class in one seeded permutation
    for i in torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist():
        counts[int(y[i])] = counts.get(int(y[i]), 0) + 1
        if counts[int(y[i])] <= 3:
            expected.append(i)
    assert keep.tolist() == expected
    assert sorted(cb.fewshot_order(y, -1, torch.Generator()).tolist()) == list(range(12))
    with pytest.raises(ValueError, match="class 1 has only 3"):
        cb.fewshot_order(y, 4, torch.Generator())


def test_weight_decay_search_follows_their_peak_rule(monkeypatch):
    assert cb.WD_COARSE == [0, 16, 32, 48, 64, 80, 96]
    seen = []

    def fake_train(x, y, out_dim, wd, cfg):
        seen.append(cb.WD_LIST.index(wd))
        return wd

    curve = lambda i: 1.0 - abs(i - 37) / 100  # noqa: E731 - one peak, at index 37
    monkeypatch.setattr(cb, "train_head", fake_train)
    monkeypatch.setattr(cb, "head_logits", lambda head, x, cfg: head)
    monkeypatch.setattr(cb, "topk_accuracy", lambda wd, y, ks: [curve(cb.WD_LIST.index(wd))])
    best, tried = cb.search_weight_decay((None, None), (None, None), 3, ProbeConfig())
    assert best == cb.WD_LIST[37] and len(seen) == len(set(seen))  # each candidate trained once
    curve = lambda i: 0.0  # noqa: E731 - nothing beats the starting accuracy 0: index 0, as theirs
    monkeypatch.setattr(cb, "topk_accuracy", lambda wd, y, ks: [curve(cb.WD_LIST.index(wd))])
    assert cb.search_weight_decay((None, None), (None, None), 3, ProbeConfig())[0] == cb.WD_LIST[0]


@pytest.mark.parametrize("fewshot_k,n_train", [(-1, 36 + 15), (2, 6)])
def test_clip_benchmark_refit_rule(fewshot_k, n_train):
    train, val, test = blobs(12), blobs(5, seed=1), blobs(4, seed=2)
    cfg = ProbeConfig(epochs=2, fewshot_k=fewshot_k).resolved(eval_batch_size=8)
    _, metrics, used = run_probe(train, test, 3, cfg, val)
    assert set(metrics) == LP_KEYS and used["n_train"] == n_train  # train+val only for full-data probes
    assert used["wd_search"] and metrics["weight_decay"] in cb.WD_LIST and used["batch_size"] == 8
    assert metrics["lp_acc5"] is None  # largest test label 2 < 5


def test_acc5_rule_and_outputs_follow_the_labels():
    train, test = blobs(4, classes=7), blobs(2, classes=7, seed=1)
    cfg = ProbeConfig(epochs=1).resolved(eval_batch_size=16)
    head, metrics, used = run_probe(train, test, 9, cfg)
    assert head.out_features == 7 and used["num_outputs"] == 7  # largest training label + 1, as theirs
    assert metrics["lp_acc5"] is not None and metrics["weight_decay"] == 0.0 and not used["wd_search"]


def test_paper_protocol_keeps_its_settings():
    train, test = blobs(10), blobs(4, seed=1)
    cfg = ProbeConfig(protocol="paper").resolved(eval_batch_size=8)
    assert (cfg.epochs, cfg.batch_size) == (20, 512)
    head, metrics, used = run_probe(train, test, 3, cfg)
    assert set(metrics) == LP_KEYS and metrics["epochs"] == 20 and used["protocol"] == "paper"
    assert torch.equal(head.weight, run_probe(train, test, 3, cfg)[0].weight)  # zero init: deterministic
    assert set(PROTOCOLS) == {"clip_benchmark", "paper"}
    with pytest.raises(ValueError, match="--probe-protocol 'sklearn'"):
        ProbeConfig(protocol="sklearn").resolved(8)
