"""``bcos-clip eval``: zero-shot classification / retrieval and linear probes (CLIP_benchmark flags).

Examples::

    bcos-clip eval --model runs/student --dataset wds/vtab/cifar10 \\
        --dataset_root /data/wds/{dataset_cleaned} --task zeroshot_classification --output results
    bcos-clip eval --suite eval/suites/demo.yaml --model RN50 --pretrained openai \\
        --dataset_root demo_out/world/wds/{dataset} --output results --skip_existing

Every flag is accepted with underscores or hyphens (``--dataset_root`` / ``--dataset-root``).
Under torchrun, each rank reads its part of the shards and rank 0 scores and writes.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from bcos_clip.cli.types import (all_or_positive_int, integer, non_negative_float, non_negative_int, open_fraction,
                                  positive_float, positive_int)
from bcos_clip.runtime.output_paths import check_output_dir


def _flag(parser: argparse.ArgumentParser, name: str, *aliases: str, **kw: Any) -> None:
    """Register ``--a_b`` with its ``--a-b`` spelling (and any aliases)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, *aliases, dest=name, **kw)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="benchmark models (zero-shot, retrieval, linear probe)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _flag(p, "model", action="append", help="bcos_clip checkpoint dir, open_clip name or JSON config (repeatable)")
    _flag(p, "pretrained", action="append", help="pretrained tag or weights path, one per --model (or one for all)")
    _flag(p, "label", action="append", help="column name of each --model in results/reports (default: from the model)")
    _flag(p, "dataset", action="append", help="wds/<name> | hf:<path> | folder:<path> (repeatable)")
    _flag(p, "dataset_root", help="folder of the dataset, or a template with {dataset} / {dataset_cleaned}")
    _flag(p, "task", action="append", help="zeroshot_classification | zeroshot_retrieval | linear_probe "
          "(repeatable; default zeroshot_classification)")
    _flag(p, "suite", help="suite YAML: a path, or a name shipped in eval/suites (demo, clip_benchmark, linear_probe)")
    _flag(p, "output", "--out", default="eval_results", help="results folder (one JSON per model/dataset/task)")
    _flag(p, "cache_dir", help="classifier and feature caches (default OUTPUT/cache)")
    _flag(p, "skip_existing", action="store_true", help="keep successful results already in --output")
    _flag(p, "batch_size", type=positive_int, default=64, help="images per forward")
    _flag(p, "workers", type=non_negative_int, default=0, help="DataLoader workers")
    _flag(p, "device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    _flag(p, "precision", default="amp", choices=["fp32", "amp", "amp_bf16"],
          help="amp = fp16 autocast on CUDA, fp32 on CPU")
    _flag(p, "split", default="test", help="evaluation split")
    _flag(p, "train_split", default="train", help="linear-probe training split")
    _flag(p, "recall_k", type=positive_int, nargs="+", default=[1, 5, 10], help="retrieval recall@k")
    _flag(p, "fewshot_k", type=all_or_positive_int, default=-1, help="linear probe: k training samples per class (-1: all)")
    _flag(p, "fewshot_lr", "--lr", type=positive_float, default=0.1, help="linear probe learning rate (AdamW)")
    _flag(p, "fewshot_epochs", "--epochs", type=positive_int, default=20, help="linear probe epochs")
    _flag(p, "probe_batch_size", type=positive_int, default=512, help="linear probe batch size")
    _flag(p, "weight_decay", type=non_negative_float, default=0.0, help="linear probe weight decay without a search")
    _flag(p, "val_proportion", type=open_fraction, default=None,
          help="hold out this share of train to search the weight decay over logspace(-6, 2)")
    _flag(p, "val_split", default=None, help="validation split to search the weight decay on")
    _flag(p, "seed", type=integer, default=0, help="few-shot sampling / probe shuffling seed")
    _flag(p, "no_save_probe", action="store_true", help="do not save linear-probe heads")
    p.set_defaults(func=run)


def _models(args: argparse.Namespace) -> list:
    from bcos_clip.evaluation.suite_files import ModelSpec

    models = args.model or []
    pre = args.pretrained or []
    labels = args.label or []
    if pre and len(pre) not in (1, len(models)):
        raise ValueError(f"--pretrained given {len(pre)} times for {len(models)} --model")
    if labels and len(labels) != len(models):
        raise ValueError(f"--label given {len(labels)} times for {len(models)} --model")
    pre = pre * len(models) if len(pre) == 1 else (pre or [None] * len(models))
    labels = labels or [None] * len(models)
    return [ModelSpec(m, None if p in (None, "", "none") else p, lab) for m, p, lab in zip(models, pre, labels)]


def _suite(args: argparse.Namespace) -> Any:
    from bcos_clip.evaluation.suite_files import Suite, SuiteEntry, load_suite
    from bcos_clip.evaluation.tasks import check_task

    if args.suite:
        if args.dataset:
            raise ValueError("give either --suite or --dataset, not both")
        return load_suite(args.suite)
    if not args.dataset:
        raise ValueError("give --dataset (wds/<name>, hf:<path>, folder:<path>) or --suite")
    tasks = [check_task(t) for t in (args.task or ["zeroshot_classification"])]
    return Suite("command line", tuple(SuiteEntry(d, t) for d in args.dataset for t in tasks))


def _config(args: argparse.Namespace, device: str) -> Any:
    from bcos_clip.evaluation.linear_probe import ProbeConfig
    from bcos_clip.evaluation.tasks import EvalConfig

    probe = ProbeConfig(lr=args.fewshot_lr, epochs=args.fewshot_epochs, batch_size=args.probe_batch_size,
                        weight_decay=args.weight_decay, fewshot_k=args.fewshot_k, seed=args.seed,
                        val_proportion=args.val_proportion, val_split=args.val_split, device=device)
    return EvalConfig(output=args.output, dataset_root=args.dataset_root, cache_dir=args.cache_dir,
                      batch_size=args.batch_size, workers=args.workers, device=device,
                      precision=args.precision, split=args.split, train_split=args.train_split,
                      recall_k=tuple(args.recall_k), skip_existing=args.skip_existing,
                      save_probe=not args.no_save_probe, probe=probe)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.evaluation.suite import run_suite
    from bcos_clip.runtime.distributed import init_distributed

    check_output_dir(args.output)
    check_output_dir(args.cache_dir, "--cache_dir")

    suite = _suite(args)
    models = _models(args)
    device = str(init_distributed(args.device).device)  # joins the torchrun process group, if any
    records = run_suite(suite, _config(args, device), models)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        if torch.distributed.get_rank() != 0:
            return 0
    failed = [r for r in records if r.get("status") == "failed"]
    for r in records:
        kept = f" (kept the earlier result {r['kept_earlier_result']})" if r.get("kept_earlier_result") else ""
        mark = "FAILED " + str(r.get("error")) + kept if r in failed else \
            ", ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items() if isinstance(v, float))
        print(f"{r['model_label']} | {r['dataset']} | {r['task']} | {mark}")
    print(f"{len(records) - len(failed)} ok, {len(failed)} failed; results in {args.output}")
    return 1 if failed else 0
