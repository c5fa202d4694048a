"""``--probe-protocol clip_benchmark`` draws its training-set permutation where clip_benchmark 1.6.2's
global RNG stands: after ``torch.manual_seed(seed)``, the model's random init (open_clip builds it before
loading the weights), a ``--val_proportion`` split and one draw per feature DataLoader iterator. Pinned
against a reference written the way their ``cli.run`` + ``linear_probe.evaluate`` call torch, and against
``open_clip.create_model_and_transforms`` itself (what their loader calls)."""
from __future__ import annotations

import json
from typing import Callable, Optional

import open_clip
import pytest
import torch

from bcos_clip.evaluation import probe_clip_benchmark as cb
from bcos_clip.evaluation.linear_probe import ProbeConfig
from bcos_clip.evaluation.probe_rng import ClipBenchmarkRng, loader_draws, seeded_load
from tests.conftest import TINY_RN
from tests.test_eval_data import write_classification


class Stream(torch.utils.data.IterableDataset):
    """Stands in for a wds pipeline: yields batches (DataLoader ``batch_size=None``), draws nothing."""

    def __iter__(self):
        yield torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)


def reference_permutation(seed: int, build: Callable[[], object], n: int, val_proportion: Optional[float],
                          workers: int = 0):
    """As clip_benchmark runs: seed, load, split, iterate the train / (val) / test loaders, randperm."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        build()
        train = val = None
        if val_proportion:
            train, val = torch.utils.data.random_split(range(n), [1 - val_proportion, val_proportion])
        loaders = [torch.utils.data.DataLoader(train, batch_size=4, num_workers=workers)] if train else \
            [torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=workers)]
        if val is not None:
            loaders.append(torch.utils.data.DataLoader(val, batch_size=4, num_workers=workers))
        loaders.append(torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=workers))
        for loader in loaders:
            for _ in loader:
                pass
        m = len(train) if train is not None else n
        return (list(train.indices), list(val.indices)) if train else None, torch.randperm(m)


def tiny_clip() -> torch.nn.Module:
    return open_clip.CLIP(**TINY_RN)


@pytest.mark.parametrize("val_proportion", [None, 0.25])
def test_permutation_follows_their_global_rng(val_proportion):
    n, seed = 20, 3
    split, perm = reference_permutation(seed, tiny_clip, n, val_proportion)
    _, state = seeded_load(tiny_clip, seed)
    rng = ClipBenchmarkRng(seed, state, loader_draws(True, val_proportion is not None))
    gen = rng.generator()
    if val_proportion:
        tr, va = cb.random_split_indices(n, val_proportion, gen)
        assert (tr.tolist(), va.tolist()) == split
    rng.skip_loaders(gen)
    ours = cb.fewshot_order(torch.zeros(len(perm), dtype=torch.long), -1, gen)
    assert ours.tolist() == perm.tolist()
    plain = cb.fewshot_order(torch.zeros(len(perm), dtype=torch.long), -1, torch.Generator().manual_seed(seed))
    assert plain.tolist() != perm.tolist()  # the model and the loaders do move their RNG


def test_loader_draws_do_not_depend_on_workers():
    _, with_workers = reference_permutation(0, lambda: None, 12, None, workers=1)
    _, without = reference_permutation(0, lambda: None, 12, None, workers=0)
    assert with_workers.tolist() == without.tolist()


def test_cached_features_and_unknown_loads_draw_nothing():
    state = torch.Generator().manual_seed(4).get_state()
    assert loader_draws(False, True) == 0 and loader_draws(True, True) == 3 and loader_draws(True, False) == 2
    cached = ClipBenchmarkRng(4, state, 0)
    assert torch.equal(cached.skip_loaders(cached.generator()).get_state(), state)
    unknown = ClipBenchmarkRng(4, None, 3)  # a handle loaded elsewhere: straight from the seed
    assert torch.equal(unknown.skip_loaders(unknown.generator()).get_state(), state)
    assert unknown.describe() == {"after_model_load": False, "loader_draws": 0}


def test_seeded_load_leaves_the_callers_rng_alone():
    torch.manual_seed(11)
    before = torch.get_rng_state()
    model, state = seeded_load(tiny_clip, 0)
    assert torch.equal(torch.get_rng_state(), before) and isinstance(model, open_clip.CLIP)
    torch.manual_seed(0)
    tiny_clip()
    assert torch.equal(torch.get_rng_state(), state)


def test_our_loaders_draw_as_open_clip_create_model_and_transforms(tmp_path, tiny_rn, tiny_rn_bcos):
    """Their load_open_clip on a registered config + weights file; the bcos_clip checkpoint loads
    through bcos_clip.load on both sides (the comparison's wrapper), so only the teacher is checked."""
    from bcos_clip.models import resolve_model
    from bcos_clip.models.loading import model_source

    model_cfg = model_source(tiny_rn[0])["model_cfg"]
    (tmp_path / "teacher.json").write_text(json.dumps({"model_cfg": model_cfg}))
    (tmp_path / "probe-rng-tiny-rn.json").write_text(json.dumps(model_cfg))
    torch.save(tiny_rn[0].state_dict(), tmp_path / "teacher.pt")
    open_clip.add_model_config(tmp_path / "probe-rng-tiny-rn.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        open_clip.create_model_and_transforms("probe-rng-tiny-rn", pretrained=str(tmp_path / "teacher.pt"))
        theirs = torch.get_rng_state()
    _, ours = seeded_load(lambda: resolve_model(str(tmp_path / "teacher.json"), str(tmp_path / "teacher.pt")), 0)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, torch.Generator().manual_seed(0).get_state())  # the init did draw


def test_eval_records_the_replayed_draws(tmp_path, tiny_rn, monkeypatch):
    """First run: the model load and 2 loader draws; the same again with the features cached: none."""
    from bcos_clip.cli import main
    from bcos_clip.models.loading import model_source

    write_classification(tmp_path / "wds" / "toy", n_test=12, n_train=12)
    (tmp_path / "teacher.json").write_text(json.dumps({"model_cfg": model_source(tiny_rn[0])["model_cfg"]}))
    torch.save(tiny_rn[0].state_dict(), tmp_path / "teacher.pt")
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--model", "teacher.json", "--pretrained", "teacher.pt", "--dataset", "wds/toy",
            "--dataset_root", str(tmp_path / "wds" / "{dataset}"), "--num_workers", "0", "--batch_size", "6",
            "--task", "linear_probe", "--fewshot_epochs", "1", "--no_amp"]
    seen = []
    for out in ("first", "second"):
        (tmp_path / out).mkdir()
        assert main(argv + ["--output", out + "/{dataset}_{model}_{task}.json"]) == 0
        seen.append(json.loads((tmp_path / out / "toy_teacher.json_linear_probe.json").read_text())["probe"])
    assert [s["permutation_rng"] for s in seen] == [{"after_model_load": True, "loader_draws": 2},
                                                    {"after_model_load": True, "loader_draws": 0}]


def test_default_is_straight_from_the_seed():
    x = torch.nn.functional.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    y = torch.arange(3).repeat(4)
    cfg = ProbeConfig(epochs=1, fewshot_k=2, seed=5).resolved(eval_batch_size=4)
    head, _, used = cb.fit_and_evaluate((x, y), (x, y), 3, cfg)
    keep = cb.fewshot_order(y, 2, torch.Generator().manual_seed(5))
    assert torch.equal(head.weight, cb.train_head(x[keep], y[keep], 3, 0.0, cfg).weight)
    assert used["permutation_rng"] == {"after_model_load": False, "loader_draws": 0}
