"""Convert an open_clip VisionTransformer image tower (new ground; METHOD.md §2, ViT).

LayerNorms stay centered (bias removed unless kept, std detachable), attention q/k set a detachable
attention matrix, value/out/MLP/`proj` become B-cos linears, GELU becomes x * Phi(x). The class token is
an additive term that is kept (explanations report it as `bias`); so is the positional embedding with
``spec.positional == "bias"``. With ``"input"`` each patch's positional vector is multiplied by the mean of
``sum_c [x, 1-x]_c / 3`` over that patch's pixels, which is 1 for every image: the same function, but a
linear term of the input, so explanations attribute it to the patch's pixels instead of the bias (a
B-cos tower's image path is much smaller than the teacher's at conversion, so as a bias the positional
embedding carries most of every score).
"""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.bcosify.common import first_conv, layernorm, linear, linear_from_weight
from bcos_clip.bcosify.report import ConversionReport
from bcos_clip.bcosify.spec import BcosifySpec


class BcosResidualBlock(nn.Module):
    """x + ls_1(attn(ln_1(x))), then x + ls_2(mlp(ln_2(x))) on (N, L, D) tokens."""

    def __init__(self, ln_1: nn.Module, attn: bnn.BcosSelfAttention, ls_1: nn.Module, ln_2: nn.Module,
                 mlp: nn.Sequential, ls_2: nn.Module) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ls_1 = ln_1, attn, ls_1
        self.ln_2, self.mlp, self.ls_2 = ln_2, mlp, ls_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class BcosVisionTransformer(nn.Module):
    """(N, 6, H, W) -> (N, output_dim). H, W must match the positional embedding's grid."""

    def __init__(self, conv1: nn.Module, class_embedding: torch.Tensor,
                 positional_embedding: torch.Tensor, ln_pre: nn.Module, blocks: nn.ModuleList,
                 ln_post: nn.Module, proj: nn.Module, pool_type: str, final_ln_after_pool: bool,
                 positional: str = "bias") -> None:
        super().__init__()
        self.conv1, self.positional = conv1, positional
        self.class_embedding = nn.Parameter(class_embedding.detach().clone())
        self.positional_embedding = nn.Parameter(positional_embedding.detach().clone())
        self.ln_pre, self.blocks, self.ln_post, self.proj = ln_pre, blocks, ln_post, proj
        self.pool_type, self.final_ln_after_pool = pool_type, final_ln_after_pool

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if not self.final_ln_after_pool:
            x = self.ln_post(x)
        pooled = x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]
        return self.ln_post(pooled) if self.final_ln_after_pool else pooled

    def forward(self, x6: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x6)
        x = x.flatten(2).transpose(1, 2)  # (N, grid*grid, D)
        if x.shape[1] + 1 != self.positional_embedding.shape[0]:
            raise ValueError(f"ViT tower: input gives {x.shape[1]} patches but the positional embedding "
                             f"has {self.positional_embedding.shape[0] - 1}: resize images to the tower's size")
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        pos = self.positional_embedding.to(x.dtype)
        if self.positional == "input":  # (N, L, 1) ones, written as a linear function of [x, 1-x]
            ones = F.avg_pool2d(x6.sum(1, keepdim=True) / 3, self.conv1.stride).flatten(1)[..., None]
            x = torch.cat([cls + pos[:1], x + pos[1:] * ones], dim=1)
        elif self.positional == "drop":  # no positions: a bias-free token path (a conv stem's padding)
            x = torch.cat([cls + pos[:1], x], dim=1)
        else:
            x = torch.cat([cls, x], dim=1) + pos
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        return self.proj(self._pool(x))


def _activation(act: nn.Module, name: str) -> bnn.GatedActivation:
    if isinstance(act, QuickGELU):
        return bnn.GatedActivation("quick_gelu")
    if isinstance(act, nn.GELU):
        return bnn.GatedActivation("gelu_tanh" if act.approximate == "tanh" else "gelu")
    raise ValueError(f"bcosify: unsupported activation '{name}' of type {type(act).__name__}")


def _attention(mha: nn.MultiheadAttention, spec: BcosifySpec, name: str,
               report: ConversionReport) -> bnn.BcosSelfAttention:
    if not isinstance(mha, nn.MultiheadAttention) or mha.in_proj_weight is None:
        raise ValueError(f"bcosify: unsupported attention '{name}' of type {type(mha).__name__}")
    d = mha.embed_dim
    w, b = mha.in_proj_weight, mha.in_proj_bias
    keep = spec.bias and b is not None
    plain_qk = spec.qk == "linear"
    projs = [linear_from_weight(w[i * d:(i + 1) * d], b[i * d:(i + 1) * d] if keep else None, spec,
                                f"{name}.{p}_proj", report, plain=plain_qk and p in "qk", old=mha,
                                had_bias=b is not None)
             for i, p in enumerate("qkv")]
    out = linear(mha.out_proj, spec, f"{name}.out_proj", report)
    new = bnn.BcosSelfAttention(*projs, out, mha.num_heads)
    report.replace(name, mha, new)
    return new


