"""Write the shapes world to disk in the formats users have, and ``build_world`` (cached).

Layout under ``out_dir``::

    world.json                        marker: arguments, version, status (a rebuild when they differ)
    train/00000.tar ...               img2dataset-style shards: <key>.jpg, <key>.txt, <key>.json
    train/00000_stats.json ...        img2dataset stats (count, successes, failed_to_download, ...)
    train/00000.parquet ...           img2dataset metadata (only when pyarrow is installed)
    wds/<task>/classnames.txt         CLIP_benchmark wds folders, one per task in DEMO_TASKS
    wds/<task>/zeroshot_classification_templates.txt
    wds/<task>/{train,test}/nshards.txt, 0.tar, 1.tar ...   samples <key>.webp + <key>.cls
    wds/shapes_retrieval/test/0.tar   retrieval: <key>.webp + <key>.txt (captions, one per line)
    wds/shapes_retrieval/dataset_type.txt   "retrieval" (CLIP_benchmark reads .txt targets only then)

Example::

    world = build_world("demo_out/world", quick=True)
    world.train_shards          # "demo_out/world/train/{00000..00002}.tar"
    world.task_dir("shapes_count")
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import webdataset as wds
from tqdm.auto import tqdm

from bcos_clip.data.shapes.world import DEMO_TASKS, RETRIEVAL_TASK, caption_scene, render_sample, render_scene, \
    sample_rng, sample_task_scene, task_classnames, task_templates, train_sample
from bcos_clip.runtime.runfiles import WORLD_MARKER, read_world_marker

logger = logging.getLogger(__name__)

WORLD_VERSION = 2
MARKER = WORLD_MARKER
TAR_MTIME = 1_700_000_000  # an int: a float mtime costs a pax header per member  # fixed tar member times: the same arguments give the same bytes
SPLITS = ("train", "test")
DEFAULTS = {False: dict(n_train=20_000, n_eval_per_class=100),
            True: dict(n_train=3_000, n_eval_per_class=20)}


@dataclass(frozen=True)
class WorldPaths:
    """Where a built shapes world lives.

    ``train_shards`` is a brace pattern for webdataset / open_clip (``.../{00000..00019}.tar``);
    ``wds_root`` holds one CLIP_benchmark folder per task (``wds_root / name``).
    """

    root: Path
    train_shards: str
    n_train: int
    wds_root: Path
    tasks: Tuple[str, ...]
    retrieval_task: str
    image_size: int
    seed: int
    groups: Tuple[Tuple[str, str], ...]

    def task_dir(self, name: str) -> Path:
        """The ``wds/<name>`` folder of one task (CLIP_benchmark layout)."""
        if name not in self.tasks and name != self.retrieval_task:
            raise KeyError(f"unknown shapes task {name!r} (expected one of {self.tasks})")
        return self.wds_root / name

    def train_shard_paths(self) -> List[Path]:
        """The training shards as a list of files."""
        return sorted((self.root / "train").glob("[0-9]*.tar"))


# --------------------------------------------------------------------------- encoding


def _encode(image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        image.save(buf, format="JPEG", quality=92)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=95, method=0)
    else:
        raise ValueError(f"unknown image format {fmt!r} (expected 'jpg' or 'webp')")
    return buf.getvalue()


def _tar_writer(path: Path) -> wds.TarWriter:
    return wds.TarWriter(str(path), mtime=TAR_MTIME)


# --------------------------------------------------------------------------- jobs (run in workers)


def _write_train_shard(root: str, shard: int, start: int, stop: int, seed: int, size: int,
                       collage_share: float = 0.0) -> int:
    """img2dataset-style shard ``shard`` with samples ``start..stop-1`` (+ stats, + parquet)."""
    t0 = time.time()
    rows = []
    with _tar_writer(Path(root) / f"{shard:05d}.tar") as sink:
        for index in range(start, stop):
            scene, caption = train_sample(seed, index, size, collage_share=collage_share)
            jpg = _encode(render_sample(scene), "jpg")
            key = f"{index:09d}"
            meta = {"url": f"shapes://seed{seed}/{key}", "caption": caption, "key": key,
                    "status": "success", "error_message": None, "width": size, "height": size,
                    "original_width": size, "original_height": size, "exif": "{}",
                    "sha256": hashlib.sha256(jpg).hexdigest()}
            rows.append(meta)
            sink.write({"__key__": key, "jpg": jpg, "txt": caption.encode("utf-8"),
                        "json": json.dumps({**meta, "shapes": scene.metadata()}).encode("utf-8")})
    _write_parquet(Path(root) / f"{shard:05d}.parquet", rows)
    t1 = time.time()
    stats = {"count": len(rows), "successes": len(rows), "failed_to_download": 0, "failed_to_resize": 0,
             "duration": round(t1 - t0, 3), "start_time": t0, "end_time": t1,
             "status_dict": {"success": len(rows)}}
    (Path(root) / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return len(rows)


def _write_parquet(path: Path, rows: List[dict]) -> None:
    """img2dataset's per-shard metadata table; skipped when pyarrow is not installed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    pq.write_table(pa.Table.from_pylist(rows), str(path))


