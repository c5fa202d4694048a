"""Fold eval-mode uncentered BatchNorms into the preceding B-cos conv (inference and explanations).

In eval mode an UncenteredBatchNorm2d is y = a * x (+ beta) per channel, a = gamma / sqrt(var + eps).
After a B-cos conv x = z * (|z| / ||x_patch||)^(B-1), z = w * x_in (+ b), scaling w (and b) by
c = sign(a) * |a|^(1/B) gives c |c|^(B-1) = a times the output, since ||x_patch|| does not depend
on w. For B = 2: c = sign(gamma) * sqrt(|gamma| / sigma). For B = 1 (plain conv) c = a and a BN shift
beta joins the conv bias. For B != 1 a BN shift cannot be folded (it would move inside the B-cos
scale): such pairs are left unfolded, so the folded tower is always the same function.

The dynamic linear map W(x) of the tower is unchanged, so explanations are unchanged too.
"""
from __future__ import annotations

import copy
import logging
from typing import List, Tuple

import torch
from torch import nn

from bcos_clip.nn.bcos_conv import BcosConv2d
from bcos_clip.nn.norms import UncenteredBatchNorm2d

log = logging.getLogger(__name__)

Pair = Tuple[nn.Module, str, str]  # (parent, conv child name, bn child name)


def _named_pairs(parent: nn.Module) -> List[Pair]:
    """conv->bn pairs among a module's direct children: consecutive children of an nn.Sequential,
    or children named conv<k> / bn<k> (open_clip's ModifiedResNet stem and Bottleneck)."""
    children = list(parent.named_children())
    pairs: List[Pair] = []
    if isinstance(parent, nn.Sequential):
        for (cn, c), (bn_name, b) in zip(children, children[1:]):
            if isinstance(c, BcosConv2d) and isinstance(b, UncenteredBatchNorm2d):
                pairs.append((parent, cn, bn_name))
        return pairs
    named = dict(children)
    for cn, c in children:
        if isinstance(c, BcosConv2d) and cn.startswith("conv"):
            bn_name = "bn" + cn[len("conv"):]
            if isinstance(named.get(bn_name), UncenteredBatchNorm2d):
                pairs.append((parent, cn, bn_name))
    return pairs


def conv_bn_pairs(model: nn.Module) -> List[Pair]:
    """Every (parent, conv name, bn name) whose BN directly follows the B-cos conv."""
    return [p for mod in model.modules() for p in _named_pairs(mod)]


def fold_factor(bn: UncenteredBatchNorm2d, b: float) -> torch.Tensor:
    """c = sign(a) |a|^(1/B) with a = gamma / sqrt(running_var + eps), in float64: shape (C,)."""
    a = bn.weight.detach().double() * torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    return a.sign() * a.abs().pow(1.0 / b)


def _fold_pair(conv: BcosConv2d, bn: UncenteredBatchNorm2d) -> bool:
    """Fold bn into conv in place; False (nothing changed) where it would not be exact."""
    if bn.bias is not None and conv.b != 1.0:
        return False
    c = fold_factor(bn, conv.b)
    with torch.no_grad():
        w = conv.weight
        w.copy_((w.double() * c.view(-1, 1, 1, 1)).to(w.dtype))
        bias = None if conv.bias is None else conv.bias.double() * c
        if bn.bias is not None:
            bias = bn.bias.double() if bias is None else bias + bn.bias.double()
        if bias is not None:
            conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=w.requires_grad)
    return True


def fold_batchnorms(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of `model` (eval mode required) with every foldable BcosConv2d -> UncenteredBatchNorm2d
    pair folded into the conv and the BN replaced by nn.Identity. Same function, fewer passes.

    Works on a tower or a whole BcosCLIP. For inference and explanations only: a folded tower has no
    BatchNorm to train.
    """
    if any(m.training for m in model.modules() if isinstance(m, UncenteredBatchNorm2d)):
        raise ValueError("fold_batchnorms: the model must be in eval mode (BN running statistics are "
                         "folded; call model.eval() first)")
    out = model if inplace else copy.deepcopy(model)
    folded, skipped = 0, 0
    for parent, conv_name, bn_name in conv_bn_pairs(out):
        if _fold_pair(getattr(parent, conv_name), getattr(parent, bn_name)):
            setattr(parent, bn_name, nn.Identity())
            folded += 1
        else:
            skipped += 1
    log.info("fold_batchnorms: folded %d conv->BN pairs, left %d (BN shift with B != 1)", folded, skipped)
    return out
