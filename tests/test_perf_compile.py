"""torch.compile of B-cos towers on CPU: Dynamo captures the training step of the fast B-cos towers in
one graph (0 graph breaks) and the compiled step equals the eager one (output and every parameter
gradient, fp32, relative max error < 1e-4).

Fast: Dynamo + AOTAutograd (backend aot_eager: the graph capture and the derived backward, without code
generation) on the tiny RN and ViT towers in training mode. Slow: the same towers through inductor (its
C++ code generation takes 40-120 s cold on a 2-core machine). The full-size RN50 / ViT-B-16 check, with
compile times and the compiled CPU step ratio, is benchmarks/bench_compile.py."""
import pytest
import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.apps.bench.towers import build_modelset, input_fn

RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_sets():
    """Tiny towers; open_clip zeroes each residual branch's last BN weight, which would leave most RN
    gradients 0: every BN weight is drawn from [0.5, 1.5] so that the comparisons are not vacuous."""
    torch.manual_seed(0)
    sets = {name: build_modelset(name, torch.device("cpu"), quick=True) for name in ("RN50", "ViT-B-16")}
    with torch.no_grad():
        for ms in sets.values():
            for m in ms.towers["bcos-fast"].modules():
                if isinstance(m, bnn.UncenteredBatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
    return sets


def _step_fn(ms):
    tower, prep = ms.towers["bcos-fast"], input_fn(ms, "bcos-fast")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, ms.image_size, ms.image_size, generator=g)
    target = torch.randn(2, ms.embed_dim, generator=g)

    def step(run, x=x, target=target):
        out = run(prep(x))
        return out, 1.0 - F.cosine_similarity(out.float(), target, dim=-1).mean()

    return tower, step, x, target


def _grads(tower, step, run):
    """Output and parameter gradients of one training step; BN running statistics restored after."""
    tower.train()
    for p in tower.parameters():
        p.grad = None
    state = {k: v.clone() for k, v in tower.state_dict().items()}
    out, loss = step(run)
    loss.backward()
    grads = [p.grad.clone() for p in tower.parameters()]
    tower.load_state_dict(state)
    return [out.detach()] + grads


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_training_step_of_tiny_bcos_towers_has_no_graph_break(tiny_sets, name):
    torch._dynamo.reset()
    tower, step, x, target = _step_fn(tiny_sets[name])
    tower.train()

    def loss_fn(x, target):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return step(tower, x, target)[1]

    ex = torch._dynamo.explain(loss_fn)(x, target)
    assert ex.graph_break_count == 0 and ex.graph_count == 1, ex.break_reasons


@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_compiled_training_step_equals_eager_aot_eager(tiny_sets, name):
    torch._dynamo.reset()
    tower, step, _, _ = _step_fn(tiny_sets[name])
    eager = _grads(tower, step, tower)
    compiled = _grads(tower, step, torch.compile(tower, backend="aot_eager", fullgraph=True))
    assert max(_rel(c, e) for c, e in zip(compiled, eager)) < RTOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_compiled_training_step_equals_eager_inductor(tiny_sets, name):
    torch._dynamo.reset()
    tower, step, _, _ = _step_fn(tiny_sets[name])
    eager = _grads(tower, step, tower)
    compiled = _grads(tower, step, torch.compile(tower, fullgraph=True))
    assert max(_rel(c, e) for c, e in zip(compiled, eager)) < RTOL


@pytest.mark.slow
def test_inductor_compiled_bcos_block_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = torch.nn.Sequential(bnn.BcosConv2d(6, 8, 3, padding=1), bnn.UncenteredBatchNorm2d(8),
                                torch.nn.ReLU(), bnn.BcosConv2d(8, 4, 1, stride=2), torch.nn.Flatten(),
                                bnn.BcosLinear(4 * 16, 5))
    x = torch.randn(2, 6, 8, 8)

    def step(run):
        out = run(x)
        return out, out.float().square().sum()

    eager = _grads(block, step, block)
    compiled = _grads(block, step, torch.compile(block))
    assert max(_rel(c, e) for c, e in zip(compiled, eager)) < RTOL
