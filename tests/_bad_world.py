"""The malformed-input world of tests/test_cli_bad_input.py: a tiny checkpoint, a teacher, shards, a
CLIP_benchmark folder, and every kind of broken file (YAML / JSON errors, image bombs, corrupt shards...).

Not a test module; built once per module by the `world` fixture.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from tests._train_data import write_img2dataset, write_tiny_teacher, write_wds_classification


@dataclass(frozen=True)
class World:
    """Paths (as str) of everything the cases point at."""

    root: str
    ckpt: str          # a bcos_clip checkpoint folder (tiny RN, B=2)
    teacher: str       # tiny RN open_clip JSON config
    teacher_pt: str    # its weights
    shards: str        # img2dataset shards with captions
    wds: str           # a CLIP_benchmark wds/ classification folder
    png: str           # a good image
    file: str          # a plain text file (an "output" that is a file)
    empty_dir: str     # an empty folder

    def path(self, name: str) -> str:
        return str(Path(self.root) / name)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 20000) -> bytes:
    """A PNG whose header claims side x side pixels (400 M for 20000): Pillow refuses it on open."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def png_bytes(seed: int = 0, size=(48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write(root: Path, name: str, data) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)


def _corrupt_shards(root: Path) -> None:
    """corrupt/: every image is garbage; mixedcap/: odd samples have no caption; garbage_tars/: shards
    that are not tar files (their stats files promise samples); empty_shard/, broken_images/, no_images/."""
    for name, image, txt in (("corrupt", lambda i: b"not a jpeg %d" % i, lambda i: True),
                             ("mixedcap", png_bytes, lambda i: i % 2 == 0)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for s in range(2):
            with wds.TarWriter(str(root / name / f"{s:05d}.tar")) as sink:
                for i in range(4):
                    sample = {"__key__": f"{s}{i:04d}", "jpg" if name == "corrupt" else "png": image(i)}
                    if txt(i):
                        sample["txt"] = f"caption {i}"
                    sink.write(sample)
    (root / "garbage_tars").mkdir()
    for s in range(2):
        (root / "garbage_tars" / f"{s:05d}.tar").write_bytes(b"definitely not a tar archive" * 20)
        (root / "garbage_tars" / f"{s:05d}_stats.json").write_text(json.dumps({"successes": 4}))
    (root / "empty_shard").mkdir()
    (root / "empty_shard" / "00000.tar").write_bytes(b"")
    (root / "broken_images").mkdir()
    for i in range(3):
        (root / "broken_images" / f"img{i}.jpg").write_bytes(b"garbage")
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("no pictures here\n")


def _configs(root: Path, w: World) -> None:
    good = f"model: {w.teacher}\npretrained: {w.teacher_pt}\ntrain_data: '{w.shards}'\nsteps: 1\nbatch_size: 2\n"
    _write(root, "train_syntax.yaml", "model: x\nlr: [1, 2\n")
    _write(root, "train_lr_abc.yaml", good + "lr: abc\n")
    _write(root, "train_batch_list.yaml", good + "batch_size: [1]\n")
    _write(root, "train_unknown.yaml", good + "learning_rate: 0.1\n")
    _write(root, "train_list.yaml", "- model\n- x\n")
    _write(root, "train_lr_inf.yaml", good + "lr: .inf\n")
    _write(root, "train_steps_neg.yaml", good.replace("steps: 1", "steps: -2"))
    _write(root, "train_bool_int.yaml", good + "workers: true\n")
    _write(root, "train_b_str.yaml", good + "bcos_b: two\n")
    _write(root, "suite_syntax.yaml", "datasets: [\n")
    _write(root, "suite_nolist.yaml", "datasets: 5\n")
    _write(root, "suite_task.yaml", "datasets:\n  - {name: toy, tasks: 5}\n")
    _write(root, "suite_unknown_task.yaml", "datasets:\n  - {name: toy, tasks: [segmentation]}\n")
    _write(root, "suite_entry.yaml", "datasets:\n  - 7\n")
    _write(root, "suite_key.yaml", "datasets:\n  - {name: toy}\nmodel: RN50\n")
    _write(root, "suite_models.yaml", "datasets:\n  - {name: toy}\nmodels: [RN50]\n")
    tiny = json.loads(Path(w.teacher).read_text())
    _write(root, "model_unknown.json", json.dumps({**tiny, "vision_cfg": {**tiny["vision_cfg"], "widht": 8}}))
    _write(root, "model_type.json", json.dumps({**tiny, "vision_cfg": {**tiny["vision_cfg"], "width": "wide"}}))
    _write(root, "model_top_unknown.json", json.dumps({**tiny, "embed_dimension": 8}))
    _write(root, "model_syntax.json", '{"embed_dim": 64, ')
    _write(root, "model_list.json", "[1, 2]")
    _write(root, "demo_syntax.yaml", "teacher: {steps: [\n")
    _write(root, "demo_unknown.yaml", "no_such_setting: 3\n")
    _write(root, "demo_list.yaml", "- 1\n")
    _write(root, "groups_bad.csv", "name,kind\nx,y\n")
    _write(root, "templates_empty.txt", "\n")


def _images(root: Path) -> None:
    good = png_bytes(1)
    _write(root, "bomb.png", bomb_png())
    _write(root, "notimage.png", "hello, I am text\n")
    _write(root, "truncated.png", good[: len(good) // 2])
    _write(root, "empty.png", b"")
    (root / "image_dir.png").mkdir()


def _checkpoints(root: Path, w: World) -> None:
    import torch
    from safetensors.torch import save_file

    (root / "not_ckpt").mkdir()
    (root / "not_ckpt" / "readme.txt").write_text("x")
    bad_cfg = root / "bad_config_ckpt"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{not json")
    (bad_cfg / "model.safetensors").write_bytes((Path(w.ckpt) / "model.safetensors").read_bytes())
    trunc = root / "truncated_ckpt"
    trunc.mkdir()
    (trunc / "config.json").write_text((Path(w.ckpt) / "config.json").read_text())
    weights = (Path(w.ckpt) / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    save_file({"unrelated.weight": torch.zeros(2)}, str(root / "wrong_keys.safetensors"))
    save_file({"conv1.linear.weight": torch.zeros(2, 6, 3, 3)}, str(root / "official_partial.safetensors"))
    list_cfg = root / "list_config_ckpt"
    list_cfg.mkdir()
    (list_cfg / "config.json").write_text("[]")
    _write(root, "garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    _write(root, "garbage.pt", b"PK\x03\x04 not really a zip")
    _write(root, "results_bad/x.json", "{broken")


def build_world(root: Path, tiny_rn_bcos, tiny_rn) -> World:
    import bcos_clip

    root.mkdir(parents=True, exist_ok=True)
    ckpt = str(bcos_clip.save(tiny_rn_bcos, root / "ckpt"))
    teacher, teacher_pt = write_tiny_teacher(root / "teacher", tiny_rn[0])
    shards = write_img2dataset(root / "shards", n_shards=2, per_shard=4)
    wds_root = write_wds_classification(root / "wds_toy", n=8)
    _write(root, "good.png", png_bytes(0))
    _write(root, "afile.txt", "I am a file\n")
    (root / "empty").mkdir()
    w = World(str(root), ckpt, teacher, teacher_pt, shards, wds_root, str(root / "good.png"),
              str(root / "afile.txt"), str(root / "empty"))
    _corrupt_shards(root)
    _configs(root, w)
    _images(root)
    _checkpoints(root, w)
    return w
