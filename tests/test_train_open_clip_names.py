"""`bcos-clip train` takes open_clip_train's names: --logs/--name, --save-frequency, --zeroshot-frequency,
--opt, its --precision spellings, --report-to wandb (offline), --log-every-n-steps; out.log; resume."""
from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch

from bcos_clip.cli import build_parser
from bcos_clip.cli.train import config_from_args
from bcos_clip.runtime.runfiles import read_metrics
from bcos_clip.train.cadence import due_after
from bcos_clip.train.config import TrainConfig, build_config
from bcos_clip.train.reporters import RunInfo, parse_report_to
from bcos_clip.train.run_log import progress_line

BASE = dict(model="RN50", train_data="x.tar", steps=1)


def _args(*argv: str):
    return build_parser().parse_args(["train", "--model", "RN50", "--train-data", "x.tar", "--steps", "1", *argv])


def test_logs_and_name_are_the_run_folder(tmp_path):
    now = datetime(2026, 12, 1, 15, 4, 5)
    assert build_config({**BASE, "logs": str(tmp_path), "name": "run1"}).output == str(tmp_path / "run1")
    assert build_config({**BASE, "name": "run1"}).output == str(Path("logs") / "run1")  # open_clip's ./logs/
    made = Path(build_config({**BASE, "logs": str(tmp_path), "lr": 5e-4}, now=now).output)
    assert made.parent == tmp_path and made.name == "2026_12_01-15_04_05-model_RN50-lr_0.0005-b_64-j_4-p_auto"
    made = Path(build_config({**BASE, "model": "/m/tiny_rn.json", "logs": "L"}, now=now).output)
    assert made.name == "2026_12_01-15_04_05-model_tiny_rn-lr_0.0001-b_64-j_4-p_auto"
    with pytest.raises(ValueError, match="--logs without --name: give --name"):
        build_config({**BASE, "logs": str(tmp_path)})  # torchrun: no made-up name
    with pytest.raises(ValueError, match="not both"):
        build_config({**BASE, "logs": str(tmp_path), "name": "a", "output": str(tmp_path / "b")})
    with pytest.raises(ValueError, match="--logs none"):
        build_config({**BASE, "logs": "None", "name": "a"})
    with pytest.raises(ValueError, match=re.escape("--output (or --logs DIR --name NAME)")):
        build_config(BASE)
    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"model: RN50\ntrain_data: x.tar\nsteps: 1\noutput: {tmp_path / 'from_yaml'}\n")
    assert build_config({"logs": str(tmp_path), "name": "n"}, str(yaml)).output == str(tmp_path / "n")
    yaml.write_text(f"model: RN50\ntrain_data: x.tar\nsteps: 1\nlogs: {tmp_path}\nname: y\n")
    assert build_config({}, str(yaml)).output == str(tmp_path / "y")
    assert build_config({"output": str(tmp_path / "o")}, str(yaml)).output == str(tmp_path / "o")


def test_open_clip_flags_reach_the_config(tmp_path):
    cfg = config_from_args(_args("--logs", str(tmp_path), "--name", "n", "--opt", "adamw", "--precision",
                                 "pure_bf16", "--log-metric-every-n-steps", "5", "--log-every-n-steps", "7",
                                 "--save-frequency", "2", "--zeroshot-frequency", "3", "--report-to",
                                 "wandb,tensorboard", "--delete-previous-checkpoint", "--wandb-project-name", "p",
                                 "--wandb-notes", "hello"))
    assert (cfg.output, cfg.optimizer, cfg.precision, cfg.log_every, cfg.log_every_n_steps) == (
        str(tmp_path / "n"), "adamw", "bf16", 5, 7)
    assert (cfg.save_frequency, cfg.zeroshot_frequency, cfg.keep_checkpoints) == (2, 3, 1)
    assert (cfg.report_to, cfg.reporters, cfg.wandb_project_name, cfg.wandb_notes) == (
        "tensorboard,wandb", ("tensorboard", "wandb"), "p", "hello")
    assert cfg.checkpoint_every is None  # --save-frequency alone: checkpoints by epoch only
    assert config_from_args(_args("--output", str(tmp_path))).checkpoint_every == 1000
    assert config_from_args(_args("--output", str(tmp_path), "--save-every", "5",
                                  "--save-frequency", "1")).checkpoint_every == 5
    made = config_from_args(_args("--logs", str(tmp_path)))
    assert Path(made.output).parent == tmp_path and "-model_RN50-lr_0.0001-b_64-j_4-p_auto" in made.output
    assert build_config({**BASE, "output": "o", "opt": "adamw"}).optimizer == "adamw"  # YAML / API key too
    with pytest.raises(ValueError, match="'opt' sets optimizer a second time"):
        build_config({**BASE, "output": "o", "optimizer": "adam", "opt": "adamw"})


