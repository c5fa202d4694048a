"""Post-hoc attributions for a plain CLIP (or any model with `.encode_image(images01)` and `.visual`):
Gradient, Input x Gradient, Integrated Gradients and GradCAM, for comparison with B-cos contributions.

Written by hand: each method is a few lines, all are batched over K prompts (one batched backward per
chunk of prompts, where captum loops over targets), and the package needs no extra dependency. Each map
equals the library's with matched settings (captum 0.9.0 Saliency(abs=False) / InputXGradient /
IntegratedGradients, pytorch-grad-cam 1.5.7 GradCAM up to its min-max scaling), pinned by
tests/test_explain_baselines_captum.py (the libraries are test-only dependencies).

Integrated Gradients integrates with Gauss-Legendre, 32 points (captum's "gausslegendre"): on the
smooth towers measured (tiny ViTs, the demo's trained ViT teacher) the maps then sum to
cos(x) - cos(reference) within 1e-4 |cos(x)| (~1e-7, the fp32 floor), where the former 16 midpoint
steps missed by 17-220x. A ReLU tower's cosine has kinks along the path; no rule of a few dozen points
is complete there (the error falls ~1/steps; README, "Post-hoc baselines").

Target of every method: the cosine of the image embedding and a unit prompt embedding,
cos(f(x), t_k) (the full function, no detached norm). Every entry of `BASELINES` has the signature
    fn(model, images (N, 3, H, W) in [0, 1], text (K, D) or per-image (N, K, D) unit) -> maps (N, K, H, W)
and returns signed maps (GradCAM: >= 0). Input x Gradient and Integrated Gradients use the
network's zero input as reference: the CLIP mean colour for a PlainCLIP (whose first layer sees
(x - mean) / std), black otherwise; Gradient and Input x Gradient are summed over colour channels.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.explain.core import explain
from bcos_clip.explain.jacobian import batched_grads, project

Attribution = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
K_CHUNK = 64


def _reference(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean = getattr(model, "mean", None)
    if isinstance(mean, torch.Tensor) and mean.shape[-3] == images.shape[1]:
        return mean.to(images).expand_as(images)
    return torch.zeros_like(images)


class _EvalGrad:
    """eval() + enable_grad for the duration, restoring the train flag also on exceptions."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.grad = torch.enable_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.grad.__exit__(*exc)
        self.model.train(self.was_training)


def input_gradients(model: nn.Module, images: torch.Tensor, text: torch.Tensor,
                    k_chunk: int = K_CHUNK) -> torch.Tensor:
    """d cos(f(x), t_k) / d x for all k: (N, K, 3, H, W)."""
    x = images.detach().float().requires_grad_(True)
    with _EvalGrad(model):
        y = project(F.normalize(model.encode_image(x).float(), dim=-1), text.to(x))
        out = torch.empty(y.shape[0], y.shape[1], *x.shape[1:], device=x.device)
        for rows, g in batched_grads(y, x, k_chunk):
            out[:, rows] = g.transpose(0, 1)
    return out


