"""Pictures: B-cos colour explanations (known colours), heat maps, sheets and PNG files."""
import numpy as np
import pytest
import torch
from PIL import Image

from bcos_clip.explain import explain
from bcos_clip.explain.sheet import VIEWS, explanation_sheet, pair_panel
from bcos_clip.explain.visualize import (box_smooth, color_explanation, heatmap, on_background, overlay,
                                         save_png)


def test_color_explanation_known_colors():
    w = torch.zeros(6, 2, 3)
    w[0, 0, 0] = 2.0  # only the red channel, positive: pure red
    w[:3, 0, 1] = 1.0  # r, g, b alike: white
    w[3:, 0, 2] = 1.0  # only the inverse channels: black (1 - x drives it)
    w[0, 1, 0] = -3.0  # negative contribution: invisible
    w[1, 1, 1], w[4, 1, 1] = 1.0, 1.0  # green and inverse green equally: mid grey-green
    image = torch.full((3, 2, 3), 0.5)
    rgba = color_explanation(w, image, percentile=100)
    assert rgba.shape == (2, 3, 4) and rgba.dtype == np.float32
    assert np.allclose(rgba[0, 0, :3], [1, 0, 0], atol=1e-6)
    assert np.allclose(rgba[0, 1, :3], [1, 1, 1], atol=1e-6)
    assert np.allclose(rgba[0, 2, :3], [0, 0, 0], atol=1e-6)
    assert np.allclose(rgba[1, 1, :3], [0, 0.5, 0], atol=1e-6)
    assert rgba[1, 0, 3] == 0 and rgba[1, 2, 3] == 0  # negative / no contribution
    assert np.isclose(rgba[..., 3].max(), 1.0) and rgba[0, 0, 3] > rgba[0, 1, 3] > 0  # alpha ~ ||w||
    with pytest.raises(ValueError, match="differ"):
        color_explanation(w, torch.rand(3, 4, 4))


def test_heatmap_is_symmetric_and_clipped():
    c = torch.tensor([[-2.0, 0.0, 2.0, 100.0]])
    rgb = heatmap(c, percentile=50)  # clip at the median of |c|: 2
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[0, 2, 0] > rgb[0, 2, 2]  # negative blue, positive red
    assert np.allclose(rgb[0, 1], 0.969, atol=1e-3)  # zero is white
    assert np.allclose(rgb[0, 2], rgb[0, 3])  # clipped
    ov = overlay(torch.rand(3, 1, 4), c)
    assert ov.shape == (1, 4, 3) and ov.min() >= 0 and ov.max() <= 1
    assert torch.allclose(box_smooth(torch.ones(1, 5, 5), 3), torch.ones(1, 5, 5))


def test_sheets_and_pngs(tiny_vit_bcos, tmp_path):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "a very long prompt that will not fit in one panel at all", "a star"]
    e = explain(tiny_vit_bcos, images, prompts, return_weights=True)
    for view in VIEWS:
        assert VIEWS[view](e, 1, 2, 0).shape == (32, 32, 3)
    panel = pair_panel(e, 0, 1, cell=100)  # panels snapped to a whole multiple of the 32-px input: 96 px
    sheet = explanation_sheet(e, "colour", cell=80, image_names=["a", "b"])
    assert panel.mode == "RGB" and panel.width == 3 * 96 + 2 * 4
    assert sheet.width == 4 * 96 + 3 * 4 and sheet.height > 2 * 96
    for name, pic in (("panel", panel), ("sheet", sheet), ("rgba", color_explanation(e.weights[0, 0], e.images[0]))):
        path = save_png(pic, tmp_path / "pngs" / f"{name}.png")
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.size == (pic.size if isinstance(pic, Image.Image) else (32, 32))
            assert im.mode == ("RGBA" if name == "rgba" else "RGB")
    # the composited colour view shows the colour explanation where alpha is high, black elsewhere
    rgba = color_explanation(e.weights[0, 0], e.images[0])
    shown = on_background(rgba)
    assert np.allclose(shown[rgba[..., 3] == 0], 0)
    no_weights = explain(tiny_vit_bcos, images, prompts)
    with pytest.raises(ValueError, match="weights"):
        explanation_sheet(no_weights, "colour")
    assert explanation_sheet(no_weights, "overlay", cell=64).size[0] == 4 * 64 + 3 * 4