def test_precision_spellings_and_the_fp16_refusal():
    assert TrainConfig(**BASE, output="o", precision="amp_bfloat16").precision == "amp_bf16"
    assert TrainConfig(**BASE, output="o", precision="pure_bf16").precision == "bf16"
    for name in ("fp16", "pure_fp16"):
        with pytest.raises(ValueError, match=f"--precision {name}: float16 weights without loss scaling"):
            TrainConfig(**BASE, output="o", precision=name)


def test_the_fp16_refusal_reason_holds():
    """The refusal's reason, pinned: Adam on float16 weights turns a weight -inf after one step with gradient
    1e-3, and a 1e-4 update of 0.5 is lost (float16's spacing there is 4.9e-4)."""
    assert torch.tensor(1e-8, dtype=torch.float16).item() == 0.0
    weight = torch.nn.Parameter(torch.full((2,), 0.5, dtype=torch.float16))
    weight.grad = torch.full((2,), 1e-3, dtype=torch.float16)
    torch.optim.Adam([weight], lr=1e-4).step()
    assert torch.isinf(weight).all()
    assert (torch.tensor(0.5, dtype=torch.float16) - 1e-4).item() == 0.5


def test_cadence_of_steps_and_epochs():
    """4 steps an epoch, 10 steps: epochs end at 4 and 8; the run ends at 10 (mid-epoch)."""
    def events(**kw):
        cfg = TrainConfig(**{**BASE, "output": "o", "log_every_n_steps": 100, **kw})
        out = {"record": [], "progress": [], "zeroshot": [], "save": []}
        for step in range(1, 11):
            due = due_after(step, 10, 4, cfg)
            for name in out:
                if getattr(due, name):
                    out[name].append(step)
        return out

    assert events(save_frequency=1)["save"] == [4, 8]  # + the loop's save at the end
    assert events(save_frequency=2)["save"] == [8]
    assert events(save_frequency=1, save_every=3)["save"] == [3, 4, 6, 8, 9]
    assert events()["save"] == []  # default 1000 steps
    assert events(zeroshot_frequency=2)["zeroshot"] == [8, 10]  # and at the end, as open_clip_train
    assert events(zeroshot_every=5, zeroshot_frequency=1)["zeroshot"] == [4, 5, 8, 10]
    assert events(zeroshot_every=0)["zeroshot"] == []
    logged = events(log_every=4, log_every_n_steps=3)
    assert logged["progress"] == [3, 6, 9, 10] and logged["record"] == [3, 4, 6, 8, 9, 10]


def test_report_to_lists_and_refusals():
    assert parse_report_to("") == ()
    assert parse_report_to("wandb") == ("wandb",)
    assert parse_report_to("wandb, tensorboard") == parse_report_to("all") == ("tensorboard", "wandb")
    with pytest.raises(ValueError, match="'comet' is not one of tensorboard, wandb, all"):
        parse_report_to("comet")
    with pytest.raises(ValueError, match="trackio"):
        TrainConfig(**BASE, output="o", report_to="trackio")


def test_missing_wandb_is_one_line_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    import bcos_clip.train.loop as loop
    from bcos_clip.train import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.setattr(loop, "build_session", lambda *a: pytest.fail("work started before the check"))
    with pytest.raises(RuntimeError, match=re.escape("--report-to wandb needs the wandb package, which is not "
                                                     "installed: pip install 'bcos_clip[wandb]'")):
        train(TrainConfig(**BASE, output=str(tmp_path / "run"), report_to="wandb"))
    assert not (tmp_path / "run").exists()


def test_progress_line():
    record = {"step": 20, "epoch": 1, "loss": 0.123456, "lr": 1e-4, "grad_norm": float("nan"),
              "samples_per_s": 812.34}
    assert progress_line(record, 100) == ("step 20/100 (20%), epoch 1: loss 0.1235, lr 1.000e-04, grad_norm nan, "
                                          "812.3 samples/s")


