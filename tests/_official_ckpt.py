"""Checkpoints laid out the way the B-cosification trainer (shrebox/B-cosification: PyTorch Lightning
1.9.5, torch.save protocol 2) writes them, and a reference forward written from its equations.

Derived from reading that code (the facts are listed in bcos_clip/models/official.py); nothing of it is
copied. What their trainer produces for the CLIP RN50 experiments:

- the image tower is OpenAI CLIP's ModifiedResNet (same module names as open_clip's), converted in
  place: every Conv2d becomes a module holding the weight in `.linear` (`<conv>.linear.weight`; the stem
  conv takes 6 input channels), every BatchNorm2d keeps weight, running_mean, running_var and
  num_batches_tracked (bias set to None), the attention pool has no positional embedding and no biases,
  q/k/v_proj stay nn.Linear (`.weight`) and c_proj holds `.linear.weight`;
- every nn.Sequential is rebuilt from its children positionally, so the ResNet `downsample`
  (`-1` AvgPool2d, `0` conv, `1` BN) is stored as `0`, `1`, `2`;
- the LightningModule registers `model` (their network wrapper, which keeps the tower as `.model`),
  then `clip_model` (the frozen teacher image tower, float32), then (EMA configs only) `ema`, a torch
  AveragedModel: `ema.n_averaged` and `ema.module.model.<tower>`;
- the Lightning file: epoch, global_step, pytorch-lightning_version, state_dict (an OrderedDict with
  `_metadata`), loops, callbacks, optimizer_states, lr_schedulers, hparams_name, hyper_parameters;
- `scripts/strip_checkpoints.py` keeps `state_dict` entries under `model.` (or `ema.module.`) with that
  prefix removed, as a plain dict in a `.pth`.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import pathlib
import sys
import types
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

QK_GAIN = 30.0  # large q/k weights: attention far from uniform, so q/k semantics matter
BN_KEYS = ("weight", "running_mean", "running_var", "num_batches_tracked")
EXPERIMENT = "resnet_50_clip_b2_noBias_randomResizedCrop_sigLip_ImageNet_bcosification"


def their_tower_entries(tower: nn.Module, prefix: str = "") -> Iterator[Tuple[str, str, tuple]]:
    """(key, kind, shape) of every tensor their converted tower stores, in state_dict order.

    `tower`: an open_clip ModifiedResNet (module names as OpenAI's). Children of an nn.Sequential get
    their position as key (the positional rebuild)."""
    if isinstance(tower, nn.Conv2d):
        cin = 6 if tower.in_channels == 3 else tower.in_channels
        yield f"{prefix}linear.weight", "conv", (tower.out_channels, cin, *tower.kernel_size)
        return
    if isinstance(tower, nn.BatchNorm2d):
        for key in BN_KEYS:
            yield f"{prefix}{key}", f"bn.{key}", () if key == "num_batches_tracked" else (tower.num_features,)
        return
    if isinstance(tower, nn.Linear):
        plain = prefix.endswith(("q_proj.", "k_proj.", "v_proj."))
        yield f"{prefix}{'weight' if plain else 'linear.weight'}", prefix.split(".")[-2], \
            (tower.out_features, tower.in_features)
        return
    for position, (name, child) in enumerate(tower.named_children()):
        key = str(position) if isinstance(tower, nn.Sequential) else name
        yield from their_tower_entries(child, f"{prefix}{key}.")


def their_tower_state(tower: nn.Module, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Random float32 tensors (int64 num_batches_tracked) under the keys their trainer writes."""
    g = torch.Generator().manual_seed(seed)
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, kind, shape in their_tower_entries(tower):
        if kind == "conv":
            w = torch.randn(*shape, generator=g)
            sd[key] = w * (2.0 / w.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        elif kind == "bn.num_batches_tracked":
            sd[key] = torch.tensor(450450)
        elif kind == "bn.running_mean":
            sd[key] = torch.rand(*shape, generator=g) - 0.5
        elif kind.startswith("bn."):
            sd[key] = 0.5 + torch.rand(*shape, generator=g)
        else:  # q/k/v/c projections
            gain = QK_GAIN if kind in ("q_proj", "k_proj") else 1.0
            sd[key] = torch.randn(*shape, generator=g) * gain / math.sqrt(shape[1])
    return sd


def _metadata(keys: List[str]) -> "OrderedDict[str, dict]":
    """nn.Module.state_dict's `_metadata`: a version record per module prefix."""
    prefixes = {""}
    for key in keys:
        parts = key.split(".")[:-1]
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return OrderedDict((p, {"version": 1}) for p in sorted(prefixes))


def lightning_state_dict(tower: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor],
                         ema_tower: Optional[Dict[str, torch.Tensor]] = None) -> "OrderedDict[str, torch.Tensor]":
    """The LightningModule's state_dict: model.model.*, clip_model.*, then ema.* (when given)."""
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    sd.update((f"model.model.{k}", v) for k, v in tower.items())
    sd.update((f"clip_model.{k}", v) for k, v in teacher.items())
    if ema_tower is not None:
        sd["ema.n_averaged"] = torch.tensor(14076)
        sd.update((f"ema.module.model.{k}", v) for k, v in ema_tower.items())
    sd._metadata = _metadata(list(sd))
    return sd


def lightning_checkpoint(state_dict: Dict[str, torch.Tensor], extra_hparams: Optional[dict] = None,
                         callback_extra: Optional[dict] = None) -> dict:
    """A `last.ckpt` as PL 1.9.5 writes it (after 90 epochs): every top-level entry, plausible values."""
    trained = [k for k in state_dict if k.startswith("model.") and not k.endswith(BN_KEYS[1:])]  # parameters
    run_dir = "/experiments/ImageNet/clip_bcosification/" + EXPERIMENT
    ckpt_cb = ("ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
               "'every_n_epochs': 1, 'train_time_interval': None}")
    progress = {"ready": 450450, "completed": 450450, "started": 450450, "processed": 450450}
    hparams = {"dataset": "ImageNet", "base_network": "clip_bcosification", "experiment_name": EXPERIMENT,
               "auto_optimization": True, "clip_kd": True, "use_agc": True,
               "data": {"batch_size": 64, "num_workers": 16, "num_classes": 1000,
                        "train_transform": "CLIPBcosImageNetClassificationPresetTrain(crop_size=224)"},
               "model": {"is_bcos": True, "name": "resnet50clip", "bcos_args": {"b": 2, "max_out": 1},
                         "bcosify_args": {"clip_kd": True, "fix_b": True, "norm_layer": "BnUncV2",
                                          "schDLR": "cosineAnnealingLR", "use_bias": False}},
               "criterion": "SigLipLoss()", "optimizer": {"name": "Adam", "lr": 1e-4},
               "lr_scheduler": {"name": "cosineannealinglr", "epochs": 90}, "trainer": {"max_epochs": 90},
               **(extra_hparams or {})}
    return {
        "epoch": 89, "global_step": 450450, "pytorch-lightning_version": "1.9.5",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 450450},
                               "epoch_loop.batch_progress": {"total": dict(progress), "current": dict(progress),
                                                             "is_last_batch": True},
                               "epoch_progress": {"total": {"ready": 90, "completed": 89}, "current": {}}},
                  "validate_loop": {"state_dict": {}, "dataloader_progress": {"total": {"ready": 90}}},
                  "test_loop": {"state_dict": {}}, "predict_loop": {"state_dict": {}}},
        "callbacks": {ckpt_cb: {"monitor": "val_loss", "best_model_score": torch.tensor(0.7132),
                                "best_model_path": f"{run_dir}/epoch=88-val_loss=0.7132.ckpt",
                                "current_score": torch.tensor(0.7141), "dirpath": run_dir,
                                "best_k_models": {f"{run_dir}/epoch=88-val_loss=0.7132.ckpt": torch.tensor(0.7132)},
                                "kth_best_model_path": f"{run_dir}/epoch=86-val_loss=0.7150.ckpt",
                                "kth_value": torch.tensor(0.7150), "last_model_path": f"{run_dir}/last.ckpt",
                                **(callback_extra or {})}},
        "optimizer_states": [{
            "state": {i: {"step": torch.tensor(450450.0), "exp_avg": torch.zeros_like(state_dict[k]),
                          "exp_avg_sq": torch.zeros_like(state_dict[k])} for i, k in enumerate(trained)},
            "param_groups": [{"lr": 3.05e-8, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                              "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                              "differentiable": False, "fused": None, "initial_lr": 1e-4,
                              "params": list(range(len(trained)))}]}],
        "lr_schedulers": [{"T_max": 90, "eta_min": 0.0, "base_lrs": [1e-4], "last_epoch": 90, "verbose": False,
                           "_step_count": 91, "_get_lr_called_within_step": False, "_last_lr": [0.0]}],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }


def stripped(ckpt: dict, ema: bool = False) -> Dict[str, torch.Tensor]:
    """What their strip_checkpoints.py saves: the `model.` (or `ema.module.`) entries, prefix removed."""
    prefix = "ema.module." if ema else "model."
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def to_open_clip_names(tower: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The same tensors keyed with open_clip's downsample names (-1, 0, 1): the layout of synthetic
    checkpoints built from open_clip's module names."""
    out = {}
    for key, value in tower.items():
        parts = key.split(".")
        if len(parts) > 3 and parts[2] == "downsample":
            parts[3] = str(int(parts[3]) - 1)
        out[".".join(parts)] = value
    return out


# -- classes of the trainer's world, for files that pickle objects beside their tensors --------------

@contextlib.contextmanager
def foreign_classes(marker: pathlib.Path) -> Iterator[Dict[str, type]]:
    """Importable stand-ins for classes a real Lightning file pickles (Lightning's AttributeDict, the
    trainer's own loss and factory objects); unpickling any of them for real creates `marker`."""
    def touch(*_: object) -> None:
        marker.write_text("unpickled")

    class AttributeDict(dict):
        def __setitem__(self, k, v):  # a real unpickle fills it through SETITEMS
            touch()
            super().__setitem__(k, v)

    class SigLipLoss(nn.Module):
        def __setstate__(self, state):
            touch()
            super().__setstate__(state)

    class OptimizerFactory:
        def __init__(self, name: str, lr: float) -> None:
            self.name, self.lr = name, lr

        def __setstate__(self, state):
            touch()
            self.__dict__.update(state)

    classes = {"pytorch_lightning.utilities.parsing": AttributeDict, "bcos.modules.losses": SigLipLoss,
               "bcos.optim.optimizer_factory": OptimizerFactory}
    added = []
    for module_name, cls in classes.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        cls.__module__, cls.__qualname__ = module_name, cls.__name__
        setattr(sys.modules[module_name], cls.__name__, cls)
    try:
        yield {cls.__name__: cls for cls in classes.values()}
    finally:
        for name in added:
            sys.modules.pop(name, None)


def hparams_with_objects(classes: Dict[str, type]) -> dict:
    """Unsanitised hyper-parameters, as other trainer versions pickle them."""
    return {"config": classes["AttributeDict"](criterion=classes["SigLipLoss"](),
                                               optimizer=classes["OptimizerFactory"]("Adam", 1e-4)),
            "args": argparse.Namespace(base_directory=pathlib.PurePosixPath("/experiments"), amp=False),
            "best_acc": np.float64(0.5971), "seen_classes": np.arange(3)}


class Payload:
    """Unpickling this runs code: it creates `path`."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


# -- the reference forward, from their equations ---------------------------------------------------

class Factors:
    """Dynamic factors of one pass: recorded (detached) in the image's pass, replayed in the bias pass;
    None: a plain forward."""

    def __init__(self, replay: Optional[List[torch.Tensor]] = None) -> None:
        self.saved: List[torch.Tensor] = []
        self.replay = list(replay) if replay is not None else None

    def __call__(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.replay is not None:
            return self.replay.pop(0)
        factor = compute().detach()
        self.saved.append(factor)
        return factor


def reference_tower(tower: Dict[str, torch.Tensor], x6: torch.Tensor, mean, std, heads: int,
                    dyn: Optional[Factors] = None) -> torch.Tensor:
    """Their forward on x6 = [x, 1-x] (N, 6, H, W) -> (N, D), in x6's dtype.

    Normalize6 with Python-float constants; B-cos B=2 convs z * |z| / ||x_patch|| (patch norms by
    unfold, sqrt(sum x^2 + 1e-6)); uncentered BN gamma * x / sqrt(var + 1e-5); ReLU; anti-aliasing avg
    pools; attention pool without positional embedding or biases, q/k/v and c_proj plain linear maps.
    With `dyn`, every dynamic factor (B-cos scale, ReLU gate, attention weights) goes through it."""
    dt = x6.dtype
    w = {k: v.to(dt) for k, v in tower.items()}
    gate = dyn or (lambda compute: compute())
    m = torch.tensor(list(mean) + [1.0 - v for v in mean], dtype=dt).view(1, 6, 1, 1)
    s = torch.tensor(list(std) * 2, dtype=dt).view(1, 6, 1, 1)
    x = (x6 - m) / s

    def conv(x, name, stride=1, padding=0):
        weight = w[f"{name}.linear.weight"]
        z = F.conv2d(x, weight, stride=stride, padding=padding)
        cols = F.unfold(x, weight.shape[-1], padding=padding, stride=stride)  # (N, C*k*k, L)
        norm = (cols.square().sum(1) + 1e-6).sqrt().view(z.shape[0], 1, *z.shape[2:])
        return z * gate(lambda: z.abs() / norm)

    def bn(x, name):
        return w[f"{name}.weight"].view(1, -1, 1, 1) * x / (w[f"{name}.running_var"].view(1, -1, 1, 1) + 1e-5).sqrt()

    def relu(x):
        return x * gate(lambda: (x > 0).to(dt))

    x = relu(bn(conv(x, "conv1", 2, 1), "bn1"))
    x = relu(bn(conv(x, "conv2", 1, 1), "bn2"))
    x = F.avg_pool2d(relu(bn(conv(x, "conv3", 1, 1), "bn3")), 2)
    for layer in range(1, 5):
        block = 0
        while f"layer{layer}.{block}.conv1.linear.weight" in w:
            b = f"layer{layer}.{block}"
            stride = 2 if layer > 1 and block == 0 else 1
            out = relu(bn(conv(x, f"{b}.conv1"), f"{b}.bn1"))
            out = relu(bn(conv(out, f"{b}.conv2", 1, 1), f"{b}.bn2"))
            out = F.avg_pool2d(out, stride) if stride > 1 else out
            out = bn(conv(out, f"{b}.conv3"), f"{b}.bn3")
            identity = x
            if f"{b}.downsample.1.linear.weight" in w:  # 0: AvgPool2d, 1: conv, 2: BN
                pooled = F.avg_pool2d(x, stride) if stride > 1 else x
                identity = bn(conv(pooled, f"{b}.downsample.1"), f"{b}.downsample.2")
            x = relu(out + identity)
            block += 1
    t = x.flatten(2).transpose(1, 2)  # (N, HW, C)
    t = torch.cat([t.mean(1, keepdim=True), t], 1)
    n, length, c = t.shape

    def split(v):  # (N, L, C) -> (N, heads, L, C / heads)
        return v.view(n, -1, heads, c // heads).transpose(1, 2)

    q, k = split(t[:, :1] @ w["attnpool.q_proj.weight"].T), split(t @ w["attnpool.k_proj.weight"].T)
    attn = gate(lambda: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), -1))
    v = split(t @ w["attnpool.v_proj.weight"].T)
    pooled = (attn @ v).transpose(1, 2).reshape(n, c)
    return pooled @ w["attnpool.c_proj.linear.weight"].T


def reference_explanation(tower, images: torch.Tensor, text: torch.Tensor, mean, std, heads: int):
    """(contributions (N, K, H, W), scores (N, K), bias (N, K)) from their equations, in explanation
    mode: every dynamic factor detached, score = <o / ||o||, t> with ||o|| detached, contributions =
    sum over the 6 channels of x6 * d score / d x6, bias = the tower at x6 = 0 with the image's factors."""
    x6 = torch.cat([images, 1 - images], 1).detach().requires_grad_(True)
    dyn = Factors()
    o = reference_tower(tower, x6, mean, std, heads, dyn)
    norm = o.norm(dim=-1, keepdim=True).detach()
    scores = (o / norm) @ text.T
    contributions = []
    for k in range(text.shape[0]):
        (g,) = torch.autograd.grad(scores[:, k].sum(), x6, retain_graph=True)
        contributions.append((g * x6).sum(1).detach())
    with torch.no_grad():
        bias = (reference_tower(tower, torch.zeros_like(x6), mean, std, heads, Factors(dyn.saved)) / norm) @ text.T
    return torch.stack(contributions, 1), scores.detach(), bias


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