def _block(blk: nn.Module, spec: BcosifySpec, name: str, report: ConversionReport) -> BcosResidualBlock:
    if not isinstance(blk, ResidualAttentionBlock) or hasattr(blk, "ln_1_kv"):
        raise ValueError(f"bcosify: unsupported transformer block '{name}' of type {type(blk).__name__}")
    mlp = nn.Sequential()
    mlp.add_module("c_fc", linear(blk.mlp.c_fc, spec, f"{name}.mlp.c_fc", report))
    mlp.add_module("gelu", _activation(blk.mlp.gelu, f"{name}.mlp.gelu"))
    report.replace(f"{name}.mlp.gelu", blk.mlp.gelu, mlp.gelu)
    mlp.add_module("c_proj", linear(blk.mlp.c_proj, spec, f"{name}.mlp.c_proj", report))
    ls_1, ls_2 = copy.deepcopy(blk.ls_1), copy.deepcopy(blk.ls_2)
    for ls_name, ls in (("ls_1", ls_1), ("ls_2", ls_2)):
        if not isinstance(ls, nn.Identity):
            report.keep(f"{name}.{ls_name}", ls, "LayerScale: elementwise linear")
    return BcosResidualBlock(layernorm(blk.ln_1, spec, f"{name}.ln_1", report),
                             _attention(blk.attn, spec, f"{name}.attn", report), ls_1,
                             layernorm(blk.ln_2, spec, f"{name}.ln_2", report), mlp, ls_2)


def _patch_embedding(conv1: nn.Module, spec: BcosifySpec, mean: Sequence[float], std: Sequence[float],
                     report: ConversionReport) -> nn.Module:
    """The patch conv -> a 6-channel BcosConv2d; a ``ConvStem``: its first conv so, the others B-cos
    convs, BatchNorm uncentered, ReLU a gated activation (the same function; its gate replayed in the
    explanation's bias pass, which biases would otherwise open)."""
    if not isinstance(conv1, bnn.ConvStem):
        return first_conv(conv1, spec, mean, std, "conv1", report)
    layers = []
    for i, mod in enumerate(conv1):
        name = f"conv1.{i}"
        if i == 0:
            new: nn.Module = first_conv(mod, spec, mean, std, name, report)
        elif isinstance(mod, nn.Conv2d):
            new = bnn.BcosConv2d.from_conv(mod, b=spec.b, bias=spec.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            new = bnn.UncenteredBatchNorm2d.from_batchnorm(mod, bias=spec.bias)
            if not spec.bias:
                report.remove(f"{name}.bias", "BatchNorm shift (beta - gamma*mu/sigma)")
        elif isinstance(mod, nn.ReLU):
            new = bnn.GatedActivation("relu")
        else:
            raise ValueError(f"bcosify: unsupported layer '{name}' of type {type(mod).__name__} in a conv stem")
        if i > 0:
            report.replace(name, mod, new)
        layers.append(new)
    return bnn.ConvStem.of(layers)


def convert_vision_transformer(visual: VisionTransformer, spec: BcosifySpec, mean: Sequence[float],
                               std: Sequence[float]) -> Tuple[nn.Module, ConversionReport]:
    report = ConversionReport(tower=type(visual).__name__)
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("bcosify: VisionTransformer with an attentional pooler is not supported")
    if visual.pool_type not in ("tok", "avg"):
        raise ValueError(f"bcosify: VisionTransformer pool_type {visual.pool_type!r} is not supported")
    blocks = nn.ModuleList([_block(blk, spec, f"blocks.{i}", report)
                            for i, blk in enumerate(visual.transformer.resblocks)])
    if visual.proj is not None:
        proj: nn.Module = linear_from_weight(visual.proj.t(), None, spec, "proj", report)
    else:
        proj = nn.Identity()
    positions = visual.positional_embedding.detach().clone()
    positions[1:] *= spec.positional_scale
    tower = BcosVisionTransformer(
        _patch_embedding(visual.conv1, spec, mean, std, report), visual.class_embedding,
        positions, layernorm(visual.ln_pre, spec, "ln_pre", report), blocks,
        layernorm(visual.ln_post, spec, "ln_post", report), proj, visual.pool_type,
        bool(visual.final_ln_after_pool), spec.positional)
    report.keep("class_embedding", visual.class_embedding, "additive term, explained as bias")
    if spec.positional == "drop":
        report.remove("positional_embedding", "patch positions (spec.positional 'drop')")
    else:
        scaled = f" (patch positions x {spec.positional_scale:g})" if spec.positional_scale != 1 else ""
        report.keep("positional_embedding", visual.positional_embedding,
                    ("additive term, explained as bias" if spec.positional == "bias" else
                     "times a constant-1 linear function of each patch's [x, 1-x]: explained on its pixels") + scaled)
    if not isinstance(visual.patch_dropout, nn.Identity):
        report.remove("patch_dropout", "training-time patch dropout (not used by the B-cos tower)")
    report.scan(tower)
    return tower, report
