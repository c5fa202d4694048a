"""Malformed command lines for every `bcos-clip` subcommand (tests/test_cli_bad_input.py runs them).

Each case: the subcommand, what is wrong, the argv template and a piece of the one-line error it must
give. Templates are ``str.format``-ed with the World's fields (``{ckpt}``, ``{teacher}``, ...), ``{root}``
(the world folder, where the broken files live) and ``{out}`` (a fresh output path). Not a test module.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List


@dataclass(frozen=True)
class Case:
    command: str
    what: str
    argv: str
    expect: str
    code: int = 2

    @property
    def id(self) -> str:
        return f"{self.command}: {self.what}"


def _cases(command: str, base: str, rows: List[tuple]) -> List[Case]:
    """rows: (what, extra argv, expected piece[, code]); argv = base + extra ("!" starts a full argv)."""
    out = []
    for row in rows:
        what, extra, expect = row[:3]
        argv = extra[1:] if extra.startswith("!") else f"{base} {extra}"
        out.append(Case(command, what, argv, expect, *row[3:]))
    return out


BCOSIFY = _cases("bcosify", "bcosify --model {teacher} --output {out}", [
    ("--b nan", "--b nan", "argument --b: expected a finite number"),
    ("--b inf", "--b inf", "argument --b: expected a finite number"),
    ("--b 0", "--b 0", "argument --b: must be >= 1"),
    ("--b 0.5", "--b 0.5", "argument --b: must be >= 1"),
    ("--b abc", "--b abc", "argument --b: expected a number"),
    ("model config missing", "!bcosify --model {root}/missing.json --output {out}", "missing.json"),
    ("model JSON syntax error", "!bcosify --model {root}/model_syntax.json --output {out}", "model_syntax.json"),
    ("model JSON unknown key", "!bcosify --model {root}/model_unknown.json --output {out}", "'widht'"),
    ("model JSON unknown top-level key", "!bcosify --model {root}/model_top_unknown.json --output {out}",
     "'embed_dimension'"),
    ("model JSON wrong type", "!bcosify --model {root}/model_type.json --output {out}", "model_type.json"),
    ("model JSON not an object", "!bcosify --model {root}/model_list.json --output {out}", "model_list.json"),
    ("unknown model name", "!bcosify --model NoSuchNet-9 --output {out}", "NoSuchNet-9"),
    ("--pretrained missing file", "--pretrained {root}/missing.pt", "missing.pt"),
    ("--pretrained garbage file", "--pretrained {root}/garbage.pt", "garbage.pt"),
    ("--output is a file", "!bcosify --model {teacher} --output {file}", "afile.txt"),
    ("--output under a file", "!bcosify --model {teacher} --output {file}/sub", "afile.txt"),
    ("--input-encoding unknown", "--input-encoding rgb", "argument --input-encoding: invalid choice"),
])

EVAL = _cases("eval", "eval --model {ckpt} --dataset wds/toy --dataset_root {wds} --output {out}", [
    ("--batch_size 0", "--batch_size 0", "argument --batch_size/--batch-size: must be >= 1"),
    ("--batch-size -4", "--batch-size -4", "must be >= 1"),
    ("--workers -1", "--workers -1", "argument --num_workers/--num-workers/--workers: must be >= 0"),
    ("--output unknown placeholder", "!eval --model {ckpt} --dataset wds/toy --dataset_root {wds} --output "
     "{out}/{{datset}}.json", "unknown placeholder {datset}"),
    ("--no_amp with --precision amp", "--no_amp --precision amp", "--no_amp and --precision amp contradict"),
    ("--normalize false", "--normalize false", "always uses L2-normalised features"),
    ("--task captioning", "--task captioning", "--task 'captioning': choose one of"),
    ("--train_split per dataset, wrong count", "--train_split a b", "--train_split: 2 values for 1 datasets"),
    ("--custom_template_file missing", "--custom_template_file {root}/nope.json", "nope.json: file not found"),
    ("--fewshot_lr nan", "--fewshot_lr nan", "expected a finite number"),
    ("--lr inf", "--lr inf", "expected a finite number"),
    ("--lr 0", "--lr 0", "must be > 0"),
    ("--fewshot_epochs 0", "--fewshot_epochs 0", "must be >= 1"),
    ("--fewshot_k 0", "--fewshot_k 0", "-1 (all) or >= 1"),
    ("--probe_batch_size 0", "--probe_batch_size 0", "must be >= 1"),
    ("--weight_decay -1", "--weight_decay -1", "must be >= 0"),
    ("--weight_decay inf", "--weight_decay inf", "expected a finite number"),
    ("--val_proportion 1.5", "--val_proportion 1.5", "must be in (0, 1)"),
    ("--val_proportion nan", "--val_proportion nan", "expected a finite number"),
    ("--recall_k 0", "--recall_k 0", "must be >= 1"),
    ("--precision bad", "--precision fp8", "invalid choice"),
    ("--suite YAML syntax error", "!eval --model {ckpt} --suite {root}/suite_syntax.yaml --output {out}",
     "suite_syntax.yaml"),
    ("--suite datasets not a list", "!eval --model {ckpt} --suite {root}/suite_nolist.yaml --output {out}",
     "'datasets' list"),
    ("--suite tasks wrong type", "!eval --model {ckpt} --suite {root}/suite_task.yaml --output {out}",
     "tasks"),
    ("--suite unknown task", "!eval --model {ckpt} --suite {root}/suite_unknown_task.yaml --output {out}",
     "segmentation"),
    ("--suite entry not a mapping", "!eval --model {ckpt} --suite {root}/suite_entry.yaml --output {out}",
     "needs a 'name'"),
    ("--suite unknown key", "!eval --model {ckpt} --suite {root}/suite_key.yaml --output {out}", "'model'"),
    ("--suite model not a mapping", "!eval --model {ckpt} --suite {root}/suite_models.yaml --output {out}",
     "models"),
    ("--suite missing", "!eval --model {ckpt} --suite {root}/nosuite.yaml --output {out}", "nosuite.yaml"),
    ("--output is a file", "!eval --model {ckpt} --dataset wds/toy --dataset_root {wds} --output {file}",
     "afile.txt"),
    ("--output under a file", "!eval --model {ckpt} --dataset wds/toy --dataset_root {wds} --output {file}/r",
     "afile.txt"),
    ("--pretrained with a bcos_clip checkpoint", "--pretrained a", "not used with a bcos_clip checkpoint", 1),
    ("--label count differs from the models", "--label a --label b", "--label given 2 times for 1 models"),
    ("--pretrained_model without a comma", "!eval --pretrained_model {ckpt} --dataset wds/toy --dataset_root {wds} "
     "--output {out}", "expected 'model,pretrained'"),
    ("neither --dataset nor --suite", "!eval --model {ckpt} --output {out}", "--dataset"),
    ("--dataset and --suite", "--suite demo", "either --suite or --dataset"),
    ("missing dataset folder", "!eval --model {ckpt} --dataset wds/toy --dataset_root {root}/nowds "
     "--output {out}", "nowds", 1),
    ("model JSON unknown key", "!eval --model {root}/model_unknown.json --dataset wds/toy --dataset_root {wds} "
     "--output {out}", "'widht'", 1),
])

REPORT = _cases("report", "report {root}/results_bad --output {out}", [
    ("results folder missing", "!report {root}/no_results --output {out}", "no_results"),
    ("results folder is a file", "!report {file} --output {out}", "afile.txt"),
    ("results folder without results", "!report {empty_dir} --output {out}", "empty"),
    ("--groups missing", "!report {root}/results_bad --groups {root}/nogroups.csv --output {out}", "nogroups.csv"),
    ("--groups wrong columns", "!report {root}/results_bad --groups {root}/groups_bad.csv --output {out}",
     "groups_bad.csv"),
    ("corrupt result JSON", "!report {root}/results_bad --output {out}", "x.json"),
    ("--plot-backend unknown", "!report {root}/results_bad --plot-backend svg", "invalid choice"),
])

TRAIN_BASE = ("train --model {teacher} --pretrained {teacher_pt} --train-data {shards} --output {out} --steps 1 "
              "--batch-size 2 --workers 0 --device cpu --precision fp32 --save-every 1")
TRAIN_FLAGS = [(f"{flag} {value}".strip(), f"{flag} {value}".strip(), message) for flag, value, message in [
    ("--bcos-b", "nan", "expected a finite number"), ("--bcos-b", "0.5", "must be >= 1"),
    ("--lr", "inf", "expected a finite number"), ("--lr", "nan", "expected a finite number"),
    ("--lr", "0", "must be > 0"), ("--lr=-1e-3", "", "must be > 0"),
    ("--temperature", "inf", "expected a finite number"), ("--temperature", "0", "must be > 0"),
    ("--batch-size", "0", "must be >= 1"), ("--batch-size", "-3", "must be >= 1"),
    ("--steps", "0", "must be >= 1"),
    ("--accum-freq", "0", "must be >= 1"), ("--workers", "-1", "must be >= 0"),
    ("--warmup", "-1", "must be >= 0"), ("--wd", "nan", "expected a finite number"),
    ("--wd", "-0.1", "must be >= 0"), ("--beta1", "1.5", "must be in [0, 1)"),
    ("--beta2", "-0.1", "must be in [0, 1)"), ("--eps", "0", "must be > 0"),
    ("--agc-clip", "nan", "expected a finite number"), ("--agc-eps", "0", "must be > 0"),
    ("--grad-clip-norm", "0", "must be > 0"), ("--crop-scale-min", "0", "must be in (0, 1]"),
    ("--crop-scale-min", "2", "must be in (0, 1]"), ("--shuffle-buffer", "0", "must be >= 1"),
    ("--folder-chunk-size", "0", "must be >= 1"), ("--train-num-samples", "0", "must be >= 1"),
    ("--save-every", "0", "must be >= 1"), ("--keep-checkpoints", "-1", "must be >= 0"),
    ("--log-every", "0", "must be >= 1"), ("--zeroshot-every", "-1", "must be >= 0"),
    ("--zeroshot-samples", "0", "must be >= 1"), ("--max-bad-steps", "0", "must be >= 1"),
    ("--siglip-scale", "inf", "expected a finite number"), ("--siglip-bias", "nan", "expected a finite number"),
    ("--caption-weight", "-1", "must be >= 0"), ("--seed", "abc", "expected an integer"),
    ("--steps", "1.5", "expected an integer"),
]]
TRAIN = _cases("train", TRAIN_BASE, TRAIN_FLAGS + [
    ("--epochs -1", "!train --model {teacher} --train-data {shards} --output {out} --epochs -1", "must be >= 1"),
    ("config YAML syntax error", "--config {root}/train_syntax.yaml", "train_syntax.yaml"),
    ("config lr: abc", "!train --config {root}/train_lr_abc.yaml --output {out}", "lr"),
    ("config batch_size: [1]", "!train --config {root}/train_batch_list.yaml --output {out}", "batch_size"),
    ("config unknown key", "!train --config {root}/train_unknown.yaml --output {out}", "'learning_rate'"),
    ("config not a mapping", "!train --config {root}/train_list.yaml --output {out}", "train_list.yaml"),
    ("config lr: .inf", "!train --config {root}/train_lr_inf.yaml --output {out}", "lr"),
    ("config steps: -2", "!train --config {root}/train_steps_neg.yaml --output {out}", "steps"),
    ("config workers: true", "!train --config {root}/train_bool_int.yaml --output {out}", "workers"),
    ("config bcos_b: two", "!train --config {root}/train_b_str.yaml --output {out}", "bcos_b"),
    ("config missing", "--config {root}/nothere.yaml", "nothere.yaml"),
    ("config is a folder", "--config {empty_dir}", "empty"),
    ("model JSON unknown key", "!train --model {root}/model_unknown.json --train-data {shards} --output {out} "
     "--steps 1", "'widht'"),
    ("--output is a file", "!train --model {teacher} --pretrained {teacher_pt} --train-data {shards} --output "
     "{file} --steps 1 --batch-size 2 --workers 0 --device cpu", "afile.txt"),
    ("--output under a file", "!train --model {teacher} --pretrained {teacher_pt} --train-data {shards} "
     "--output {file}/run --steps 1 --batch-size 2 --workers 0 --device cpu", "afile.txt"),
    ("--text-cache is a file", "--text-cache {file}", "afile.txt"),
    ("--train-data missing", "--train-data {root}/nothing/{{0..1}}.tar", "do not exist"),
    ("all images corrupt", "--train-data {root}/corrupt --steps 2", "no usable training sample"),
    ("all images corrupt, 2 workers", "--train-data {root}/corrupt --steps 2 --workers 2",
     "no usable training sample"),
    ("folder of corrupt images", "--train-data {root}/broken_images --steps 2 --loss cosine",
     "no usable training sample"),
    ("folder without images", "--train-data {root}/no_images", "no_images"),
    ("empty shard", "--train-data {root}/empty_shard", "the shards hold no samples"),
    ("shards that are not tars", "--train-data '{root}/garbage_tars/{{00000..00001}}.tar'", "no readable sample"),
    ("shards that are not tars, 2 workers", "--train-data '{root}/garbage_tars/{{00000..00001}}.tar' --workers 2 "
     "--loss cosine", "no readable sample in 1 shard reads (bad data so far: {'unreadable_shard_data': 1}); "
     "check --train-data (in DataLoader worker process"),
    ("missing required --model", "!train --train-data {shards} --output {out} --steps 1", "--model"),
    ("--resume folder missing", "--resume {root}/no_run", "no_run"),
    ("--classnames missing", "--text-source classnames --classnames {root}/nonames.txt", "nonames.txt"),
    ("--templates empty file", "--text-source classnames --templates {root}/templates_empty.txt",
     "templates_empty.txt"),
    ("--loss unknown", "--loss mse", "invalid choice"),
    # open_clip_train's names
    ("--save-frequency -1", "--save-frequency -1", "must be >= 0"),
    ("--zeroshot-frequency -1", "--zeroshot-frequency -1", "must be >= 0"),
    ("--log-every-n-steps 0", "--log-every-n-steps 0", "must be >= 1"),
    ("--log-metric-every-n-steps 0", "--log-metric-every-n-steps 0", "must be >= 1"),
    ("--precision fp16", "--precision fp16", "--precision fp16: float16 weights without loss scaling"),
    ("--precision pure_fp16", "--precision pure_fp16", "use --precision amp"),
    ("--precision unknown", "--precision fp8", "invalid choice"),
    ("--opt nadamw", "--opt nadamw", "invalid choice: 'nadamw'"),
    ("--report-to unknown", "--report-to wandb,comet", "'comet' is not one of tensorboard, wandb, all"),
    ("--report-to trackio", "--report-to trackio", "trackio"),
    ("--logs with --output", "--logs {root} --name x", "not both"),
    ("--logs none", "!train --model {teacher} --train-data {shards} --steps 1 --logs none --name x", "--logs none"),
    ("--name empty", "!train --model {teacher} --train-data {shards} --steps 1 --name ''", "expected a folder name"),
    ("no --output nor --logs", "!train --model {teacher} --train-data {shards} --steps 1",
     "--output (or --logs DIR --name NAME)"),
])

SERVE = _cases("serve", "serve --model {ckpt}", [
    ("--port 70000", "--port 70000", "argument --port: must be in 1..65535"),
    ("--port 0", "--port 0", "must be in 1..65535"),
    ("--port -1", "--port -1", "must be in 1..65535"),
    ("--port abc", "--port abc", "expected an integer"),
    ("--cache-size -1", "--cache-size -1", "must be >= 0"),
    ("--cache-mb nan", "--cache-mb nan", "expected a finite number"),
    ("--cache-mb 0", "--cache-mb 0", "must be > 0"),
    ("--max-upload-mb inf", "--max-upload-mb inf", "expected a finite number"),
    ("--max-image-side 0", "--max-image-side 0", "must be >= 1"),
    ("--max-prompts -2", "--max-prompts -2", "must be >= 1"),
    ("--model missing", "!serve --model {root}/nomodel", "nomodel"),
    ("--model is a file", "!serve --model {file}", "afile.txt"),
    ("--model not a checkpoint", "!serve --model {root}/not_ckpt", "not_ckpt"),
    ("--model truncated weights", "!serve --model {root}/truncated_ckpt", "model.safetensors"),
    ("--examples missing", "--examples {root}/noexamples --teacher {teacher}", "noexamples"),
    ("--teacher JSON unknown key", "--teacher {root}/model_unknown.json", "'widht'"),
    ("--baseline without --teacher", "--baseline gradcam", "--teacher"),
])

IMPORT_OFFICIAL = _cases("import-official", "import-official {root}/garbage.safetensors --output {out} "
                         "--teacher {teacher} --pretrained none", [
    ("checkpoint missing", "!import-official {root}/none.ckpt --output {out} --teacher {teacher} --pretrained none",
     "none.ckpt"),
    ("checkpoint is a folder", "!import-official {empty_dir} --output {out} --teacher {teacher} --pretrained none",
     "empty"),
    ("garbage safetensors", "", "garbage.safetensors"),
    ("garbage .pt", "!import-official {root}/garbage.pt --output {out} --teacher {teacher} --pretrained none",
     "garbage.pt"),
    ("safetensors with foreign keys", "!import-official {root}/wrong_keys.safetensors --output {out} --teacher "
     "{teacher} --pretrained none", "wrong_keys.safetensors"),
    ("--teacher JSON unknown key", "!import-official {root}/official_partial.safetensors --output {out} --teacher "
     "{root}/model_unknown.json --pretrained none", "'widht'"),
    ("--pretrained missing", "!import-official {root}/official_partial.safetensors --output {out} --teacher "
     "{teacher} --pretrained {root}/nope.pt", "nope.pt"),
    ("official checkpoint missing tensors", "!import-official {root}/official_partial.safetensors --output {out} "
     "--teacher {teacher} --pretrained none", "official_partial.safetensors"),
])

EXPORT = _cases("export", "export {ckpt} --output {out}", [
    ("checkpoint missing", "!export {root}/nockpt --output {out}", "nockpt"),
    ("checkpoint folder without checkpoint", "!export {root}/not_ckpt --output {out}", "not_ckpt"),
    ("checkpoint config.json corrupt", "!export {root}/bad_config_ckpt --output {out}", "config.json"),
    ("checkpoint weights truncated", "!export {root}/truncated_ckpt --output {out}", "model.safetensors"),
    ("--output is a file", "!export {ckpt} --output {file}", "afile.txt"),
    ("--output under a file", "!export {ckpt} --output {file}/hub", "afile.txt"),
    ("--output is the checkpoint", "!export {ckpt} --output {ckpt}", "checkpoint directory itself"),
    ("--results missing", "--results {root}/noresults", "noresults"),
    ("checkpoint config.json not an object", "!export {root}/list_config_ckpt --output {out}", "config.json"),
])

EXPLAIN_BASE = "explain --model {ckpt} --prompt 'a dog' --output {out} --device cpu"
EXPLAIN = _cases("explain", EXPLAIN_BASE + " --image {png}", [
    ("image bomb", f"!{EXPLAIN_BASE} --image {{root}}/bomb.png", "bomb.png"),
    ("not an image", f"!{EXPLAIN_BASE} --image {{root}}/notimage.png", "notimage.png"),
    ("truncated image", f"!{EXPLAIN_BASE} --image {{root}}/truncated.png", "truncated.png"),
    ("empty image file", f"!{EXPLAIN_BASE} --image {{root}}/empty.png", "empty.png"),
    ("image missing", f"!{EXPLAIN_BASE} --image {{root}}/nothere.png", "nothere.png"),
    ("image is a folder", f"!{EXPLAIN_BASE} --image {{root}}/image_dir.png", "image_dir.png"),
    ("--model missing", "!explain --model {root}/nomodel --image {png} --prompt x --output {out}", "nomodel"),
    ("--model not a checkpoint", "!explain --model {root}/not_ckpt --image {png} --prompt x --output {out}",
     "not_ckpt"),
    ("--model truncated weights", "!explain --model {root}/truncated_ckpt --image {png} --prompt x --output {out}",
     "model.safetensors"),
    ("--smooth -1", "--smooth -1", "must be 0 (none) or odd"),
    ("--smooth 4", "--smooth 4", "must be 0 (none) or odd, got 4"),
    ("--cell 0", "--cell 0", "must be in 16..4096"),
    ("--cell 100000", "--cell 100000", "must be in 16..4096"),
    ("--output is a file", f"!explain --model {{ckpt}} --prompt x --image {{png}} --output {{file}}", "afile.txt"),
    ("--output under a file", f"!explain --model {{ckpt}} --prompt x --image {{png}} --output {{file}}/o",
     "afile.txt"),
    ("--templates empty file", "--templates {root}/templates_empty.txt", "templates_empty.txt"),
])

LOCALIZE_BASE = "localize --model {ckpt} --dataset wds/toy --dataset_root {wds} --output {out} --device cpu"
LOCALIZE = _cases("localize", LOCALIZE_BASE, [
    ("--grid 0", "--grid 0", "argument --grid: must be >= 1"),
    ("--grid -1", "--grid -1", "must be >= 1"),
    ("--n-grids 0", "--n-grids 0", "must be >= 1"),
    ("--per-class 0", "--per-class 0", "must be >= 1"),
    ("--max-images 0", "--max-images 0", "must be >= 1"),
    ("--threshold 1.5", "--threshold 1.5", "must be in [0, 1]"),
    ("--threshold nan", "--threshold nan", "expected a finite number"),
    ("--smooth -1", "--smooth -1", "must be 0 (none) or odd"),
    ("--smooth 2", "--smooth 2", "must be 0 (none) or odd"),
    ("--batch-size 0", "--batch-size 0", "must be >= 1"),
    ("--examples -1", "--examples -1", "must be >= 0"),
    ("too few confident classes", "--threshold 1.0 --grid 2", "confidently classified"),
    ("--dataset_root missing", f"!{LOCALIZE_BASE.replace('{wds}', '{root}/nowds')}", "nowds"),
    ("--dataset_root is a file", f"!{LOCALIZE_BASE.replace('{wds}', '{file}')}", "afile.txt"),
    ("--model missing", f"!{LOCALIZE_BASE.replace('{ckpt}', '{root}/nomodel')}", "nomodel"),
    ("--method unknown", "--method lime", "invalid choice"),
    ("--output is a file", f"!{LOCALIZE_BASE.replace('{out}', '{file}')} --threshold 0 --grid 1 --n-grids 1 "
     "--examples 0", "afile.txt"),
])

BENCH = _cases("bench", "bench --quick --device cpu --sections infer --models RN50", [
    ("--batches 0", "--batches 0", "must be >= 1"),
    ("--batches -1,2", "--batches=-1,2", "must be >= 1"),
    ("--batches abc", "--batches abc", "comma-separated integers"),
    ("--compile-batch 0", "--compile-batch 0", "must be >= 1"),
    ("--iters 0", "--iters 0", "must be >= 1"),
    ("--warmup -1", "--warmup -1", "must be >= 0"),
    ("--explain-ks 0", "--explain-ks 0", "must be >= 1"),
    ("--time-budget nan", "--time-budget nan", "expected a finite number"),
    ("--time-budget -1", "--time-budget -1", "must be >= 0"),
    ("--workers -1", "--workers -1", "must be >= 0"),
    ("--threads -1", "--threads -1", "must be >= 0"),
    ("--sections unknown", "!bench --quick --device cpu --sections warp", "warp"),
    ("--device unknown", "!bench --quick --device tpu --sections infer", "tpu"),
    ("--compile unknown", "--compile maybe", "invalid choice"),
])

DEMO = _cases("demo", "demo --quick --output {out}", [
    ("--seed abc", "--seed abc", "expected an integer"),
    ("--threads 0", "--threads 0", "must be >= 1"),
    ("--threads -2", "--threads -2", "must be >= 1"),
    ("--settings missing", "--settings {root}/nosettings.yaml", "nosettings.yaml"),
    ("--settings YAML syntax error", "--settings {root}/demo_syntax.yaml", "demo_syntax.yaml"),
    ("--settings unknown section", "--settings {root}/demo_unknown.yaml", "no_such_setting"),
    ("--settings not a mapping", "--settings {root}/demo_list.yaml", "demo_list.yaml"),
    ("--output is a file", "!demo --quick --output {file}", "afile.txt"),
    ("--arch unknown", "--arch cnn", "invalid choice"),
])

def record(command: str, what: str, code: int, line: str) -> None:
    """Append one row of the bad-input table to $BCOS_CLIP_BAD_INPUT_LOG (JSON lines), when it is set."""
    path = os.environ.get("BCOS_CLIP_BAD_INPUT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"command": command, "what": what, "code": code, "line": line,
                                 "issue": f"{command}: {what}" in ISSUE_LIST}) + "\n")


# The bad inputs issue 13 lists (items 3 and 7), as case ids: the first table of the note.
ISSUE_LIST = (
    "train: config YAML syntax error", "train: config lr: abc", "train: config batch_size: [1]",
    "eval: --suite YAML syntax error", "eval: --suite tasks wrong type",
    "train: --output is a file", "train: --output under a file", "eval: --output is a file",
    "eval: --output under a file", "train: --text-cache is a file",
    "bcosify: model JSON unknown key", "train: model JSON unknown key",
    "train: --bcos-b nan", "train: --lr inf", "train: --temperature inf",
    "train: all images corrupt", "train: folder of corrupt images", "train: folder without images",
    "train: all images corrupt, 2 workers", "train: shards that are not tars, 2 workers",
    "localize: too few confident classes",
    "explain: image bomb", "localize: --grid 0", "serve: --port 70000", "serve: HTTP: deeply nested JSON body",
)

CASES: List[Case] = BCOSIFY + EVAL + REPORT + TRAIN + SERVE + IMPORT_OFFICIAL + EXPORT + EXPLAIN + LOCALIZE \
    + BENCH + DEMO
