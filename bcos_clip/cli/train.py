"""`bcos-clip train`: distil a B-cosified CLIP image tower against its frozen teacher.

Flags override the YAML given by ``--config``; unset flags keep the YAML's (or the default) value.
Under ``torchrun --nproc_per_node N -m bcos_clip.cli train ...`` every rank runs this (DDP).
open_clip_train's names of the same settings are accepted (``bcos_clip.train.open_clip_names``).
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from datetime import datetime

from bcos_clip.cli.common import add_model, add_output
from bcos_clip.cli.types import number
from bcos_clip.train.open_clip_names import OPEN_CLIP_PRECISIONS, RUN_FOLDER_KEYS

BOOL = argparse.BooleanOptionalAction


def _t(name: str):
    """The argparse type of option ``name``: its kind and range from the training config's own table
    (``bcos_clip.train.config.BOUNDS``), so flags and YAML configs are held to the same rules."""
    from bcos_clip.train.config import BOUNDS, Bound, option_kind

    b = BOUNDS.get(name, Bound())
    return number(option_kind(name), b.low, b.high, b.low_open, b.high_open, name=name)


def _data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train-data", help="shards: '/data/cc3m/{00000..00331}.tar', a folder of tars or of images; "
                                        "several sources joined by '::'")
    g.add_argument("--train-num-samples", type=_t("train_num_samples"),
                   help="samples per epoch (default: img2dataset *_stats.json 'successes', else counted)")
    g.add_argument("--dataset-resampled", action=BOOL, help="draw shards with replacement (default: off)")
    g.add_argument("--shuffle-buffer", type=_t("shuffle_buffer"),
                   help="sample shuffle buffer per worker (default 1000)")
    g.add_argument("--folder-chunk-size", type=_t("folder_chunk_size"),
                   help="images per pseudo-shard of an image folder (1000)")
    g.add_argument("--crop-scale-min", type=_t("crop_scale_min"),
                   help="RandomResizedCrop smallest area fraction (0.08)")
    g.add_argument("--workers", type=_t("workers"),
                   help="data workers per rank, clamped to its shard count (default 4)")


def _loss_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss")
    g.add_argument("--loss", choices=["text_kd", "siglip", "cosine"],
                   help="text_kd (default): KL of cosine rows over frozen text embeddings; siglip: the "
                        "paper's loss; cosine: 1 - cos to the teacher's image embedding")
    g.add_argument("--temperature", type=_t("temperature"), help="text_kd softmax temperature (0.01)")
    g.add_argument("--caption-weight", type=_t("caption_weight"),
                   help="text_kd: weight of 1 - cos to the own caption (0)")
    g.add_argument("--siglip-scale", type=_t("siglip_scale"), help="siglip logit scale (10)")
    g.add_argument("--siglip-bias", type=_t("siglip_bias"), help="siglip logit bias (-10)")
    g.add_argument("--text-source", choices=["auto", "captions", "classnames"],
                   help="text_kd targets: the batch's captions or class prompts (auto: captions if the "
                        "shards carry .txt)")
    g.add_argument("--classnames", help="class names file (one a line); default open_clip's ImageNet names")
    g.add_argument("--templates", help="prompt templates: openai, simple, or a file with {} / {c}")
    g.add_argument("--text-cache", help="folder caching caption embeddings by caption hash")


def _optim_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=_t("batch_size"), help="images per rank per step (64)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_t("epochs"), help="epochs (an epoch = the sample count / global batch)")
    length.add_argument("--steps", type=_t("steps"), help="optimiser steps (instead of --epochs)")
    g.add_argument("--accum-freq", type=_t("accum_freq"),
                   help="gradient accumulation: batches per optimiser step (1)")
    g.add_argument("--optimizer", "--opt", dest="optimizer", choices=["adam", "adamw"],
                   help="adam (default, the paper's) or adamw (open_clip_train's --opt and default)")
    g.add_argument("--lr", type=_t("lr"), help="peak learning rate (1e-4)")
    g.add_argument("--wd", type=_t("wd"), help="weight decay (0)")
    g.add_argument("--beta1", type=_t("beta1"), help="Adam beta1 (0.9)")
    g.add_argument("--beta2", type=_t("beta2"), help="Adam beta2 (0.999)")
    g.add_argument("--eps", type=_t("eps"), help="Adam epsilon (1e-8)")
    g.add_argument("--lr-scheduler", choices=["cosine", "const"], help="schedule after warm-up (cosine)")
    g.add_argument("--warmup", type=_t("warmup"), help="linear warm-up steps (0)")
    g.add_argument("--agc-clip", type=_t("agc_clip"),
                   help="adaptive gradient clipping factor, unit-wise (0.01; 0 = off)")
    g.add_argument("--agc-eps", type=_t("agc_eps"), help="adaptive gradient clipping epsilon (1e-3)")
    g.add_argument("--grad-clip-norm", type=_t("grad_clip_norm"), help="also clip the global gradient norm to this")
    g.add_argument("--precision", choices=["auto", "fp32", "amp", "amp_bf16", "bf16", *OPEN_CLIP_PRECISIONS],
                   help="auto (default: on CUDA amp_bf16 where the GPU supports bf16, else amp; fp32 on CPU), "
                        "amp (fp16 autocast + GradScaler), amp_bf16 (= amp_bfloat16), bf16 (= open_clip_train's "
                        "pure_bf16: every student weight in bf16) or fp32; fp16 / pure_fp16 (fp16 weights, no loss "
                        "scaling) are refused with the reason")
    g.add_argument("--torchcompile", action=BOOL, help="torch.compile the student tower")
    g.add_argument("--max-bad-steps", type=_t("max_bad_steps"), help="stop after this many skipped steps (20)")
    g.add_argument("--bcos-b", type=_t("bcos_b"), help="B of the B-cosified layers (2)")
    g.add_argument("--bcos-bias", action=BOOL, help="keep biases in the B-cosified tower (default: off)")
    g.add_argument("--bcos-qk", choices=["bcos", "linear"],
                   help="attention q/k projections: B-cos linears (default) or plain linears")
    g.add_argument("--bcos-layernorm", choices=["centered", "uncentered"],
                   help="LayerNorm of a ViT tower: centered (default, exact at B = 1) or uncentered (RMS)")
    g.add_argument("--bcos-positional", choices=["bias", "input", "drop"],
                   help="a ViT's positional embedding: added as a bias (default) or as a linear term of each "
                        "patch's [x, 1-x] (same function; explanations attribute it to the patch), or dropped")
    g.add_argument("--bcos-positional-scale", type=_t("bcos_positional_scale"),
                   help="a ViT's patch positions times this at conversion (1: unchanged; < 1 gives the B-cos "
                        "patch path a larger share of each token)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML run config (configs/cc3m_rn50.yaml, ...); flags override it")
    g.add_argument("--seed", type=_t("seed"), help="seed of data order, augmentation and initialisation (0)")
    g.add_argument("--device", help="auto (default), cpu, cuda")
    g.add_argument("--resume", help="'latest': continue OUTPUT's run from OUTPUT/checkpoints/latest; a new or empty "
                                    "OUTPUT (or the same settings stopped before their first checkpoint) starts "
                                    "fresh, a broken 'latest' link is an error. Or a checkpoint dir (step_N)")
    g.add_argument("--overwrite", action="store_true",
                   help="OUTPUT holds an earlier run: remove its files (checkpoints/, metrics.jsonl, "
                        "train_config.json, summary.json, out.log, tensorboard/; nothing else) and start anew. "
                        "Without it (or --resume) such a folder is refused")
    g.add_argument("--log-every", "--log-metric-every-n-steps", dest="log_every", type=_t("log_every"),
                   help="write metrics.jsonl (and TensorBoard / wandb) every N steps (10)")
    g.add_argument("--log-every-n-steps", type=_t("log_every_n_steps"),
                   help="a progress line (step, epoch, loss, lr, samples/s) in the log and OUTPUT/out.log every "
                        "N steps (100)")
    g.add_argument("--report-to", help="also send the metrics to: tensorboard (OUTPUT/tensorboard), wandb "
                                       "(OUTPUT/wandb; offline: WANDB_MODE=offline), comma-separated, or all")
    g.add_argument("--wandb-project-name", help="wandb project (bcos-clip)")
    g.add_argument("--wandb-notes", help="wandb run notes")
    g.add_argument("--zeroshot-data", help="a small held-out CLIP_benchmark wds/ folder for a zero-shot check")
    g.add_argument("--zeroshot-every", type=_t("zeroshot_every"),
                   help="run the zero-shot check every N steps (0 = never)")
    g.add_argument("--zeroshot-frequency", type=_t("zeroshot_frequency"),
                   help="also run it after every N-th epoch and at the end (open_clip_train's; 0 = never)")
    g.add_argument("--zeroshot-samples", type=_t("zeroshot_samples"), help="images of the zero-shot check (1000)")


def _run_folder_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run folder and checkpoints")
    g.add_argument("--logs", help="open_clip_train's spelling of the run folder: LOGS/NAME (instead of --output; "
                                  "default ./logs/ when only --name is given)")
    g.add_argument("--name", help="the run's name under --logs (default: start time, model, lr, batch, workers, "
                                  "precision, as open_clip_train makes it); also the wandb run name")
    g.add_argument("--save-every", type=_t("save_every"),
                   help="checkpoint every N steps (default 1000; none when only --save-frequency is given) and at "
                        "the end")
    g.add_argument("--save-frequency", type=_t("save_frequency"),
                   help="also checkpoint after every N-th epoch (open_clip_train's; 0 = off)")
    g.add_argument("--keep-checkpoints", type=_t("keep_checkpoints"),
                   help="keep only the newest N step checkpoints (0 = all)")
    g.add_argument("--delete-previous-checkpoint", dest="keep_checkpoints", action="store_const", const=1,
                   help="open_clip_train's: keep only the newest checkpoint (= --keep-checkpoints 1)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="distil a B-cosified CLIP image tower against the frozen CLIP",
                       description="Distil the B-cosified image tower of a CLIP model against the frozen "
                                   "original on webdataset shards (img2dataset CC3M, ImageNet shards, image "
                                   "folders). Run under torchrun for DDP. Writes OUTPUT/metrics.jsonl, OUTPUT/out.log "
                                   "and OUTPUT/checkpoints/latest (readable by bcos_clip.load). open_clip_train's "
                                   "flags of the same meaning are accepted (--logs/--name, --save-frequency, "
                                   "--zeroshot-frequency, --opt, --report-to wandb, --log-every-n-steps, ...).",
                       argument_default=argparse.SUPPRESS)
    add_model(p, required=False)
    add_output(p, required=False, help="run directory (checkpoints/, metrics.jsonl, out.log, summary.json); or "
                                        "--logs DIR --name NAME")
    _data_flags(p)
    _loss_flags(p)
    _optim_flags(p)
    _run_flags(p)
    _run_folder_flags(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of parsed ``bcos-clip train`` flags over their ``--config`` YAML."""
    from bcos_clip.train import build_config
    from bcos_clip.train.config import FIELDS

    flags = {k: v for k, v in vars(args).items() if (k in FIELDS or k in RUN_FOLDER_KEYS) and v is not None}
    # a made-up --name holds the start time, which torchrun's ranks would not share: required there
    now = None if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else datetime.now()
    return build_config(flags, getattr(args, "config", None), now=now)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.train import train

    summary = train(config_from_args(args))
    if summary["rank"] == 0:
        print(f"trained {summary['steps']} steps; checkpoint {summary['checkpoint']}")
        bad = Counter()
        for rank in summary["ranks"]:
            bad.update({k: v for k, v in rank["counters"].items() if k.startswith("bad_data_")})
        if bad:
            counts = ", ".join(f"{k[len('bad_data_'):]}={v}" for k, v in sorted(bad.items()))
            print(f"bad samples (skipped, or without a caption): {counts}")
    return 0
