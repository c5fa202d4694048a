"""`bcos-clip train`: distil a B-cosified CLIP image tower against its frozen teacher.

Flags override the YAML given by ``--config``; unset flags keep the YAML's (or the default) value.
Under ``torchrun --nproc_per_node N -m bcos_clip.cli train ...`` every rank runs this (DDP).
"""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_model, add_output

BOOL = argparse.BooleanOptionalAction


def _data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train-data", help="shards: '/data/cc3m/{00000..00331}.tar', a folder of tars or of images; "
                                        "several sources joined by '::'")
    g.add_argument("--train-num-samples", type=int,
                   help="samples per epoch (default: img2dataset *_stats.json 'successes', else counted)")
    g.add_argument("--dataset-resampled", action=BOOL, help="draw shards with replacement (default: off)")
    g.add_argument("--shuffle-buffer", type=int, help="sample shuffle buffer per worker (default 1000)")
    g.add_argument("--folder-chunk-size", type=int, help="images per pseudo-shard of an image folder (1000)")
    g.add_argument("--crop-scale-min", type=float, help="RandomResizedCrop smallest area fraction (0.08)")
    g.add_argument("--workers", type=int, help="data workers per rank, clamped to its shard count (default 4)")


def _loss_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss")
    g.add_argument("--loss", choices=["text_kd", "siglip", "cosine"],
                   help="text_kd (default): KL of cosine rows over frozen text embeddings; siglip: the "
                        "paper's loss; cosine: 1 - cos to the teacher's image embedding")
    g.add_argument("--temperature", type=float, help="text_kd softmax temperature (0.01)")
    g.add_argument("--caption-weight", type=float, help="text_kd: weight of 1 - cos to the own caption (0)")
    g.add_argument("--siglip-scale", type=float, help="siglip logit scale (10)")
    g.add_argument("--siglip-bias", type=float, help="siglip logit bias (-10)")
    g.add_argument("--text-source", choices=["auto", "captions", "classnames"],
                   help="text_kd targets: the batch's captions or class prompts (auto: captions if the "
                        "shards carry .txt)")
    g.add_argument("--classnames", help="class names file (one a line); default open_clip's ImageNet names")
    g.add_argument("--templates", help="prompt templates: openai, simple, or a file with {} / {c}")
    g.add_argument("--text-cache", help="folder caching caption embeddings by caption hash")


def _optim_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help="images per rank per step (64)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="epochs (an epoch = the sample count / global batch)")
    length.add_argument("--steps", type=int, help="optimiser steps (instead of --epochs)")
    g.add_argument("--accum-freq", type=int, help="gradient accumulation: batches per optimiser step (1)")
    g.add_argument("--optimizer", choices=["adam", "adamw"], help="adam (default, the paper's) or adamw")
    g.add_argument("--lr", type=float, help="peak learning rate (1e-4)")
    g.add_argument("--wd", type=float, help="weight decay (0)")
    g.add_argument("--beta1", type=float, help="Adam beta1 (0.9)")
    g.add_argument("--beta2", type=float, help="Adam beta2 (0.999)")
    g.add_argument("--eps", type=float, help="Adam epsilon (1e-8)")
    g.add_argument("--lr-scheduler", choices=["cosine", "const"], help="schedule after warm-up (cosine)")
    g.add_argument("--warmup", type=int, help="linear warm-up steps (0)")
    g.add_argument("--agc-clip", type=float, help="adaptive gradient clipping factor, unit-wise (0.01; 0 = off)")
    g.add_argument("--agc-eps", type=float, help="adaptive gradient clipping epsilon (1e-3)")
    g.add_argument("--grad-clip-norm", type=float, help="also clip the global gradient norm to this")
    g.add_argument("--precision", choices=["auto", "fp32", "amp", "amp_bf16", "bf16"],
                   help="auto (default: on CUDA amp_bf16 where the GPU supports bf16, else amp; fp32 on CPU), "
                        "amp (fp16 autocast + GradScaler), amp_bf16, bf16 (pure bf16 weights) or fp32")
    g.add_argument("--torchcompile", action=BOOL, help="torch.compile the student tower")
    g.add_argument("--max-bad-steps", type=int, help="stop after this many skipped steps (20)")
    g.add_argument("--bcos-b", type=float, help="B of the B-cosified layers (2)")
    g.add_argument("--bcos-bias", action=BOOL, help="keep biases in the B-cosified tower (default: off)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML run config (configs/cc3m_rn50.yaml, ...); flags override it")
    g.add_argument("--seed", type=int, help="seed of data order, augmentation and initialisation (0)")
    g.add_argument("--device", help="auto (default), cpu, cuda")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (1000) and at the end")
    g.add_argument("--keep-checkpoints", type=int, help="keep only the newest N step checkpoints (0 = all)")
    g.add_argument("--resume", help="'latest' (OUTPUT/checkpoints/latest, fresh start if none) or a checkpoint dir")
    g.add_argument("--log-every", type=int, help="write metrics.jsonl every N steps (10)")
    g.add_argument("--report-to", choices=["", "tensorboard"], help="also log to TensorBoard")
    g.add_argument("--zeroshot-data", help="a small held-out CLIP_benchmark wds/ folder for a zero-shot check")
    g.add_argument("--zeroshot-every", type=int, help="run the zero-shot check every N steps (0 = never)")
    g.add_argument("--zeroshot-samples", type=int, help="images of the zero-shot check (1000)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="distil a B-cosified CLIP image tower against the frozen CLIP",
                       description="Distil the B-cosified image tower of a CLIP model against the frozen "
                                   "original on webdataset shards (img2dataset CC3M, ImageNet shards, image "
                                   "folders). Run under torchrun for DDP. Writes OUTPUT/metrics.jsonl and "
                                   "OUTPUT/checkpoints/latest (readable by bcos_clip.load).",
                       argument_default=argparse.SUPPRESS)
    add_model(p, required=False)
    add_output(p, required=False, help="run directory (checkpoints/, metrics.jsonl, summary.json)")
    _data_flags(p)
    _loss_flags(p)
    _optim_flags(p)
    _run_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.train import build_config, train
    from bcos_clip.train.config import FIELDS

    flags = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}
    cfg = build_config(flags, getattr(args, "config", None))
    summary = train(cfg)
    if summary["rank"] == 0:
        print(f"trained {summary['steps']} steps; checkpoint {summary['checkpoint']}")
    return 0