def _write_task_shard(root: str, task: str, split: str, shard: int, start: int, stop: int,
                      seed: int, size: int) -> int:
    """``wds/<task>/<split>/<shard>.tar`` with samples ``start..stop-1`` (webp + cls)."""
    with _tar_writer(Path(root) / f"{shard}.tar") as sink:
        for index in range(start, stop):
            scene, k = sample_task_scene(task, seed, split, index, size)
            sink.write({"__key__": f"s{index:07d}", "webp": _encode(render_scene(scene), "webp"),
                        "cls": str(k).encode("utf-8")})
    return stop - start


def _write_retrieval_shard(root: str, shard: int, start: int, stop: int, seed: int, size: int) -> int:
    """Retrieval samples: a training-like scene (own stream) and two captions, one a line."""
    with _tar_writer(Path(root) / f"{shard}.tar") as sink:
        for index in range(start, stop):
            scene, caption = train_sample(seed, index, size, stream=f"{RETRIEVAL_TASK}/test")
            other = caption_scene(scene, sample_rng(seed, f"{RETRIEVAL_TASK}/caption", index))
            captions = [caption] if other == caption else [caption, other]
            sink.write({"__key__": f"s{index:07d}", "webp": _encode(render_scene(scene), "webp"),
                        "txt": "\n".join(captions).encode("utf-8")})
    return stop - start


# --------------------------------------------------------------------------- planning


Job = Tuple[Callable[..., int], tuple, int]  # (function, arguments, number of images)


