"""Helpers shared by the tower converters."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.bcosify.report import ConversionReport
from bcos_clip.bcosify.spec import BcosifySpec


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def first_conv(conv: nn.Conv2d, spec: BcosifySpec, mean: Sequence[float], std: Sequence[float],
               name: str, report: ConversionReport) -> bnn.BcosConv2d:
    """The 3-channel first conv -> a 6-channel BcosConv2d on [x, 1-x] (METHOD.md §2, step 2)."""
    if conv.in_channels != 3:
        raise ValueError(f"bcosify: first conv '{name}' has {conv.in_channels} input channels, expected 3")
    if spec.input_encoding == "folded":
        weight = bnn.fold_normalization(conv.weight.detach(), mean, std)
    else:
        weight = bnn.input_encoding.official_first_weight(conv.weight.detach())
    new = bnn.BcosConv2d.from_conv(conv, b=spec.b, bias=spec.bias, weight=weight)
    report.replace(name, conv, new)
    if conv.bias is not None and not spec.bias:
        report.remove(f"{name}.bias", "conv bias")
    return new


def linear(lin: nn.Linear, spec: BcosifySpec, name: str, report: ConversionReport,
           plain: bool = False) -> Union[bnn.BcosLinear, nn.Linear]:
    """nn.Linear -> BcosLinear (or a bias-policy-respecting plain linear when `plain`)."""
    bias = lin.bias if (spec.bias and lin.bias is not None) else None
    return linear_from_weight(lin.weight, bias, spec, name, report, plain=plain, old=lin,
                              had_bias=lin.bias is not None)


def linear_from_weight(weight: torch.Tensor, bias: Union[torch.Tensor, None], spec: BcosifySpec,
                       name: str, report: ConversionReport, plain: bool = False, old: object = None,
                       had_bias: bool = False) -> Union[bnn.BcosLinear, nn.Linear]:
    weight = weight.detach()
    if plain:
        new: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        new = new.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight)
            if bias is not None:
                new.bias.copy_(bias)
        report.keep(name, new, "plain linear by spec (sets detached attention weights only)")
    else:
        new = bnn.BcosLinear.from_weight(weight, None if bias is None else bias.detach(), b=spec.b)
        report.replaced.append((name, type(old).__name__ if old is not None else "Parameter",
                                type(new).__name__))
    if had_bias and bias is None:
        report.remove(f"{name}.bias", "linear bias")
    return new


def layernorm(ln: nn.Module, spec: BcosifySpec, name: str, report: ConversionReport) -> nn.Module:
    if isinstance(ln, nn.Identity):
        return ln
    if not isinstance(ln, nn.LayerNorm):
        raise ValueError(f"bcosify: unsupported norm layer '{name}' of type {type(ln).__name__}")
    new = bnn.BcosLayerNorm.from_layernorm(ln, bias=spec.bias, centered=spec.layernorm == "centered")
    report.replace(name, ln, new)
    if ln.bias is not None and not spec.bias:
        report.remove(f"{name}.bias", "LayerNorm bias")
    return new
