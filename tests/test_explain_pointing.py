"""Grid pointing game: the score on maps with known answers, grid drawing, and the game end to end."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.explain import baselines
from bcos_clip.explain.pointing import (cell_bounds, compose_grid, default_smooth, grid_pointing_game,
                                        localisation_scores, make_grids, score_grids, select_confident)


@pytest.fixture(scope="module")
def plain_rn(tiny_rn):
    """The tiny RN teacher as a PlainCLIP (images in [0, 1], CLIP normalisation inside)."""
    from bcos_clip.models import PlainCLIP

    return PlainCLIP.from_clip(tiny_rn[0], tiny_rn[2]).eval()


@pytest.fixture(scope="module")
def plain_vit(tiny_vit):
    from bcos_clip.models import PlainCLIP

    return PlainCLIP.from_clip(tiny_vit[0], tiny_vit[2]).eval()


def cell_masks(n, size):
    b = cell_bounds(size, n)
    masks = torch.zeros(n * n, size, size)
    for c in range(n * n):
        r, q = divmod(c, n)
        masks[c, b[r]:b[r + 1], b[q]:b[q + 1]] = 1
    return masks


@pytest.mark.parametrize("n,size", [(3, 30), (2, 32), (3, 224)])
def test_known_answers(n, size):
    masks = cell_masks(n, size)
    right = masks[None] * torch.rand(1, n * n, size, size)  # all mass in the right cell
    assert torch.allclose(localisation_scores(right, n), torch.ones(1, n * n))
    uniform = torch.ones(1, n * n, size, size)
    area = masks.sum((-2, -1))[None] / size ** 2  # 1/n^2 when n divides size (224 = 75 + 74 + 75)
    if size % n == 0:
        assert torch.allclose(area, torch.full((1, n * n), 1 / n ** 2))
    for smooth in (0, 3, default_smooth(size, n)):
        assert torch.allclose(localisation_scores(uniform, n, smooth), area, atol=1e-6)
    wrong = masks.roll(1, dims=0)[None]  # each map lights up another cell
    assert torch.all(localisation_scores(wrong, n) == 0)
    negative = -right + 0.0 * uniform  # no positive mass anywhere: score 0, never NaN
    assert torch.all(localisation_scores(negative, n) == 0)
    # negative evidence elsewhere does not count: positive in the cell, negative outside -> 1
    signed = right - (1 - masks[None])
    assert torch.allclose(localisation_scores(signed, n), torch.ones(1, n * n))


def test_smoothing_and_point_masses():
    n, size = 3, 96
    maps = torch.zeros(1, 9, size, size)
    for c in range(9):  # a point mass in the middle of its cell survives smoothing
        r, q = divmod(c, n)
        maps[0, c, 16 + 32 * r, 16 + 32 * q] = 1.0
    assert torch.allclose(localisation_scores(maps, n, smooth=default_smooth(size, n)), torch.ones(1, 9))
    half = maps.clone()  # half the mass in the right cell, half in cell 0 (or 1 for cell 0)
    for c in range(9):
        other = 1 if c == 0 else 0
        half[0, c, 16 + 32 * (other // n), 16 + 32 * (other % n)] = 1.0
    assert torch.allclose(localisation_scores(half, n), torch.full((1, 9), 0.5))
    assert default_smooth(224, 3) == 19 and default_smooth(32, 2) == 5
    with pytest.raises(ValueError, match="grid"):
        localisation_scores(torch.zeros(1, 4, 8, 8), 3)


def test_make_grids_are_seeded_and_of_distinct_classes():
    labels = torch.arange(12).repeat_interleave(3)  # 12 classes, 3 images each
    a, b = make_grids(labels, 3, 20, seed=5), make_grids(labels, 3, 20, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, make_grids(labels, 3, 20, seed=6))
    assert a.shape == (20, 9)
    assert all(len(set(labels[row].tolist())) == 9 for row in a)
    with pytest.raises(ValueError, match="9 classes"):
        make_grids(torch.arange(8), 3, 1)
    cells = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 2, 2)
    grid = compose_grid(cells, 2)
    assert grid.shape == (3, 4, 4) and grid[0, 0, 3] == 1 and grid[0, 3, 0] == 2 and grid[0, 3, 3] == 3


PALETTE = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=torch.float32)


class ColorOracle(nn.Module):
    """A fake image-text model: embedding = one-hot of the nearest palette colour (mean colour),
    with a known perfect explanation (the pixels of that colour)."""

    image_size = 48
    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode_image(self, images):
        d = ((images.mean((-2, -1))[:, None] - PALETTE[None]) ** 2).sum(-1)
        return F.pad(F.one_hot(d.argmin(-1), len(PALETTE)).float(), (0, 2)) + 1e-3


def oracle_maps(model, images, text):
    colors = PALETTE[text.argmax(-1)]  # (N, K, 3): the class each prompt names
    dist = ((images[:, None] - colors[..., None, None]) ** 2).sum(2)
    return torch.exp(-20 * dist)


@pytest.fixture
def oracle(monkeypatch):
    monkeypatch.setitem(baselines.ATTRIBUTIONS, "oracle", oracle_maps)
    monkeypatch.setitem(baselines.ATTRIBUTIONS, "uniform", lambda m, x, t: torch.ones(x.shape[0], t.shape[-2], *x.shape[-2:]))
    pool = {c: PALETTE[c].view(1, 3, 1, 1).expand(2, 3, 20, 20).clone() for c in range(len(PALETTE))}
    pool[0][1] = PALETTE[1].view(3, 1, 1)  # a wrongly classified image: must be dropped
    return ColorOracle(), pool, torch.eye(len(PALETTE), 8)


def test_game_end_to_end_with_known_answers(oracle):
    model, pool, class_emb = oracle
    res = grid_pointing_game(model, pool, class_emb, grid=2, n_grids=6, seed=1, method="oracle", n_examples=2)
    assert res.n_candidates == 11 and res.size == 48 and res.scores.shape == (6, 4)
    assert res.smooth == 7 and torch.all(res.scores > 0.9), res.scores  # smoothing bleeds over cell borders
    sharp = grid_pointing_game(model, pool, class_emb, grid=2, n_grids=6, seed=1, method="oracle", smooth=0)
    assert torch.all(sharp.scores > 0.99), sharp.scores  # perfect maps (resizing blurs the borders a little)
    d = json.loads(json.dumps(res.as_dict()))
    assert d["n_grids"] == 6 and d["chance"] == 0.25 and len(d["per_grid"]) == 6 and d["mean"] > 0.9
    assert len(res.examples) == 2 and res.examples[0]["image"].shape == (3, 48, 48)
    flat = grid_pointing_game(model, pool, class_emb, grid=2, n_grids=6, seed=1, method="uniform")
    assert torch.allclose(flat.scores, torch.full((6, 4), 0.25), atol=1e-6)
    assert torch.equal(flat.classes, res.classes)  # same seed, same grids
    with pytest.raises(ValueError, match="method"):
        grid_pointing_game(model, pool, class_emb, grid=2, method="lime")
    with pytest.raises(ValueError, match="classes"):
        grid_pointing_game(model, pool, class_emb, grid=3)


def test_select_confident_threshold():
    model = ColorOracle()
    images = PALETTE[:3].view(3, 3, 1, 1).expand(3, 3, 4, 4)
    text = F.normalize(torch.eye(6, 8), dim=-1)
    assert select_confident(model, images, torch.tensor([0, 1, 0]), text).tolist() == [True, True, False]
    # cosines of ~1 vs ~0: softmax(100 cos) ~ 1 > 0.5; no image passes a threshold above 1
    assert not select_confident(model, images, torch.tensor([0, 1, 2]), text, threshold=1.01).any()


def prototype_pool(model, size, n_classes=4, per_class=3, seed=0):
    """Images near n_classes random prototypes; class embeddings = the model's embedding of each prototype."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(n_classes, 3, size, size, generator=g)
    with torch.no_grad():
        emb = F.normalize(model.encode_image(protos).float(), dim=-1)
    pool = {c: (protos[c] + 0.02 * torch.randn(per_class, 3, size, size, generator=g)).clamp(0, 1)
            for c in range(n_classes)}
    return pool, emb


@pytest.mark.parametrize("fixture,method", [("tiny_rn_bcos", "bcos"), ("tiny_vit_bcos", "bcos"),
                                            ("plain_rn", "gradcam"), ("plain_vit", "input_x_gradient")])
def test_game_end_to_end_on_tiny_models(fixture, method, request):
    model = request.getfixturevalue(fixture)
    pool, emb = prototype_pool(model, model.image_size)
    res = grid_pointing_game(model, pool, emb, grid=2, n_grids=3, seed=0, method=method, threshold=0.3,
                             batch_size=2, n_examples=1)
    assert res.scores.shape == (3, 4) and torch.all((res.scores >= 0) & (res.scores <= 1))
    assert res.n_candidates >= 8 and res.examples[0]["maps"].shape == (4, model.image_size, model.image_size)
    assert 0 <= res.as_dict()["mean"] <= 1


def test_bcos_method_refuses_plain_models(plain_rn):
    pool, emb = prototype_pool(plain_rn, 64)
    with pytest.raises(TypeError, match="baselines"):
        score_grids(plain_rn, pool[0], torch.zeros(1, 4, dtype=torch.long), torch.arange(3), emb, 2, "bcos")