def _ranges(n: int, per_shard: int) -> List[Tuple[int, int, int]]:
    return [(s, s * per_shard, min(n, (s + 1) * per_shard)) for s in range((n + per_shard - 1) // per_shard)]


def _plan(root: Path, args: dict) -> List[Job]:
    """Every shard to write, as (function, arguments); creates the folders and small text files."""
    seed, size = args["seed"], args["image_size"]
    jobs: List[Job] = []
    train = root / "train"
    train.mkdir(parents=True)
    for shard, a, b in _ranges(args["n_train"], args["samples_per_shard"]):
        jobs.append((_write_train_shard, (str(train), shard, a, b, seed, size, args.get("collage_share", 0.0)),
                     b - a))
    for task in DEMO_TASKS:
        tdir = root / "wds" / task
        tdir.mkdir(parents=True)
        (tdir / "classnames.txt").write_text("\n".join(task_classnames(task)) + "\n")
        (tdir / "zeroshot_classification_templates.txt").write_text("\n".join(task_templates(task)) + "\n")
        n = args["n_eval_per_class"] * len(task_classnames(task))
        for split in SPLITS:
            ranges = _ranges(n, args["eval_shard_size"])
            (tdir / split).mkdir()
            (tdir / split / "nshards.txt").write_text(f"{len(ranges)}\n")
            for shard, a, b in ranges:
                jobs.append((_write_task_shard, (str(tdir / split), task, split, shard, a, b, seed, size),
                             b - a))
    rdir = root / "wds" / RETRIEVAL_TASK / "test"
    rdir.mkdir(parents=True)
    (rdir.parent / "dataset_type.txt").write_text("retrieval\n")  # CLIP_benchmark reads .txt targets only then
    ranges = _ranges(args["n_retrieval"], args["eval_shard_size"])
    (rdir / "nshards.txt").write_text(f"{len(ranges)}\n")
    for shard, a, b in ranges:
        jobs.append((_write_retrieval_shard, (str(rdir), shard, a, b, seed, size), b - a))
    return jobs


def _run_jobs(jobs: List[Job], workers: int) -> None:
    total = sum(n for _, _, n in jobs)
    with tqdm(total=total, desc="shapes world", unit="img") as bar:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            for fn, a, _ in jobs:
                bar.update(fn(*a))
            return
        # fork: workers only need numpy + Pillow, and fork needs no importable __main__.
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(fn, *a) for fn, a, _ in sorted(jobs, key=lambda j: -j[2])]
            for fut in futures:
                bar.update(fut.result())


# --------------------------------------------------------------------------- build_world


def _world_paths(root: Path, args: dict) -> WorldPaths:
    n_shards = len(_ranges(args["n_train"], args["samples_per_shard"]))
    last = max(n_shards - 1, 0)
    return WorldPaths(
        root=root, train_shards=str(root / "train" / f"{{00000..{last:05d}}}.tar"),
        n_train=args["n_train"], wds_root=root / "wds", tasks=tuple(DEMO_TASKS),
        retrieval_task=RETRIEVAL_TASK, image_size=args["image_size"], seed=args["seed"],
        groups=tuple(DEMO_TASKS.items()))


def _clear(root: Path) -> None:
    """Remove a previous (or partial) world; refuse to touch folders that are not ours."""
    marker = read_world_marker(root)
    ours = [root / "train", root / "wds"]
    if marker is None and any(p.exists() for p in ours):
        raise FileExistsError(f"{root} holds train/ or wds/ but no {MARKER}: not a shapes world; "
                              "choose another output folder")
    for p in ours:
        if p.exists():
            shutil.rmtree(p)


def build_world(out_dir: Union[str, os.PathLike], *, n_train: Optional[int] = None,
                n_eval_per_class: Optional[int] = None, image_size: int = 64, seed: int = 0,
                quick: bool = False, samples_per_shard: int = 1000, eval_shard_size: int = 1000,
                n_retrieval: Optional[int] = None, workers: Optional[int] = None,
                collage_share: float = 0.0) -> WorldPaths:
    """Generate (or reuse) the shapes world under ``out_dir``.

    Defaults: 20,000 training images and 100 images per class per split and task (``quick``: 3,000
    and 20). A second call with the same arguments reuses what is on disk (``world.json`` holds the
    arguments and the generator version); any difference rebuilds. ``workers`` processes (default:
    the CPU count) write shards in parallel; the bytes written do not depend on it. ``collage_share``:
    the chance that a training sample is a 2 x 2 collage (``collage.py``; 0: none, the world of before).
    """
    defaults = DEFAULTS[bool(quick)]
    args = dict(version=WORLD_VERSION, seed=int(seed), image_size=int(image_size),
                n_train=int(defaults["n_train"] if n_train is None else n_train),
                n_eval_per_class=int(defaults["n_eval_per_class"] if n_eval_per_class is None
                                     else n_eval_per_class),
                samples_per_shard=int(samples_per_shard), eval_shard_size=int(eval_shard_size))
    args["n_retrieval"] = int(4 * args["n_eval_per_class"] if n_retrieval is None else n_retrieval)
    if not 0.0 <= float(collage_share) <= 1.0:
        raise ValueError(f"build_world: collage_share must be in [0, 1], got {collage_share}")
    if collage_share:  # only then in the arguments: a world without collages keeps its marker (and cache)
        args["collage_share"] = float(collage_share)
    for key in ("n_train", "n_eval_per_class", "samples_per_shard", "eval_shard_size", "n_retrieval"):
        if args[key] < 1:
            raise ValueError(f"build_world: {key} must be >= 1, got {args[key]}")
    if args["image_size"] < 16:
        raise ValueError(f"build_world: image_size must be >= 16 pixels, got {image_size}")
    root = Path(out_dir)
    paths = _world_paths(root, args)
    marker = read_world_marker(root)
    if marker is not None and marker.get("status") == "complete" and marker.get("args") == args:
        logger.info("shapes world: reusing %s", root)
        return paths
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)
    (root / MARKER).write_text(json.dumps({"status": "building", "args": args}, indent=2))
    t0 = time.time()
    jobs = _plan(root, args)
    _run_jobs(jobs, workers if workers is not None else (os.cpu_count() or 1))
    info = {"status": "complete", "args": args, "seconds": round(time.time() - t0, 2),
            "paths": {k: str(v) for k, v in asdict(paths).items()}, "groups": dict(DEMO_TASKS)}
    (root / MARKER).write_text(json.dumps(info, indent=2))
    logger.info("shapes world: wrote %s in %.1f s", root, info["seconds"])
    return paths


__all__ = ["WorldPaths", "build_world", "WORLD_VERSION"]
