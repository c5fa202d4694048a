"""Explanation pictures as a B-cos user expects them: the official smoothing of the colour explanation's
opacity (scaled with the input size), photos enlarged smoothly while the maps keep their pixels, a signed
colour scale on heat maps, and the cosine and bias on every panel of a sheet."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bcos_clip.explain import explain, sheet
from bcos_clip.explain.color_scale import CONTRIBUTION_UNITS, color_bar, tick_label
from bcos_clip.explain.display import display_cell, display_overlay, keep_pixels, smooth_resize
from bcos_clip.explain.visualize import (_DIVERGING, color_explanation, default_smooth, diverging, overlay,
                                         symmetric_scale)


def method_color_explanation(w, x6, k, q=0.995):
    """METHOD.md §4, written out step by step (window clipped to the image)."""
    rel = (w / (w.abs().amax(0, keepdim=True) + 1e-12)).clamp_min(0)
    rgb = rel[:3] / (rel[:3] + rel[3:] + 1e-12)
    alpha = w.norm(dim=0)
    alpha[(w * x6).sum(0) < 0] = 0
    ones = torch.ones(1, 1, *alpha.shape)
    pad = k // 2
    alpha = F.conv2d(F.pad(alpha[None, None], [pad] * 4), torch.ones(1, 1, k, k)) / F.conv2d(
        F.pad(ones, [pad] * 4), torch.ones(1, 1, k, k))
    alpha = (alpha[0, 0] / torch.quantile(alpha.flatten(), q)).clamp(0, 1)
    return torch.cat([rgb, alpha[None]]).permute(1, 2, 0).numpy()


def test_default_smoothing_is_the_official_window_scaled_to_the_input():
    assert default_smooth(224) == 15  # B-cos's gradient_to_image: smooth=15 for 224-px ImageNet inputs
    assert [default_smooth(s) for s in (16, 32, 64, 96, 128, 448)] == [1, 3, 5, 7, 9, 31]
    assert all(default_smooth(s) % 2 == 1 for s in range(1, 600))
    with pytest.raises(ValueError, match="size"):
        default_smooth(0)


@pytest.mark.parametrize("size,smooth", [(24, 3), (64, None), (64, 0), (64, 7)])
def test_color_explanation_follows_method(size, smooth):
    g = torch.Generator().manual_seed(size)
    w = torch.randn(6, size, size, generator=g)
    image = torch.rand(3, size, size, generator=g)
    x6 = torch.cat([image, 1 - image])
    k = default_smooth(size) if smooth is None else max(smooth, 1)
    ours = color_explanation(w, image, smooth=smooth)
    assert np.allclose(ours, method_color_explanation(w, x6, k), atol=1e-5)
    if smooth is None:
        assert np.array_equal(ours, color_explanation(w, image, smooth=5))
    # smoothing touches the opacity only: the colours stay those of the unsmoothed explanation
    assert np.array_equal(ours[..., :3], color_explanation(w, image, smooth=0)[..., :3])


def test_smoothing_spreads_opacity_but_not_negative_contributions():
    w = torch.zeros(6, 9, 9)
    w[0, 4, 4] = 1.0  # one positively contributing pixel
    w[0, 4, 6] = -50.0  # a strong weight whose contribution is negative: invisible, also after smoothing
    image = torch.full((3, 9, 9), 0.5)
    alpha = color_explanation(w, image, smooth=3, percentile=100)[..., 3]
    expected = np.zeros((9, 9), dtype=np.float32)
    expected[3:6, 3:6] = 1.0  # the 3 x 3 window around the pixel, all at the 100th percentile
    assert np.allclose(alpha, expected, atol=1e-6)
    sharp = np.zeros((9, 9), dtype=np.float32)
    sharp[4, 4] = 1.0
    assert np.allclose(color_explanation(w, image, smooth=0, percentile=100)[..., 3], sharp, atol=1e-6)


def test_display_cell_and_kept_pixels():
    assert [display_cell(c, 64) for c in (64, 95, 96, 160, 192, 200)] == [64, 64, 128, 192, 192, 192]
    assert display_cell(100, 224) == 100  # a reduction keeps the asked size
    m = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    big = keep_pixels(m, (15, 12))  # (width, height): 3x each way
    assert big.shape == (12, 15, 3)
    assert np.array_equal(big, np.repeat(np.repeat(m, 3, axis=0), 3, axis=1))  # every pixel a 3 x 3 block
    small = keep_pixels(np.repeat(np.repeat(m, 2, axis=0), 2, axis=1), (5, 4))  # area-averaged reduction
    assert np.allclose(small, m, atol=1e-6)


def test_photos_are_resampled_smoothly():
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    photo = np.stack([xx, yy, 0.5 * (xx + yy)], -1).astype(np.float32)  # a smooth ramp
    big = smooth_resize(photo, (64, 64))
    blocks = big.reshape(16, 4, 16, 4, 3)
    assert blocks.std(axis=(1, 3)).mean() > 0.005  # no 4 x 4 constant blocks (nearest would give 0)
    assert np.abs(blocks.mean(axis=(1, 3)) - photo).max() < 0.03  # the same picture
    assert smooth_resize(photo, (16, 16)) is photo


def test_overlay_at_display_size_keeps_the_maps_pixels():
    image = torch.full((3, 8, 8), 0.5)  # a flat photo: the smooth resampling changes nothing
    c = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    shown = display_overlay(image, c, (24, 24))
    assert np.allclose(shown, keep_pixels(overlay(image, c), (24, 24)), atol=2.5e-3)  # 8-bit photo rounding
    scale = symmetric_scale(c)
    assert np.allclose(display_overlay(image, c, (24, 24), scale=scale), shown)


def test_color_bar_is_signed_and_centred():
    fnt = sheet.font(12)
    bar = np.asarray(color_bar(0.0024, 200, fnt), dtype=np.float32) / 255
    row = bar[6]  # through the middle of the ramp
    inside = np.where(np.abs(row - diverging(np.zeros(1))[0]).sum(-1) < 0.02)[0]
    assert inside.size and abs(inside.mean() - bar.shape[1] / 2) < 3  # white (0) in the middle
    assert np.abs(row[7] - _DIVERGING[0]).max() < 0.05 and np.abs(row[-8] - _DIVERGING[-1]).max() < 0.05
    assert [tick_label(v) for v in (0.0, 0.0024, -0.05, 3e-6)] == ["0", "+2.4e-03", "-0.050", "+3.0e-06"]
    assert color_bar(1.0, 40, fnt).width > 40  # widened to fit its label
    with pytest.raises(ValueError, match="scale"):
        color_bar(0.0, 100, fnt)


@pytest.fixture(scope="module")
def explained(tiny_vit_bcos):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return explain(tiny_vit_bcos, images, ["a red circle", "a star", "grass"], return_weights=True)


def _record(monkeypatch, name):
    calls = []
    original = getattr(sheet, name)
    monkeypatch.setattr(sheet, name, lambda *a, **k: calls.append((a, k)) or original(*a, **k))
    return calls


@pytest.mark.parametrize("view", ["colour", "overlay", "heatmap"])
def test_every_sheet_panel_shows_score_and_bias(explained, monkeypatch, view):
    e = explained
    assert e.bias.abs().max() > 1e-4  # the ViT keeps additive terms: a bias worth showing
    captions = _record(monkeypatch, "captioned")
    bars = _record(monkeypatch, "color_bar")
    sheet.explanation_sheet(e, view, cell=64)
    lines = [line for args, _ in captions for line in args[1]]
    for n in range(2):
        for k in range(3):
            assert f"cos {e.scores[n, k]:.3f}" in lines and f"bias {e.bias[n, k]:+.3f}" in lines
    if view == "colour":
        assert not bars and any("box-smoothed over 3 x 3 px" in line for line in lines)
    else:  # one shared scale: the 99.5th percentile of |contribution| over the whole sheet
        ((scale, width, _, label), _), = bars
        assert scale == pytest.approx(symmetric_scale(e.contributions)) and label == CONTRIBUTION_UNITS


def test_pair_panel_has_its_color_scale(explained, monkeypatch):
    bars = _record(monkeypatch, "color_bar")
    panel = sheet.pair_panel(explained, 1, 2, cell=64)
    ((scale, width, _, _), _), = bars
    assert scale == pytest.approx(symmetric_scale(explained.contributions[1, 2])) and width == panel.width
    assert panel.height > 64 + 2 * 17 + 30  # the bar below the captioned row


def test_shared_scale_over_many_maps():
    c = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(2))
    assert symmetric_scale(c) == pytest.approx(torch.quantile(c.abs().flatten(), 0.995).item(), rel=1e-6)
    assert symmetric_scale(c, percentile=100) == pytest.approx(c.abs().max().item())