def test_wandb_offline_sink_writes_a_local_run(tmp_path, monkeypatch):
    """--report-to wandb without network: WANDB_MODE=offline keeps the run under OUTPUT/wandb."""
    wandb = pytest.importorskip("wandb")
    from bcos_clip.train.metrics import MetricsLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = RunInfo(str(tmp_path / "myrun"), {"lr": 1e-4}, False, "bcos-clip-test", "")
    (tmp_path / "myrun").mkdir()
    logger = MetricsLogger(run.output, True, "wandb", run=run)
    for step in (1, 2):
        logger.log({"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 1e-4, "grad_norm": float("nan")})
    wandb_run = logger.sinks[0].run
    assert (wandb_run.name, wandb_run.id, wandb_run.project) == ("myrun", "myrun", "bcos-clip-test")
    keys = set(wandb_run.summary.keys())
    assert "train/loss" in keys and "train/grad_norm" not in keys  # a NaN is left out
    logger.close()
    wandb.teardown()  # the wandb service writes the run file out when it stops
    runs = list((tmp_path / "myrun" / "wandb").glob("offline-run-*-myrun"))
    assert len(runs) == 1
    assert b"train/loss" in (runs[0] / "run-myrun.wandb").read_bytes()  # the history, for `wandb sync`
    assert len(read_metrics(tmp_path / "myrun")) == 2


@pytest.fixture(scope="module")
def files(tiny_rn, tmp_path_factory):
    from tests._train_data import write_img2dataset, write_tiny_teacher, write_wds_classification

    root = tmp_path_factory.mktemp("oc_names")
    model, weights = write_tiny_teacher(root / "teacher", model=tiny_rn[0])
    return {"model": model, "pretrained": weights, "shards": write_img2dataset(root / "cc3m", 2, 4),
            "wds": write_wds_classification(root / "wds_check")}


def test_open_clip_command_line_checkpoints_by_epoch_logs_and_resumes(files, tmp_path, capsys, caplog):
    """open_clip_train's spelling end to end: 8 samples, batch 4 -> 2 steps an epoch; --logs/--name is the run
    folder, a checkpoint and a zero-shot check after each epoch, progress lines in out.log; --resume latest
    continues the same folder."""
    from bcos_clip.cli import main

    caplog.set_level(logging.INFO)  # as the CLI's own logging setup (pytest keeps its handlers)
    argv = ["train", "--model", files["model"], "--pretrained", files["pretrained"], "--train-data",
            files["shards"], "--batch-size", "4", "--workers", "0", "--device", "cpu", "--precision", "fp32",
            "--opt", "adamw", "--logs", str(tmp_path / "logs"), "--name", "oc", "--save-frequency", "1",
            "--zeroshot-frequency", "1", "--zeroshot-data", files["wds"], "--zeroshot-samples", "4",
            "--log-every-n-steps", "1", "--loss", "cosine"]
    assert main(argv + ["--epochs", "1"]) == 0
    run = tmp_path / "logs" / "oc"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000002"]
    assert [r["step"] for r in read_metrics(run) if "zeroshot_top1" in r] == [2]
    assert main(argv + ["--epochs", "2", "--resume", "latest"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000002", "step_00000004"]
    assert [r["step"] for r in read_metrics(run) if "zeroshot_top1" in r] == [2, 4]
    text = (run / "out.log").read_text()
    assert "step 1/2 (50%), epoch 0: loss" in text and "step 4/4 (100%), epoch 1: loss" in text
    assert "(resumed from" in text.split("step 2/2")[1]  # the second launch appended to the same file
    assert capsys.readouterr().out.count("trained") == 2


def test_zeroshot_check_uses_at_most_its_sample_count(files, tiny_rn_bcos):
    """--zeroshot-samples 4 on an 8-image folder scores 4 images (it used to round up to a whole batch)."""
    from bcos_clip.train.zeroshot_check import ZeroShotCheck

    check = ZeroShotCheck(files["wds"], tiny_rn_bcos.image_size, max_samples=4)
    assert check.run(tiny_rn_bcos, torch.device("cpu"))["zeroshot_n"] == 4


def test_cli_torchrun_needs_a_name_and_missing_wandb_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from bcos_clip.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--logs without --name: give --name"):
        config_from_args(_args("--logs", str(tmp_path)))
    assert config_from_args(_args("--logs", str(tmp_path), "--name", "n")).output == str(tmp_path / "n")
    monkeypatch.delenv("WORLD_SIZE")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = main(["train", "--model", "RN50", "--train-data", str(tmp_path / "x.tar"), "--steps", "1",
                 "--logs", str(tmp_path), "--name", "run", "--report-to", "wandb"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == ["bcos-clip train: error: --report-to wandb needs the wandb package, which is not "
                                 "installed: pip install 'bcos_clip[wandb]'"]


def test_log_lines_go_above_progress_bars_only_with_a_console_handler(monkeypatch):
    import contextlib
    import sys

    from bcos_clip.train.run_log import log_lines_above_bars

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    assert isinstance(log_lines_above_bars(), contextlib.nullcontext)  # tqdm would add a stderr handler
    console = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(root, "handlers", [console])
    with log_lines_above_bars():
        assert console not in root.handlers and len(root.handlers) == 1  # replaced by tqdm's writer
    assert root.handlers == [console]
