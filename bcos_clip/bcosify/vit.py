"""Convert an open_clip VisionTransformer image tower (new ground; METHOD.md §2, ViT).

LayerNorms stay centred (bias removed unless kept, std detachable), attention q/k set a detachable
attention matrix, value/out/MLP/`proj` become B-cos linears, GELU becomes x * Phi(x). The class token and
the positional embedding are additive terms that are kept: explanations report them as `bias`.
"""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

import torch
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

    def __init__(self, conv1: bnn.BcosConv2d, class_embedding: torch.Tensor,
                 positional_embedding: torch.Tensor, ln_pre: nn.Module, blocks: nn.ModuleList,
                 ln_post: nn.Module, proj: nn.Module, pool_type: str, final_ln_after_pool: bool) -> None:
        super().__init__()
        self.conv1 = conv1
        self.class_embedding = nn.Parameter(class_embedding.detach().clone())
        self.positional_embedding = nn.Parameter(positional_embedding.detach().clone())
        self.ln_pre, self.blocks, self.ln_post, self.proj = ln_pre, blocks, ln_post, proj
        self.pool_type, self.final_ln_after_pool = pool_type, final_ln_after_pool

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if not self.final_ln_after_pool:
            x = self.ln_post(x)
        pooled = x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]
        return self.ln_post(pooled) if self.final_ln_after_pool else pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.flatten(2).transpose(1, 2)  # (N, grid*grid, D)
        if x.shape[1] + 1 != self.positional_embedding.shape[0]:
            raise ValueError(f"ViT tower: input gives {x.shape[1]} patches but the positional embedding "
                             f"has {self.positional_embedding.shape[0] - 1}: resize images to the tower's size")
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
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
    tower = BcosVisionTransformer(
        first_conv(visual.conv1, spec, mean, std, "conv1", report), visual.class_embedding,
        visual.positional_embedding, layernorm(visual.ln_pre, spec, "ln_pre", report), blocks,
        layernorm(visual.ln_post, spec, "ln_post", report), proj, visual.pool_type,
        bool(visual.final_ln_after_pool))
    report.keep("class_embedding", visual.class_embedding, "additive term, explained as bias")
    report.keep("positional_embedding", visual.positional_embedding, "additive term, explained as bias")
    if not isinstance(visual.patch_dropout, nn.Identity):
        report.remove("patch_dropout", "training-time patch dropout (not used by the B-cos tower)")
    report.scan(tower)
    return tower, report
