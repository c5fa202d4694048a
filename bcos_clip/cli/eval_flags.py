"""The flags of ``bcos-clip eval``: every flag of ``clip_benchmark eval`` (clip_benchmark 1.6.2) that
concerns zero-shot classification, zero-shot retrieval and linear probes, with its meaning and default,
then bcos-clip's own. Every flag is also accepted with hyphens (``--dataset-root``)."""
from __future__ import annotations

import argparse
from typing import Any

from bcos_clip.cli.types import (all_or_positive_int, integer, non_negative_float, non_negative_int, open_fraction,
                                  positive_float, positive_int)

DEFAULT_OUTPUT = "{dataset}_{pretrained}_{model}_{language}_{task}.json"  # CLIP_benchmark's
TASK_CHOICES = "zeroshot_classification | zeroshot_retrieval | linear_probe | auto"


def flag(parser: Any, name: str, *aliases: str, **kw: Any) -> None:
    """Register ``--a_b`` with its ``--a-b`` spelling (and any aliases)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, *aliases, **{"dest": name, **kw})


def truthy(text: str) -> bool:
    """A yes/no value (``true``, ``1``, ``yes``, ``on`` or ``false``, ``0``, ``no``, ``off``)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_benchmark_flags(p: argparse.ArgumentParser) -> None:
    """CLIP_benchmark's flags, its defaults (where bcos-clip's differ, the help says so)."""
    g = p.add_argument_group("CLIP_benchmark flags (clip_benchmark eval command lines run unchanged)")
    flag(g, "dataset", action="append", nargs="+", metavar="DATASET",
         help="dataset(s): wds/<name> (CLIP_benchmark folder under --dataset_root), hf:<path>, folder:<path>, "
              "or a file listing datasets one a line; several values and repeats allowed")
    flag(g, "dataset_root", help="folder of the dataset, or a template with {dataset} / {dataset_cleaned} "
         "(CLIP_benchmark's default 'root' is not assumed: required for wds datasets)")
    flag(g, "split", "--test_split", "--test-split", default="test", help="evaluation split (default test)")
    flag(g, "train_split", nargs="+", default=["train"], help="linear-probe training split: one, or one per dataset")
    val = g.add_mutually_exclusive_group()
    flag(val, "val_split", nargs="+", default=None,
         help="linear probe: validation split(s) to choose the weight decay on (one, or one per dataset)")
    flag(val, "val_proportion", nargs="+", type=open_fraction, default=None,
         help="linear probe: share of the training split held out to choose the weight decay (one, or per dataset)")
    flag(g, "model", action="append", nargs="+", metavar="MODEL",
         help="model(s): open_clip name, JSON config, bcos_clip checkpoint dir or transformers CLIP folder; "
              "with several --pretrained, every pair is run (default ViT-B-32-quickgelu)")
    flag(g, "pretrained", action="append", nargs="+", metavar="PRETRAINED",
         help="pretrained tag(s) or weight file(s) (default laion400m_e32 for a model name, none for a path); "
              "'--model A --pretrained P --model B --pretrained Q' pairs A,P and B,Q")
    flag(g, "pretrained_model", action="append", nargs="+", metavar="MODEL,PRETRAINED",
         help="model,pretrained pairs, or a file of them one a line (then --model / --pretrained are ignored)")
    flag(g, "task", action="append", help=f"{TASK_CHOICES} (repeatable; default auto: retrieval for CLIP_benchmark's "
         "caption datasets and for folders whose dataset_type.txt says retrieval, else zero-shot classification)")
    flag(g, "no_amp", action="store_false", dest="amp", default=True,
         help="fp32 instead of mixed precision (amp: fp16 autocast on CUDA, fp32 on a CPU where CLIP_benchmark "
              "autocasts to bf16)")
    flag(g, "num_workers", "--workers", type=non_negative_int, default=4, help="DataLoader workers (default 4)")
    flag(g, "recall_k", type=positive_int, nargs="+", default=[5], help="retrieval recall@k (default 5)")
    _add_run_flags(g)


