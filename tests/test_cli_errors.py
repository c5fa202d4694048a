"""The CLI's error net (bcos_clip.cli.errors) and its argparse types (bcos_clip.cli.types), unit by unit."""
from __future__ import annotations

import argparse
import json

import pytest
import yaml

from bcos_clip.cli.errors import OneLineParser, describe, expected_errors
from bcos_clip.cli.types import (all_or_positive_int, beta, int_list, log_level, number, open_fraction, port,
                                 positive_float, positive_int, probability, smoothing_kernel, unit_fraction)


@pytest.mark.parametrize("parse, text, value", [
    (positive_float, "1e-3", 1e-3), (positive_int, "3", 3), (port, "65535", 65535), (port, "1", 1),
    (probability, "0", 0.0), (probability, "1", 1.0), (unit_fraction, "1", 1.0), (beta, "0", 0.0),
    (open_fraction, "0.5", 0.5), (all_or_positive_int, "-1", -1), (all_or_positive_int, "5", 5),
    (int_list(1), "64, 128,", [64, 128]), (log_level, "debug", "DEBUG"), (number(float), "-2.5", -2.5),
    (smoothing_kernel, "0", 0), (smoothing_kernel, "1", 1), (smoothing_kernel, "19", 19),
])
def test_types_accept_good_values(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text, message", [
    (positive_float, "nan", "expected a finite number, got 'nan'"),
    (positive_float, "-inf", "expected a finite number"), (positive_float, "0", "must be > 0, got 0"),
    (positive_float, "x", "expected a number, got 'x'"), (positive_int, "1.5", "expected an integer"),
    (positive_int, "0", "must be >= 1, got 0"), (port, "70000", "must be in 1..65535, got 70000"),
    (port, "0", "must be in 1..65535"), (probability, "1.01", "must be in [0, 1], got 1.01"),
    (unit_fraction, "0", "must be in (0, 1]"), (beta, "1", "must be in [0, 1)"),
    (open_fraction, "1", "must be in (0, 1)"), (all_or_positive_int, "0", "-1 (all) or >= 1"),
    (int_list(1), "8,0", "must be >= 1, got 0"), (int_list(1), "8,x", "comma-separated integers"),
    (int_list(1), ",", "comma-separated integers"), (log_level, "loud", "expected DEBUG"),
    (smoothing_kernel, "4", "must be 0 (none) or odd, got 4"), (smoothing_kernel, "-1", "0 (none) or odd"),
])
def test_types_refuse_bad_values_with_the_rule(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert message in str(info.value)


def _yaml_error() -> yaml.YAMLError:
    class Named:
        name = "run.yaml"

        def read(self, size: int = -1) -> str:
            text, self.read = "lr: [1, 2\n", lambda size=-1: ""
            return text

    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(Named())
    return info.value


def _worker_error() -> RuntimeError:
    return RuntimeError("Caught RuntimeError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 3, in f\n    raise RuntimeError('shard 7: bad')\n"
                        "RuntimeError: shard 7: bad\n")


@pytest.mark.parametrize("make, line", [
    (lambda: KeyError("--config a.yaml: unknown training option 'x'"), "--config a.yaml: unknown training option 'x'"),
    (lambda: FileExistsError(17, "File exists", "/runs/a"), "/runs/a: File exists"),
    (lambda: FileNotFoundError("--train-data: 2 shards missing"), "--train-data: 2 shards missing"),
    (_yaml_error, "run.yaml: YAML syntax error at line 2, column 1:"),
    (_worker_error, "shard 7: bad (in DataLoader worker process 1)"),
    (lambda: ValueError("two\nlines"), "two lines"),
    (lambda: ValueError(""), "ValueError"),
    (lambda: ValueError("x" * 5000), "[...] (the rest with --log-level DEBUG)"),
])
def test_describe_gives_one_line(make, line):
    text = describe(make())
    assert "\n" not in text and line in text and len(text) < 700


def test_expected_errors_cover_the_bad_input_classes_only():
    from PIL import Image, UnidentifiedImageError
    from safetensors import SafetensorError

    caught = expected_errors()
    for exc in (IsADirectoryError(), NotADirectoryError(), PermissionError(), UnidentifiedImageError(),
                json.JSONDecodeError("x", "", 0), OverflowError(), Image.DecompressionBombError(),
                SafetensorError(), yaml.YAMLError(), KeyError("k"), UnicodeDecodeError("utf-8", b"", 0, 1, "x")):
        assert isinstance(exc, caught), type(exc)
    for bug in (TypeError(), AttributeError(), ZeroDivisionError(), NameError(), AssertionError()):
        assert not isinstance(bug, caught), type(bug)


def test_argument_errors_are_one_line(capsys):
    parser = OneLineParser(prog="bcos-clip x")
    parser.add_argument("--n", type=positive_int, required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "bcos-clip x: error: argument --n: must be >= 1, got 0\n"
