"""Convert an open_clip ModifiedResNet (RN50 family) image tower (METHOD.md §2, RN50 specifics)."""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.bcosify.common import first_conv, linear, set_submodule
from bcos_clip.bcosify.report import ConversionReport
from bcos_clip.bcosify.spec import BcosifySpec


def _attention_pool(pool: AttentionPool2d, spec: BcosifySpec, name: str,
                    report: ConversionReport) -> bnn.BcosAttentionPool2d:
    plain_qk = spec.qk == "linear"
    q = linear(pool.q_proj, spec, f"{name}.q_proj", report, plain=plain_qk)
    k = linear(pool.k_proj, spec, f"{name}.k_proj", report, plain=plain_qk)
    v = linear(pool.v_proj, spec, f"{name}.v_proj", report)
    c = linear(pool.c_proj, spec, f"{name}.c_proj", report)
    if spec.official_c_proj and isinstance(c, bnn.BcosLinear):
        c.b = 1.0  # the official pooled path reads c_proj.weight directly: a plain linear
    if spec.official_v_proj and isinstance(v, bnn.BcosLinear):
        v.b = 1.0  # the official converter skips q/k/v_proj of the pool: v stays a plain linear
    pos = pool.positional_embedding.detach() if spec.keep_positional else None
    if pos is None:
        report.remove(f"{name}.positional_embedding", "attention-pool positional embedding")
    new = bnn.BcosAttentionPool2d(q, k, v, c, pool.num_heads, positional_embedding=pos)
    report.replace(name, pool, new)
    return new


def convert_modified_resnet(visual: ModifiedResNet, spec: BcosifySpec, mean: Sequence[float],
                            std: Sequence[float]) -> Tuple[nn.Module, ConversionReport]:
    """Deep-copy `visual` and replace every conv, BatchNorm and the attention pool.

    The copy keeps ModifiedResNet's own forward (stem, layers, attnpool), now through B-cos modules.
    Input of the returned tower: (N, 6, H, W) = [x, 1-x].
    """
    report = ConversionReport(tower=type(visual).__name__)
    tower = copy.deepcopy(visual)
    for name, mod in list(tower.named_modules()):
        if not name:
            continue
        if name == "conv1":
            new: nn.Module = first_conv(mod, spec, mean, std, name, report)
        elif isinstance(mod, nn.Conv2d):
            new = bnn.BcosConv2d.from_conv(mod, b=spec.b, bias=spec.bias)
            report.replace(name, mod, new)
        elif isinstance(mod, nn.BatchNorm2d):
            new = bnn.UncenteredBatchNorm2d.from_batchnorm(mod, bias=spec.bias)
            report.replace(name, mod, new)
            if not spec.bias:
                report.remove(f"{name}.bias", "BatchNorm shift (beta - gamma*mu/sigma)")
        elif isinstance(mod, AttentionPool2d):
            new = _attention_pool(mod, spec, name, report)
        else:
            continue
        set_submodule(tower, name, new)
    _activations(tower, spec, report)
    report.scan(tower)
    return tower, report


def _activations(tower: nn.Module, spec: BcosifySpec, report: ConversionReport) -> None:
    """ReLU / AvgPool stay (dynamic linear already). With additive terms (biases, positional embedding,
    the Normalize6 offset) the explanation's bias pass (input 0) has non-zero activations, so its ReLU
    gates must be replayed from the image's pass: ReLU becomes GatedActivation("relu") (same function)."""
    additive = spec.bias or spec.keep_positional or spec.input_encoding == "normalize6"
    for name, mod in list(tower.named_modules()):
        if isinstance(mod, nn.ReLU) and additive:
            new = bnn.GatedActivation("relu")
            set_submodule(tower, name, new)
            report.replace(name, mod, new)
        elif isinstance(mod, (nn.ReLU, nn.AvgPool2d)):
            report.keep(name, mod, "already dynamic linear")
