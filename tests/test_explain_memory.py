"""Memory hygiene: no hooks or recorded factors left behind, state restored on errors, no growth."""
import gc
import tracemalloc
import warnings

import pytest
import torch

from bcos_clip import nn as bnn
from bcos_clip.explain import explain, image_contributions
from bcos_clip.explain.baselines import gradcam


def live_tensors():
    gc.collect()
    with warnings.catch_warnings():  # isinstance on deprecated torch.distributed objects warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def clean(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, type(m).__name__
        assert "_dyn_cache" not in m.__dict__, type(m).__name__
    assert not any(m.detach_dynamic or m._dyn_mode for m in bnn.dynamic_modules(model))
    return True


def test_repeated_calls_do_not_grow(tiny_vit_bcos):
    model = tiny_vit_bcos
    images, text = torch.rand(1, 3, 32, 32), torch.randn(3, 64)

    def run():
        explain(model, images, text, method="prompts", return_weights=True)
        explain(model, images, text, method="basis")
        image_contributions(model, images, d_chunk=32)
        gradcam(model, images, torch.nn.functional.normalize(text, dim=-1))

    run()  # warm-up: lazily built kernels, caches of the allocator
    before = live_tensors()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(5):
        run()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert growth < 512 * 1024, f"python allocations grew by {growth} bytes over 5 calls"
    assert live_tensors() <= before, "tensors are kept alive between calls"
    assert clean(model)


def test_state_restored_when_the_forward_fails(tiny_rn_bcos):
    model = tiny_rn_bcos.train()

    def fail(*_):
        raise RuntimeError("boom in layer3")

    handle = model.visual.layer3.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            explain(model, torch.rand(1, 3, 64, 64), torch.randn(2, 64))
        with pytest.raises(RuntimeError, match="boom"):
            image_contributions(model, torch.rand(1, 3, 64, 64))
    finally:
        handle.remove()
    assert model.training and clean(model)
    model.eval()
    assert torch.all(explain(model, torch.rand(1, 3, 64, 64), torch.randn(2, 64)).completeness_error() < 1e-5)
