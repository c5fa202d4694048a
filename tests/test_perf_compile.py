"""torch.compile of B-cos towers: compiled == eager (outputs and gradients) on CPU.

The whole tiny RN tower goes through Dynamo + AOTAutograd (backend aot_eager: the graph capture and
the derived backward, without inductor's slow CPU code generation); a small block of B-cos layers also
goes through inductor (the generated kernels of the fast path's formulas)."""
import pytest
import torch

from bcos_clip import nn as bnn


def _grads(module, run, x):
    for p in module.parameters():
        p.grad = None
    x = x.detach().requires_grad_(True)
    y = run(x)
    (y.float().square().sum()).backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]


def _close(a_list, b_list, rtol):
    for a, b in zip(a_list, b_list):
        scale = b.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale) < rtol


@pytest.mark.slow
def test_compiled_tiny_rn_tower_equals_eager(tiny_rn_bcos):
    torch._dynamo.reset()
    tower = tiny_rn_bcos.visual
    was = tower.training
    tower.eval()  # eval: running statistics, so both runs see the same function
    try:
        x = torch.rand(2, 6, 64, 64)
        eager = _grads(tower, tower, x)
        compiled = _grads(tower, torch.compile(tower, backend="aot_eager", fullgraph=True), x)
        _close(compiled, eager, 1e-4)
    finally:
        tower.train(was)


@pytest.mark.slow
def test_inductor_compiled_bcos_block_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = torch.nn.Sequential(bnn.BcosConv2d(6, 8, 3, padding=1), bnn.UncenteredBatchNorm2d(8),
                                torch.nn.ReLU(), bnn.BcosConv2d(8, 4, 1, stride=2), torch.nn.Flatten(),
                                bnn.BcosLinear(4 * 16, 5))
    x = torch.randn(2, 6, 8, 8)
    eager = _grads(block, block, x)
    block.train()  # same batch statistics in both runs
    compiled = _grads(block, torch.compile(block), x)
    _close(compiled, eager, 1e-4)