def _add_run_flags(g: Any) -> None:
    """CLIP_benchmark's probe, output and bookkeeping flags."""
    flag(g, "fewshot_k", type=all_or_positive_int, default=-1, help="linear probe: k training samples per class "
         "(-1: all)")
    flag(g, "fewshot_epochs", "--epochs", type=positive_int, default=None,
         help="linear-probe epochs (default: 10 with --probe-protocol clip_benchmark, 20 with paper)")
    flag(g, "fewshot_lr", "--lr", type=positive_float, default=0.1, help="linear-probe learning rate (AdamW)")
    flag(g, "skip_load", action="store_true", help="accepted; bcos-clip always loads the model (its feature "
         "cache is keyed by the model's weights, so a cached run reads features without recomputing them)")
    flag(g, "distributed", action="store_true", help="accepted; under torchrun every run is split across the "
         "ranks' data (rather than runs across ranks), without torchrun it has no effect")
    flag(g, "seed", type=integer, default=0, help="few-shot sampling, validation split and probe seed")
    flag(g, "batch_size", type=positive_int, default=64, help="images per forward (and the clip_benchmark "
         "protocol's probe batch)")
    flag(g, "normalize", type=truthy, default=True, help="linear-probe features L2-normalised (only true is "
         "supported)")
    flag(g, "model_cache_dir", default=None, help="where downloaded pretrained weights are kept")
    flag(g, "feature_root", default=None, help="linear-probe feature cache (default: CACHE_DIR/features with "
         "--cache_dir, else 'features' with an output template as CLIP_benchmark, OUTPUT/cache/features with a "
         "folder)")
    flag(g, "annotation_file", default="", help="accepted; CLIP_benchmark reads it only for its own (non-wds) "
         "caption datasets, wds folders carry their captions")
    flag(g, "custom_classname_file", default=None, help="JSON {dataset: [classnames]} replacing class names")
    flag(g, "custom_template_file", default=None,
         help="JSON {dataset: [templates] or {classname: [prompts]}} replacing zero-shot templates")
    flag(g, "dump_classnames", action="store_true", help="write the class names into each record")
    flag(g, "dump_templates", action="store_true", help="write the templates into each record")
    flag(g, "language", action="append", nargs="+", metavar="LANG",
         help="language(s) of the run (default en); wds folders ship one set of names, so this names the record")
    flag(g, "output", "--out", default=DEFAULT_OUTPUT,
         help="result file template (placeholders {dataset} {model} {pretrained} {pretrained_full_path} {task} "
              f"{{language}} {{label}}; default {DEFAULT_OUTPUT.replace('%', '%%')}), or a folder (no placeholder, "
              "no .json: one file per run named <dataset>__<label>__<task>.json)")
    flag(g, "quiet", action="store_true", help="only warnings and errors")
    flag(g, "save_clf", default=None, help="save the zero-shot classifier (D, C) tensor here (output placeholders "
         "allowed)")
    flag(g, "load_clfs", nargs="+", default=[], help="average these saved classifiers instead of building one")
    flag(g, "skip_existing", action="store_true", help="keep successful results already written")
    flag(g, "model_type", default="open_clip", choices=["open_clip"],
         help="open_clip (covers open_clip names, JSON configs, bcos_clip checkpoints, transformers folders)")
    flag(g, "wds_cache_dir", default=None, help="accepted; bcos-clip reads local shards, which are not cached")


def add_extension_flags(p: argparse.ArgumentParser) -> None:
    """bcos-clip's own flags."""
    g = p.add_argument_group("bcos-clip extensions")
    flag(g, "label", action="append", help="report column name of each model, in model order (repeatable)")
    flag(g, "suite", help="suite YAML: a path, or a name shipped in eval/suites (demo, clip_benchmark, linear_probe)")
    flag(g, "cache_dir", help="zero-shot classifier cache (default OUTPUT/cache for an output folder; none for "
         "a template); features go to --feature_root")
    flag(g, "device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    flag(g, "precision", default=None, choices=["fp32", "amp", "amp_bf16"],
         help="fp32 | amp (fp16 autocast on CUDA, fp32 on CPU) | amp_bf16 (default amp, fp32 with --no_amp)")
    flag(g, "probe_protocol", default="clip_benchmark", choices=["clip_benchmark", "paper"],
         help="linear probe: clip_benchmark (default; its epochs, weight-decay search and refit rules, so numbers "
              "sit beside its published tables) or paper (METHOD.md sec. 5)")
    flag(g, "probe_batch_size", type=positive_int, default=None,
         help="linear-probe batch size (default: --batch_size for clip_benchmark, 512 for paper)")
    flag(g, "weight_decay", type=non_negative_float, default=0.0,
         help="linear-probe weight decay when there is no validation data to search it on (default 0)")
    flag(g, "no_save_probe", action="store_true", help="do not save linear-probe heads")