def gradient(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Gradient ("saliency", signed), summed over colour channels: (N, K, H, W)."""
    return input_gradients(model, images, text).sum(2)


def input_x_gradient(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(x - reference) * gradient, summed over colour channels: (N, K, H, W)."""
    delta = images.float() - _reference(model, images.float())
    return (input_gradients(model, images, text) * delta.unsqueeze(1)).sum(2)


def integration_rule(rule: str, steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Points alpha_i in (0, 1) and weights w_i of a quadrature rule for integrals over [0, 1]:
    "gausslegendre" (Gauss-Legendre nodes and weights) or "riemann_middle" (midpoints, w = 1 / steps);
    the names and conventions of captum's IntegratedGradients `method`. -> (alphas (steps,), weights (steps,))."""
    if rule not in IG_RULES:
        raise ValueError(f"integration rule {rule!r}: choose one of {', '.join(IG_RULES)}")
    if steps < 1:
        raise ValueError(f"integration steps must be >= 1, got {steps}")
    alphas, weights = IG_RULES[rule](steps)
    return torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)


def _gauss_legendre(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
    return (nodes + 1) / 2, weights / 2


def _midpoint(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)


IG_RULES: Dict[str, Callable[[int], Tuple[np.ndarray, np.ndarray]]] = {
    "gausslegendre": _gauss_legendre,
    "riemann_middle": _midpoint,
}
IG_RULE, IG_STEPS = "gausslegendre", 32
IG_PASS_IMAGES, IG_PASS_GRAD_NUMEL = 16, 1 << 25  # per batched pass of the path points (benchmarks/bench_ig.py)


def integrated_gradients(model: nn.Module, images: torch.Tensor, text: torch.Tensor, steps: int = IG_STEPS,
                         rule: str = IG_RULE, pass_images: int = IG_PASS_IMAGES) -> torch.Tensor:
    """Integrated Gradients from the reference along the straight path, `steps` points of the quadrature
    `rule` (see `integration_rule`), summed over colour channels: (N, K, H, W). The maps sum to
    cos(x) - cos(reference) up to the quadrature error: <= 1e-4 |cos(x)| with the defaults where the
    cosine is smooth along the path (ViTs; module docstring), larger across a ReLU tower's kinks.
    Path points go through the model `pass_images` images at a time (at least one point per pass;
    `pass_images=len(images)`: one point per pass, the slow twin of the batched default)."""
    x = images.float()
    ref = _reference(model, x)
    alphas, weights = integration_rule(rule, steps)
    n, k = x.shape[0], text.shape[-2]
    total = torch.zeros(n, k, *x.shape[1:], device=x.device)
    per_pass = _path_points_per_pass(n, k * x[0].numel(), pass_images)
    for start in range(0, steps, per_pass):  # several path points in one batched pass: far fewer small calls
        a = alphas[start:start + per_pass].to(x)
        w = weights[start:start + per_pass].to(x)
        points = (ref + a.view(-1, 1, 1, 1, 1) * (x - ref)).flatten(0, 1)  # (m * N, 3, H, W), point-major
        t = text.to(x) if text.dim() == 2 else text.to(x).repeat(len(a), 1, 1)
        grads = input_gradients(model, points, t).view(len(a), n, k, *x.shape[1:])
        total += (w.view(-1, 1, 1, 1, 1, 1) * grads).sum(0)
    return (total * (x - ref).unsqueeze(1)).sum(2)


def _path_points_per_pass(n_images: int, grad_numel: int, pass_images: int) -> int:
    """How many IG path points go through the model together: at most `pass_images` images and
    IG_PASS_GRAD_NUMEL gradient entries ((images, prompts, 3, H, W)) per pass, at least one point."""
    return max(1, min(pass_images // max(n_images, 1), IG_PASS_GRAD_NUMEL // max(n_images * grad_numel, 1)))


def gradcam_layer(model: nn.Module) -> Tuple[nn.Module, bool]:
    """(module whose output GradCAM uses, is-token-sequence): `visual.layer4` for ResNets; for ViTs the
    tokens entering the last block (its first LayerNorm's output): the last block's own output tokens
    reach the embedding only through the class token, so their patch gradients are zero."""
    visual = model.visual
    if hasattr(visual, "layer4"):
        return visual.layer4, False
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None) or getattr(visual, "blocks", None)
    if blocks is not None and hasattr(blocks[-1], "ln_1"):
        return blocks[-1].ln_1, True
    raise ValueError(f"GradCAM: no ResNet layer4 or ViT block found in {type(visual).__name__}")


def _token_grid(t: torch.Tensor, visual: nn.Module, size: Tuple[int, int], lead: int) -> torch.Tensor:
    """Tokens (*lead, N, L, C) (or sequence-first) -> (*lead, N, C, gh, gw), prefix tokens dropped."""
    if not getattr(getattr(visual, "transformer", None), "batch_first", True):
        t = t.transpose(lead, lead + 1)
    patch = visual.conv1.stride
    gh, gw = size[0] // patch[0], size[1] // patch[1]
    t = t[..., t.shape[-2] - gh * gw:, :]
    return t.reshape(*t.shape[:-2], gh, gw, t.shape[-1]).movedim(-1, -3)


def gradcam(model: nn.Module, images: torch.Tensor, text: torch.Tensor, k_chunk: int = K_CHUNK) -> torch.Tensor:
    """GradCAM: relu(sum_c mean_hw(dcos/dA_c) A_c), upsampled (bilinear) to the image: (N, K, H, W)."""
    layer, tokens = gradcam_layer(model)
    acts = []
    handle = layer.register_forward_hook(lambda mod, inp, out: acts.append(out[0] if isinstance(out, tuple) else out))
    try:
        with _EvalGrad(model):
            x = images.detach().float().requires_grad_(True)
            y = project(F.normalize(model.encode_image(x).float(), dim=-1), text.to(x))
            (a,) = acts
            cams = []
            for _, g in batched_grads(y, a, k_chunk):  # g: like a, with a leading k
                ga, aa = (g, a.detach()) if not tokens else (
                    _token_grid(g, model.visual, x.shape[-2:], 1), _token_grid(a.detach(), model.visual, x.shape[-2:], 0))
                w = ga.mean((-2, -1), keepdim=True)  # (k, N, C, 1, 1)
                cams.append(F.relu((w * aa.unsqueeze(0)).sum(2)).transpose(0, 1))  # (N, k, h, w)
    finally:
        handle.remove()
        acts.clear()
    cam = torch.cat(cams, 1)
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)


BASELINES: Dict[str, Attribution] = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "gradcam": gradcam,
}


def bcos_contributions(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """B-cos contributions (N, K, H, W) of a BcosCLIP, with the baselines' signature."""
    return explain(model, images, text, method="prompts").contributions


ATTRIBUTIONS: Dict[str, Attribution] = {"bcos": bcos_contributions, **BASELINES}
