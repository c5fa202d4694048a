"""``bcos-clip eval`` takes ``clip_benchmark eval`` command lines: several values after one flag, list files,
model pairs, ``--task auto``, ``--no_amp``, CLIP_benchmark's ``--output`` template (and our folder form),
and writes CLIP_benchmark's record schema (its keys, metric names and ``dataset`` as given)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bcos_clip.cli import build_parser, main
from bcos_clip.cli.eval import _config, _models, _precision, _suite
from bcos_clip.evaluation.output_names import DEFAULT_TEMPLATE, RunName, check_template, is_template, result_file
from bcos_clip.evaluation.run_plan import DEFAULT_MODEL, DEFAULT_PRETRAINED
from bcos_clip.evaluation.tasks import auto_task
from tests.test_eval_data import CLASSNAMES, TEMPLATES, write_classification, write_retrieval

# What clip_benchmark 1.6.2's cli.py writes: its top-level keys, and per task its metric names.
CB_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}
CB_METRICS = {
    "zeroshot_classification": {"acc1", "acc5", "mean_per_class_recall"},
    "zeroshot_retrieval": {"image_retrieval_recall@5", "text_retrieval_recall@5"},
    "linear_probe": {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "weight_decay", "epochs", "seed",
                     "fewshot_k", "normalized"},
}


def parse(*argv: str):
    return build_parser().parse_args(["eval", *argv])


# --------------------------------------------------------------------------- flags


def test_several_values_after_one_flag_and_list_files(tmp_path):
    listing = tmp_path / "datasets.txt"
    listing.write_text("wds/b\n\n# a comment\nwds/c\n")
    args = parse("--dataset", "wds/a", str(listing), "--dataset", "wds/d", "--language", "en", "de")
    suite = _suite(args)
    assert [e.dataset for e in suite.entries[::2]] == ["wds/a", "wds/b", "wds/c", "wds/d"]
    assert {e.language for e in suite.entries} == {"en", "de"} and len(suite.entries) == 8
    assert {e.task for e in suite.entries} == {"auto"}  # CLIP_benchmark's default


def test_model_pairs_product_zip_files_and_defaults(tmp_path):
    pairs = lambda *a: [(m.model, m.pretrained) for m in _models(parse(*a))]  # noqa: E731
    assert pairs("--model", "A", "B", "--pretrained", "p", "q") == [("A", "p"), ("A", "q"), ("B", "p"), ("B", "q")]
    assert pairs("--model", "A", "--pretrained", "p", "--model", "B", "--pretrained", "q") == [("A", "p"), ("B", "q")]
    assert pairs("--model", "A", "B", "--pretrained", "p") == [("A", "p"), ("B", "p")]
    assert pairs() == [(DEFAULT_MODEL, DEFAULT_PRETRAINED)]
    assert pairs("--model", "RN50") == [("RN50", DEFAULT_PRETRAINED)]  # a name takes CLIP_benchmark's default tag
    assert pairs("--model", str(tmp_path)) == [(str(tmp_path), None)]  # a path (checkpoint) has none
    listing = tmp_path / "models.txt"
    listing.write_text("RN50,openai\nstudent,\n")
    assert pairs("--pretrained_model", "ViT-B-32,laion2b", str(listing), "--model", "ignored") == [
        ("ViT-B-32", "laion2b"), ("RN50", "openai"), ("student", None)]


def test_spellings_precision_and_defaults():
    args = parse("--dataset", "wds/x", "--no-amp", "--batch-size", "8", "--out", "res", "--num_workers", "2",
                 "--test_split", "val", "--probe-protocol", "paper")
    assert _precision(args) == "fp32" and args.batch_size == 8 and args.output == "res" and args.num_workers == 2
    assert args.split == "val" and args.probe_protocol == "paper"
    d = parse("--dataset", "wds/x")
    assert _precision(d) == "amp" and d.output == DEFAULT_TEMPLATE and d.recall_k == [5] and d.num_workers == 4
    assert d.fewshot_epochs is None and d.fewshot_lr == 0.1 and d.fewshot_k == -1 and d.seed == 0
    assert d.probe_protocol == "clip_benchmark" and d.model_type == "open_clip" and d.batch_size == 64
    cfg = _config(d, "cpu")
    assert cfg.probe.resolved(cfg.batch_size).epochs == 10 and cfg.probe.resolved(cfg.batch_size).batch_size == 64
    assert cfg.cache_path is None and cfg.feature_path == Path("features")  # CLIP_benchmark's feature_root


def test_validation_options_are_exclusive_and_per_dataset(capsys):
    with pytest.raises(SystemExit):
        parse("--dataset", "wds/x", "--val_split", "val", "--val_proportion", "0.2")
    assert "not allowed with argument" in capsys.readouterr().err
    suite = _suite(parse("--dataset", "wds/a", "wds/b", "--train_split", "tr_a", "tr_b", "--val_proportion", "0.25"))
    assert [(e.train_split, e.val_proportion) for e in suite.entries] == [("tr_a", 0.25), ("tr_b", 0.25)]


# --------------------------------------------------------------------------- output names


def test_output_template_fills_placeholders_as_clip_benchmark(tmp_path):
    weights = tmp_path / "w" / "teacher.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    run = RunName("wds/vtab/cifar10", "ViT-B-32", str(weights), "lab", "linear_probe", "en")
    assert result_file(DEFAULT_TEMPLATE, run) == Path("vtab_cifar10_teacher.pt_ViT-B-32_en_linear_probe.json")
    full = result_file("{pretrained_full_path}/{label}.json", run)
    assert str(full) == str(weights).replace("/", "_") + "/lab.json"
    tag = RunName("wds/mnist", "runs/student", "openai", "s", "zeroshot_classification", "de")
    assert result_file(DEFAULT_TEMPLATE, tag) == Path("mnist_openai_runs_student_de_zeroshot_classification.json")
    assert result_file(str(tmp_path / "res"), tag) == tmp_path / "res" / "mnist__s__zeroshot_classification__de.json"
    assert is_template("x.json") and is_template("r/{dataset}") and not is_template(str(tmp_path / "res"))
    with pytest.raises(ValueError, match="unknown placeholder {modle}"):
        check_template("{modle}.json")


def test_output_template_that_joins_runs_is_refused_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["eval", "--model", "m.json", "--dataset", "wds/a", "wds/b", "--dataset_root", "r",
               "--output", "one.json"])
    assert rc == 2 and "would both be written to one.json" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_auto_task_by_name_then_by_folder(tmp_path):
    write_retrieval(tmp_path / "caps")
    write_classification(tmp_path / "cls", n_test=6, n_train=6)
    assert auto_task("wds/flickr30k", None) == "zeroshot_retrieval"  # CLIP_benchmark's list, no folder needed
    assert auto_task("wds/mscoco_captions", str(tmp_path)) == "zeroshot_retrieval"
    assert auto_task("wds/caps", str(tmp_path / "{dataset}")) == "zeroshot_retrieval"  # dataset_type.txt
    assert auto_task("wds/cls", str(tmp_path / "{dataset}")) == "zeroshot_classification"
    assert auto_task("wds/missing", str(tmp_path / "{dataset}")) == "zeroshot_classification"
    with pytest.raises(ValueError, match="image_caption_selection"):
        auto_task("sugar_crepe/add_att", None)


# --------------------------------------------------------------------------- records


@pytest.fixture(scope="module")
def models(tiny_vit, tiny_vit_bcos, tmp_path_factory):
    """A teacher as an open_clip JSON config + weights file, and a bcos_clip checkpoint."""
    import bcos_clip
    from bcos_clip.models.loading import model_source

    root = tmp_path_factory.mktemp("models")
    (root / "teacher.json").write_text(json.dumps({"model_cfg": model_source(tiny_vit[0])["model_cfg"]}))
    torch.save(tiny_vit[0].state_dict(), root / "teacher.pt")
    bcos_clip.save(tiny_vit_bcos, root / "student")
    return root


def test_records_use_clip_benchmark_schema_and_names(models, tmp_path, monkeypatch):
    data = tmp_path / "wds"
    write_classification(data / "toy", n_test=12, n_train=12)
    write_retrieval(data / "caps")
    (models / "pairs.txt").write_text("teacher.json,teacher.pt\nstudent,\n")
    monkeypatch.chdir(models)
    base = ["eval", "--pretrained_model", "pairs.txt", "--dataset_root", str(data / "{dataset}"), "--num_workers", "0",
            "--batch_size", "5"]
    assert main(base + ["--dataset", "wds/toy", "wds/caps", "--task", "auto", "--dump_classnames",
                        "--dump_templates"]) == 0
    assert main(base + ["--dataset", "wds/toy", "--task", "linear_probe", "--fewshot_epochs", "2"]) == 0
    expected = {"toy_teacher.pt_teacher.json_en_zeroshot_classification.json": "zeroshot_classification",
                "toy__student_en_zeroshot_classification.json": "zeroshot_classification",
                "caps_teacher.pt_teacher.json_en_zeroshot_retrieval.json": "zeroshot_retrieval",
                "caps__student_en_zeroshot_retrieval.json": "zeroshot_retrieval",
                "toy_teacher.pt_teacher.json_en_linear_probe.json": "linear_probe",
                "toy__student_en_linear_probe.json": "linear_probe"}
    for name, task in expected.items():
        rec = json.loads((models / name).read_text())
        assert CB_KEYS <= set(rec) and rec["task"] == task and rec["language"] == "en"
        assert set(rec["metrics"]) == CB_METRICS[task], name
        assert rec["dataset"] in ("wds/toy", "wds/caps")  # as given, with its wds/ prefix
        assert (rec["model"], rec["pretrained"]) in (("teacher.json", "teacher.pt"), ("student", ""))
    zs = json.loads((models / "toy__student_en_zeroshot_classification.json").read_text())
    assert zs["classnames"] == CLASSNAMES and zs["templates"] == TEMPLATES
    lp = json.loads((models / "toy__student_en_linear_probe.json").read_text())["metrics"]
    assert (lp["epochs"], lp["seed"], lp["fewshot_k"], lp["normalized"], lp["weight_decay"]) == (2, 0, -1, True, 0.0)
    assert (models / "features").is_dir()  # CLIP_benchmark's --feature_root default, next to the results


def test_report_reads_new_old_and_clip_benchmark_records(tmp_path):
    from bcos_clip.evaluation.report import build_report

    res = tmp_path / "res"
    res.mkdir()
    new = {"dataset": "wds/vtab/cifar10", "model": "student", "pretrained": "", "task": "linear_probe",
           "metrics": {"lp_acc1": 0.5, "lp_acc5": None}, "language": "en", "model_label": "student",
           "status": "ok", "is_bcos": True}
    old = {"dataset": "vtab/cifar10", "model": "teacher", "pretrained": None, "task": "linear_probe",
           "metrics": {"acc1": 0.75}, "language": "en", "model_label": "teacher"}
    theirs = '{"dataset": "wds/vtab/cifar10", "model": "RN50", "pretrained": "openai", "task": ' \
             '"linear_probe", "metrics": {"lp_acc1": 0.25, "lp_acc5": NaN}, "language": "en"}'
    (res / "a.json").write_text(json.dumps(new))
    (res / "b.json").write_text(json.dumps(old))
    (res / "c.json").write_text(theirs)
    md = build_report(res, tmp_path / "rep", plot_backend="pillow").markdown.read_text()
    assert "| natural | vtab/cifar10 | 25.00 | 75.00 | 50.00 |" in md  # one row: wds/ and bare names meet


def test_two_models_with_one_label_are_refused_in_a_results_folder(tmp_path):
    from bcos_clip.evaluation.suite import run_suite
    from bcos_clip.evaluation.suite_files import ModelSpec, Suite, SuiteEntry
    from bcos_clip.evaluation.tasks import EvalConfig

    suite = Suite("t", (SuiteEntry("wds/x", "zeroshot_classification"),))
    models = [ModelSpec("runs/a/checkpoints/latest"), ModelSpec("runs/b/checkpoints/latest")]
    with pytest.raises(ValueError, match="give each model its own --label"):
        run_suite(suite, EvalConfig(output=str(tmp_path / "res")), models, groups={})
    assert not (tmp_path / "res").exists()
