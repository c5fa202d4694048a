"""``bcos-clip eval``: zero-shot classification / retrieval and linear probes. Takes ``clip_benchmark eval``
command lines unchanged and writes records with CLIP_benchmark's schema (its keys and metric names,
``dataset`` as given), so our JSON files sit beside theirs in one table.

Examples::

    # a CLIP_benchmark command line: two datasets from a list file, two models, the task per dataset,
    # one file per run named by the default template {dataset}_{pretrained}_{model}_{language}_{task}.json
    bcos-clip eval --dataset datasets.txt --pretrained_model RN50,openai runs/student, \\
        --dataset_root '/data/wds/wds_{dataset_cleaned}' --task auto
    bcos-clip eval --model runs/student --dataset wds/vtab/cifar10 wds/vtab/pets \\
        --dataset_root /data/wds/{dataset_cleaned} --task linear_probe --probe-protocol paper --output results
    bcos-clip eval --suite eval/suites/demo.yaml --model RN50 --pretrained openai \\
        --dataset_root demo_out/world/wds/{dataset} --output results --skip_existing

``--output`` with a ``{placeholder}`` or ending in ``.json`` is a file template (CLIP_benchmark's
meaning); otherwise it is a folder with one ``<dataset>__<label>__<task>.json`` per run.
Differences from clip_benchmark 1.6.2: ``--dataset_root`` has no default; amp on a CPU runs fp32
(theirs autocasts to bf16); the linear probe runs on any device; mAP is computed as theirs (classes
without positives count 0); acc5 that is undefined is null (theirs writes NaN); a run that fails
writes a failed record and the others go on (theirs stops).
Under torchrun, each rank reads its part of the shards and rank 0 scores and writes.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, List, Optional, Sequence

import torch

from bcos_clip.cli.eval_flags import add_benchmark_flags, add_extension_flags
from bcos_clip.runtime.output_paths import check_output_dir

log = logging.getLogger("bcos_clip.cli.eval")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="benchmark models (zero-shot, retrieval, linear probe)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_benchmark_flags(p)
    add_extension_flags(p)
    p.set_defaults(func=run)


def _flat(groups: Optional[Sequence[Any]]) -> List[Any]:
    """``[[a, b], [c]]`` (an ``append`` + ``nargs`` flag) -> ``[a, b, c]``; plain lists pass through."""
    out: List[Any] = []
    for g in groups or []:
        out.extend(g if isinstance(g, list) else [g])
    return out


def _models(args: argparse.Namespace) -> list:
    """ModelSpecs of the command line (empty: the suite's models)."""
    from bcos_clip.evaluation.run_plan import combine_models, expand_pretrained_model
    from bcos_clip.evaluation.suite_files import ModelSpec

    if args.pretrained_model:
        pairs = expand_pretrained_model(_flat(args.pretrained_model))
        if args.model or args.pretrained:
            log.warning("--pretrained_model given: --model / --pretrained are ignored (as CLIP_benchmark does)")
    elif args.model or args.pretrained or not args.suite:
        pairs = combine_models(args.model or [], args.pretrained or [])
    else:
        pairs = []
    labels = args.label or []
    if labels and len(labels) != len(pairs):
        raise ValueError(f"--label given {len(labels)} times for {len(pairs)} models")
    labels = labels or [None] * len(pairs)
    return [ModelSpec(m, None if p in (None, "", "none") else p, lab) for (m, p), lab in zip(pairs, labels)]


def _suite(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from bcos_clip.evaluation.run_plan import expand_datasets, per_dataset
    from bcos_clip.evaluation.suite_files import Suite, SuiteEntry, load_suite
    from bcos_clip.evaluation.tasks import check_task

    languages = _flat(args.language) or ["en"]
    if args.suite:
        if args.dataset:
            raise ValueError("give either --suite or --dataset, not both")
        suite = load_suite(args.suite)
        for name in ("train_split", "val_split", "val_proportion"):
            per_dataset(getattr(args, name), 1, f"--{name}")  # one value for every suite entry
        return replace(suite, entries=tuple(replace(e, language=lang) for e in suite.entries for lang in languages))
    if not args.dataset:
        raise ValueError("give --dataset (wds/<name>, hf:<path>, folder:<path>, or a file of them) or --suite")
    datasets = expand_datasets(_flat(args.dataset))
    tasks = [check_task(t) for t in (args.task or ["auto"])]
    n = len(datasets)
    splits = zip(per_dataset(args.train_split, n, "--train_split"), per_dataset(args.val_split, n, "--val_split"),
                 per_dataset(args.val_proportion, n, "--val_proportion"))
    entries = [SuiteEntry(d, t, train_split=tr, val_split=vs, val_proportion=vp, language=lang)
               for d, (tr, vs, vp) in zip(datasets, splits) for lang in languages for t in tasks]
    return Suite("command line", tuple(entries))


def _first(values: Optional[Sequence[Any]]) -> Any:
    return values[0] if values else None


def _precision(args: argparse.Namespace) -> str:
    if args.precision and not args.amp and args.precision != "fp32":
        raise ValueError(f"--no_amp and --precision {args.precision} contradict each other")
    return args.precision or ("amp" if args.amp else "fp32")


def _config(args: argparse.Namespace, device: str) -> Any:
    from bcos_clip.evaluation.custom_prompts import load_prompt_table
    from bcos_clip.evaluation.linear_probe import ProbeConfig
    from bcos_clip.evaluation.tasks import EvalConfig

    if not args.normalize:
        raise ValueError("--normalize false: bcos-clip's linear probe always uses L2-normalised features "
                         "(CLIP_benchmark's default)")
    suite_wide = bool(args.suite)  # one value for every entry; per-dataset values ride on the entries
    probe = ProbeConfig(lr=args.fewshot_lr, epochs=args.fewshot_epochs, batch_size=args.probe_batch_size,
                        weight_decay=args.weight_decay, fewshot_k=args.fewshot_k, seed=args.seed,
                        val_proportion=_first(args.val_proportion) if suite_wide else None,
                        val_split=_first(args.val_split) if suite_wide else None, device=device,
                        protocol=args.probe_protocol)
    classnames = load_prompt_table(args.custom_classname_file, "--custom_classname_file") \
        if args.custom_classname_file else None
    templates = load_prompt_table(args.custom_template_file, "--custom_template_file") \
        if args.custom_template_file else None
    return EvalConfig(output=args.output, dataset_root=args.dataset_root, cache_dir=args.cache_dir,
                      batch_size=args.batch_size, workers=args.num_workers, device=device,
                      precision=_precision(args), split=args.split, train_split=_flat(args.train_split)[0],
                      recall_k=tuple(args.recall_k), skip_existing=args.skip_existing,
                      save_probe=not args.no_save_probe, probe=probe, feature_root=args.feature_root,
                      custom_classnames=classnames, custom_templates=templates,
                      dump_classnames=args.dump_classnames, dump_templates=args.dump_templates,
                      save_clf=args.save_clf, load_clfs=tuple(args.load_clfs), model_cache_dir=args.model_cache_dir)


def _check_outputs(args: argparse.Namespace) -> None:
    """Every path this run writes, checked before any work (a template: its placeholder-free folder)."""
    from bcos_clip.evaluation.output_names import check_template, is_template

    if is_template(args.output):
        check_template(args.output)
        fixed = os.path.dirname(args.output.split("{", 1)[0])
        check_output_dir(fixed or ".", "--output")
    else:
        check_output_dir(args.output)
    check_output_dir(args.cache_dir, "--cache_dir")
    check_output_dir(args.feature_root, "--feature_root")
    if args.save_clf:
        check_output_dir(os.path.dirname(args.save_clf.split("{", 1)[0]) or ".", "--save_clf")


def _notes(args: argparse.Namespace) -> None:
    """Say which accepted CLIP_benchmark flags change nothing here."""
    for name, on, why in (("--skip_load", args.skip_load, "the model is always loaded; cached features are reused"),
                          ("--annotation_file", args.annotation_file, "wds folders carry their captions"),
                          ("--wds_cache_dir", args.wds_cache_dir, "local shards are read in place")):
        if on:
            log.info("%s: no effect in bcos-clip (%s)", name, why)


def _summary(records: List[dict], output: str, quiet: bool) -> None:
    failed = [r for r in records if r.get("status") == "failed"]
    for r in records:
        if r in failed:
            kept = f" (kept the earlier result {r['kept_earlier_result']})" if r.get("kept_earlier_result") else ""
            print(f"{r['model_label']} | {r['dataset']} | {r['task']} | FAILED {r.get('error')}{kept}")
        elif not quiet:
            values = ", ".join(f"{k}={v:.4f}" for k, v in (r.get("metrics") or {}).items() if isinstance(v, float))
            print(f"{r['model_label']} | {r['dataset']} | {r['task']} | {values}")
    if not quiet:
        print(f"{len(records) - len(failed)} ok, {len(failed)} failed; results in {output}")


def run(args: argparse.Namespace) -> int:
    from bcos_clip.evaluation.suite import run_suite
    from bcos_clip.runtime.distributed import init_distributed

    if args.quiet:
        logging.getLogger("bcos_clip").setLevel(logging.WARNING)
    _check_outputs(args)
    _notes(args)
    suite = _suite(args)
    models = _models(args)
    device = str(init_distributed(args.device).device)  # joins the torchrun process group, if any
    records = run_suite(suite, _config(args, device), models)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        if torch.distributed.get_rank() != 0:
            return 0
    _summary(records, args.output, args.quiet)
    return 1 if any(r.get("status") == "failed" for r in records) else 0
