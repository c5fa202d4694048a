"""export: hub-style folder + model card; export -> load is exact."""
import json

import pytest
import torch
from safetensors.torch import load_file

import bcos_clip
from bcos_clip.apps.export.hub_folder import export
from bcos_clip.cli import main


@pytest.fixture()
def run_dir(tiny_rn_bcos, tmp_path):
    """A training run's layout: OUTPUT/metrics.jsonl, OUTPUT/results/, OUTPUT/checkpoints/step_N/."""
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_00000020"
    bcos_clip.save(tiny_rn_bcos, step)
    (step / "train_config.json").write_text(json.dumps(
        {"model": "RN50", "train_data": "shapes/train/{00000..00003}.tar", "loss": "text_kd", "steps": 20,
         "batch_size": 8, "lr": 1e-4, "optimizer": "adam", "precision": "fp32"}))
    lines = [{"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.5}, {"step": 20, "zeroshot_top1": 0.625}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 2')
    (run / "results").mkdir()
    (run / "results" / "shapes_natural__step__zeroshot_classification.json").write_text(json.dumps(
        {"dataset": "shapes_natural", "model": str(step), "task": "zeroshot_classification",
         "metrics": {"acc1": 0.8125, "acc5": None, "mean_per_class_recall": 0.8}}))
    (run / "results" / "not_a_record.json").write_text(json.dumps({"hello": 1}))
    return run, step


def test_export_round_trip_is_exact(run_dir, tmp_path):
    run, step = run_dir
    out = export(step, tmp_path / "hub", license="mit")
    original, exported = bcos_clip.load(step), bcos_clip.load(out)
    a, b = original.state_dict(), exported.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    images = torch.rand(2, 3, 64, 64)
    tokens = original.tokenizer(["a red circle"])
    with torch.no_grad():
        assert torch.equal(exported.encode_image(images), original.encode_image(images))
        assert torch.equal(exported.encode_text(tokens), original.encode_text(tokens))
    assert load_file(str(out / "model.safetensors")).keys() == load_file(str(step / "model.safetensors")).keys()
    assert (out / "train_config.json").is_file()
    assert (out / "results" / "shapes_natural__step__zeroshot_classification.json").is_file()


def test_model_card_content(run_dir, tmp_path):
    _, step = run_dir
    card = (export(step, tmp_path / "hub", license="mit") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: bcos_clip") and "license: mit" in card
    assert "base_model: timm/resnet50_clip.openai" not in card  # random-init teacher: no hub base model
    assert "`RN50`" in card and "| `b` | `2.0` |" in card and "| `input_encoding` | `\"folded\"` |" in card
    assert "shapes/train/{00000..00003}.tar" in card and "| loss | `text_kd` |" in card
    assert "2 records up to step 20" not in card and "3 records up to step 20" in card
    assert "last loss 0.5" in card and "zero-shot top-1 0.625" in card
    assert "| shapes_natural | zeroshot_classification | acc1 | 0.8125 |" in card
    assert "hello" not in card


def test_card_names_hub_base_model_and_official_import():
    from bcos_clip.apps.export.model_card import render_model_card
    config = {"source": {"name": "RN50", "pretrained": "openai", "overrides": {}},
              "bcosify": {"b": 2.0, "input_encoding": "normalize6"}, "preprocess_cfg": {"size": 224},
              "model_cfg": {"embed_dim": 1024, "vision_cfg": {"layers": [3, 4, 6, 3]}},
              "extra": {"official": {"experiment_name": "resnet_50_clip_b2_noBias_randomResizedCrop_sigLip_CC3M_"
                                                        "bcosification", "dataset": "CC3M", "epoch": 5}}}
    card = render_model_card(config, "B-cos RN50")
    assert "base_model: timm/resnet50_clip.openai" in card
    assert "released with the B-cosification paper" in card and "`CC3M`" in card and "epoch 5" in card
    assert "No training record" not in card and "## Evaluation" not in card


def test_cli_export_and_errors(run_dir, tmp_path, capsys):
    run, step = run_dir
    extra = tmp_path / "more_results"
    extra.mkdir()
    (extra / "r.json").write_text(json.dumps({"dataset": "shapes_count", "model": "m", "task": "linear_probe",
                                              "metrics": {"acc1": 0.5}}))
    rc = main(["export", str(step), "--out", str(tmp_path / "hub"), "--results", str(extra)])
    assert rc == 0, capsys.readouterr().err
    assert "| shapes_count | linear_probe | acc1 | 0.5 |" in (tmp_path / "hub" / "README.md").read_text()
    assert bcos_clip.load(tmp_path / "hub").spec == bcos_clip.load(step).spec
    for argv, expected in ((["export", str(tmp_path), "--out", str(tmp_path / "x")], "config.json is missing"),
                           (["export", str(step), "--out", str(step)], "is the checkpoint directory itself"),
                           (["export", str(step), "--out", str(tmp_path / "y"), "--results", "nope"],
                            "results path nope not found")):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    state = load_file(str(step / "model.safetensors"))
    state.pop("visual.conv1.weight")
    from safetensors.torch import save_file
    save_file(state, str(step / "model.safetensors"))
    rc = main(["export", str(step), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing keys: visual.conv1.weight" in err and len(err.strip().splitlines()) == 1


def test_open_clip_checkpoint_mismatch_is_one_line(tiny_rn, tmp_path):
    model = tiny_rn[0]
    (tmp_path / "tiny.json").write_text(json.dumps(model.bcos_clip_source["model_cfg"]))
    state = {k: v for k, v in model.state_dict().items() if k != "visual.bn1.weight"}
    state["visual.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    from bcos_clip.models import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError) as err:
        bcos_clip.load_clip(str(tmp_path / "tiny.json"), pretrained=str(tmp_path / "w.pt"))
    msg = str(err.value)
    assert "missing keys: visual.bn1.weight" in msg and "unexpected keys: extra.weight" in msg
    assert "visual.conv2.weight: expected" in msg and "\n" not in msg
