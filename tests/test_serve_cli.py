"""`bcos-clip serve` on the command line: flags -> ServeConfig, clear errors, a real server process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import bcos_clip
from bcos_clip.cli import build_parser, main

pytest.importorskip("fastapi")


def test_flags_become_a_config(monkeypatch, tmp_path):
    import bcos_clip.apps.serve.server as serve_app

    seen = {}
    monkeypatch.setattr(serve_app, "serve", lambda config: seen.setdefault("config", config))
    assert main(["serve", "--model", str(tmp_path), "--teacher", "t.json", "--teacher-pretrained", "t.pt",
                 "--baseline", "gradcam", "--max-upload-mb", "2", "--max-image-side", "1024",
                 "--max-prompts", "8", "--no-colour", "--cache-size", "3", "--strategy", "prompts"]) == 0
    config = seen["config"]
    assert config.host == "127.0.0.1" and config.port == 8000  # loopback by default
    assert config.teacher == "t.json" and config.teacher_pretrained == "t.pt" and config.baselines == ("gradcam",)
    assert config.limits.max_upload_bytes == 2 * 1024 * 1024 and config.limits.max_image_side == 1024
    assert config.limits.max_prompts == 8 and not config.color and config.cache_entries == 3
    assert config.strategy == "prompts"


def test_bad_flags_and_model_fail_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", str(tmp_path), "--max-upload-mb", "0"])
    assert "must be > 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path)]) == 2  # a directory without a checkpoint
    assert "no bcos_clip checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_serves_health_on_loopback(tiny_rn_bcos, tmp_path):
    model_dir = bcos_clip.save(tiny_rn_bcos, tmp_path / "student")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bcos_clip.cli", "serve", "--model", str(model_dir),
                             "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not come up:\n{proc.communicate(timeout=5)[0] if proc.poll() is not None else ''}")
                time.sleep(0.3)
        assert health["status"] == "ok" and health["methods"][0]["name"] == "bcos"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
