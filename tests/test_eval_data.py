"""Benchmark readers: CLIP_benchmark wds folders (written here byte by byte with tarfile, in the exact
layout), HF datasets saved to disk / parquet, image folders; bad inputs.

The ``write_*`` helpers are also used by the other tests/test_eval_*.py files.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from bcos_clip.data.readers.folder import open_image_folder
from bcos_clip.data.readers.hf import open_hf_benchmark
from bcos_clip.data.readers.registry import dataset_name, open_dataset, parse_spec
from bcos_clip.data.readers.wds import open_wds_benchmark, resolve_wds_root
from bcos_clip.evaluation.features import collate

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240), (20, 20, 20), (200, 200, 30)]
CLASSNAMES = ["red", "green", "blue", "white", "black", "yellow"]
TEMPLATES = ["a photo of a {c}.", "a {c} thing."]
FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


def image_bytes(label: int, seed: int, ext: str = "webp", size: int = 24) -> bytes:
    """A noisy image of COLORS[label] encoded as ``ext``."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(COLORS[label % len(COLORS)])[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format=FORMATS[ext])
    return buf.getvalue()


def write_split(root: Path, split: str, samples: Sequence[List[Tuple[str, bytes]]], per_shard: int = 5,
                nshards_file: bool = True) -> None:
    """``root/split/{0..N-1}.tar`` + ``nshards.txt``; a sample is a list of (extension, payload)."""
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    shards = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
    for s, chunk in enumerate(shards):
        with tarfile.open(d / f"{s}.tar", "w") as tar:
            for j, members in enumerate(chunk):
                for ext, data in members:
                    info = tarfile.TarInfo(f"s{s:03d}{j:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    if nshards_file:
        (d / "nshards.txt").write_text(f"{len(shards)}\n")


def write_classification(root: Path, n_test: int = 18, n_train: int = 24, ext: str = "webp",
                         classnames: Sequence[str] = CLASSNAMES, templates: Optional[Sequence[str]] = TEMPLATES,
                         seed: int = 0) -> List[int]:
    """A classification wds folder; returns the test labels in written order."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    labels = {}
    for split, n in (("test", n_test), ("train", n_train)):
        labels[split] = [i % len(COLORS) for i in range(n)]
        write_split(root, split, [[(ext, image_bytes(y, seed + 1000 * (split == "train") + i, ext)),
                                   ("cls", str(y).encode())] for i, y in enumerate(labels[split])])
    return labels["test"]


def write_multilabel(root: Path, n: int = 16) -> np.ndarray:
    """A multilabel wds folder (``.npy`` multi-hot over 4 classes); returns the (n, 4) targets."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES[:4]) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    rng = np.random.default_rng(3)
    targets = (rng.random((n, 4)) < 0.4).astype(np.float32)
    targets[np.arange(n), np.arange(n) % 4] = 1.0
    samples = []
    for i in range(n):
        buf = io.BytesIO()
        np.save(buf, targets[i])
        samples.append([("png", image_bytes(i % 4, 50 + i, "png")), ("npy", buf.getvalue())])
    write_split(root, "test", samples, per_shard=6)
    return targets


def write_retrieval(root: Path, n: int = 8) -> List[List[str]]:
    """A retrieval wds folder (``.txt`` captions, 2 per image, dataset_type.txt); returns captions."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    caps = [[f"a {CLASSNAMES[i % 6]} square number {i}", f"picture {i} in {CLASSNAMES[i % 6]}"] for i in range(n)]
    write_split(root, "test", [[("jpg", image_bytes(i % 6, 90 + i, "jpg")), ("txt", "\n".join(c).encode())]
                               for i, c in enumerate(caps)], per_shard=3)
    return caps


def write_hf(path: Path, n_test: int = 12, n_train: int = 12) -> List[int]:
    """A DatasetDict (image + ClassLabel) saved with save_to_disk; returns the test labels."""
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES)})
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [(i * 5) % 6 for i in range(n)]
        imgs = [Image.open(io.BytesIO(image_bytes(y, 300 + i, "png"))) for i, y in enumerate(labels)]
        splits[split] = datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=feats)
        if split == "test":
            test_labels = labels
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return test_labels


def write_folder(path: Path, per_class: int = 3) -> List[int]:
    """``path/{train,test}/<class>/<i>.png``; returns the test labels in sorted file order."""
    for split in ("train", "test"):
        for c, name in enumerate(sorted(CLASSNAMES[:4])):
            d = path / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i}.png").write_bytes(image_bytes(CLASSNAMES.index(name), 500 + 10 * c + i, "png"))
    return [c for c in range(4) for _ in range(per_class)]


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.float32) / 255.0).permute(2, 0, 1)


def read_all(ds, split: str = "test", rank: int = 0, world: int = 1):
    batch = list(ds.torch_dataset(split, to_tensor, rank=rank, world_size=world))
    return collate(batch) if batch else (None, [], torch.zeros(0, dtype=torch.long))


# --------------------------------------------------------------------------- wds


@pytest.mark.parametrize("ext", ["webp", "jpg"])
def test_wds_classification_reads_every_sample(tmp_path, ext):
    labels = write_classification(tmp_path / "wds" / "toy", ext=ext)
    ds = open_dataset("wds/toy", str(tmp_path / "wds" / "{dataset}"))
    assert (ds.kind, ds.classnames, ds.templates) == ("classification", CLASSNAMES, TEMPLATES)
    images, targets, keys = read_all(ds)
    assert images.shape == (len(labels), 3, 8, 8) and targets.tolist() == labels
    assert torch.equal(keys, keys.sort().values)  # order keys follow the written order
    # colour survives decoding: the mean colour of each image is nearest its class colour
    means = images.mean(dim=(2, 3)) * 255
    nearest = torch.cdist(means, torch.tensor(COLORS, dtype=torch.float32)).argmin(1)
    assert nearest.tolist() == labels
    # ranks read disjoint shards; sorted by their order keys they give back the whole split
    parts = [read_all(ds, rank=r, world=2) for r in range(2)]
    assert len(parts[0][1]) and len(parts[1][1])
    keys = torch.cat([parts[0][2], parts[1][2]])
    assert torch.cat([parts[0][1], parts[1][1]])[keys.argsort()].tolist() == labels


def test_dataset_root_templates_and_names(tmp_path):
    write_classification(tmp_path / "wds_vtab-toy", n_test=6, n_train=6)
    assert resolve_wds_root("wds/vtab/toy", str(tmp_path / "wds_{dataset_cleaned}")) == tmp_path / "wds_vtab-toy"
    assert resolve_wds_root("vtab/toy", str(tmp_path / "x" / "{dataset}")) == tmp_path / "x" / "vtab" / "toy"
    assert resolve_wds_root("wds/vtab/toy", str(tmp_path / "plain")) == tmp_path / "plain"
    ds = open_dataset("wds/vtab/toy", str(tmp_path / "wds_{dataset_cleaned}"))
    assert ds.name == "vtab/toy" == dataset_name("wds/vtab/toy") == dataset_name("vtab/toy")
    assert parse_spec("hf:/a/b") == ("hf", "/a/b") and parse_spec("folder:x") == ("folder", "x")
    with pytest.raises(ValueError, match="placeholder"):
        resolve_wds_root("wds/toy", str(tmp_path / "{name}"))


def test_wds_multilabel_and_retrieval(tmp_path):
    targets = write_multilabel(tmp_path / "ml")
    ds = open_wds_benchmark("wds/ml", str(tmp_path / "ml"))
    assert ds.kind == "multilabel"
    _, got, _ = read_all(ds)
    assert torch.equal(got, torch.from_numpy(targets))
    caps = write_retrieval(tmp_path / "ret")
    ds = open_wds_benchmark("wds/ret", str(tmp_path / "ret"))
    assert ds.kind == "retrieval" and ds.classnames is None
    assert read_all(ds)[1] == caps


# --------------------------------------------------------------------------- HF and folders


def test_hf_saved_to_disk_and_parquet(tmp_path):
    labels = write_hf(tmp_path / "hfset")
    ds = open_dataset(f"hf:{tmp_path / 'hfset'}")
    assert (ds.kind, ds.classnames, ds.name) == ("classification", CLASSNAMES, "hfset")
    assert ds.has_split("train") and ds.has_split("test")
    images, got, keys = read_all(ds)
    assert got.tolist() == labels and images.shape[1:] == (3, 8, 8) and keys.tolist() == list(range(len(labels)))
    halves = [read_all(ds, rank=r, world=2)[1].tolist() for r in range(2)]
    assert halves[0] + halves[1] == labels
    # the same data as plain parquet files named by split
    import datasets

    pq = tmp_path / "pq"
    pq.mkdir()
    dd = datasets.load_from_disk(str(tmp_path / "hfset"))
    for split in ("train", "test"):
        dd[split].to_parquet(str(pq / f"{split}-00000-of-00001.parquet"))
    ds2 = open_hf_benchmark(str(pq))
    assert ds2.classnames == CLASSNAMES and read_all(ds2)[1].tolist() == labels


def test_image_folder(tmp_path):
    labels = write_folder(tmp_path / "imgs")
    ds = open_dataset("folder:imgs", str(tmp_path))  # relative to a plain --dataset_root
    assert ds.classnames == sorted(CLASSNAMES[:4]) and ds.has_split("train")
    assert read_all(ds)[1].tolist() == labels
    flat = open_image_folder(str(tmp_path / "imgs" / "test"))  # class folders directly: one test split
    assert read_all(flat)[1].tolist() == labels and not flat.has_split("train")


# --------------------------------------------------------------------------- bad input


def test_missing_nshards_is_a_clear_error(tmp_path):
    root = tmp_path / "toy"
    write_classification(root, n_test=6, n_train=6)
    (root / "test" / "nshards.txt").unlink()
    ds = open_wds_benchmark("wds/toy", str(root))
    with pytest.raises(FileNotFoundError, match="nshards.txt"):
        ds.torch_dataset("test", to_tensor)


def test_fewer_classnames_than_labels(tmp_path):
    root = tmp_path / "toy"
    write_classification(root, n_test=12, n_train=6, classnames=CLASSNAMES[:3])
    ds = open_wds_benchmark("wds/toy", str(root))
    with pytest.raises(ValueError, match=r"label [3-5] but classnames.txt lists only 3"):
        read_all(ds)


def test_corrupt_image_names_shard_and_key(tmp_path):
    root = tmp_path / "toy"
    write_classification(root, n_test=6, n_train=6)
    write_split(root, "test", [[("webp", b"not an image"), ("cls", b"0")]])
    ds = open_wds_benchmark("wds/toy", str(root))
    with pytest.raises(ValueError, match=r"0\.tar: sample s0000000: corrupt image"):
        read_all(ds)


def test_unknown_or_missing_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'tfds:cifar10'"):
        open_dataset("tfds:cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope"):
        open_dataset("wds/nope", str(tmp_path / "{dataset}"))
    with pytest.raises(ValueError, match="--dataset_root is required"):
        open_dataset("wds/toy", None)
    with pytest.raises(FileNotFoundError):
        open_dataset(f"hf:{tmp_path / 'none'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        open_dataset(f"folder:{tmp_path / 'empty'}")


def test_every_reader_is_a_benchmark_reader(tmp_path):
    """wds/, hf: and folder: datasets open as the one BenchmarkReader interface."""
    from bcos_clip.data.readers.protocol import KINDS, BenchmarkReader
    from bcos_clip.data.readers.registry import open_dataset
    from tests._train_data import write_wds_classification

    wds_root = write_wds_classification(tmp_path / "wds_toy", n=4)
    folder = tmp_path / "folder" / "test"
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / c / "0.png")
    write_hf(tmp_path / "hfset")
    for reader in (open_dataset("wds/toy", wds_root), open_dataset(f"folder:{tmp_path / 'folder'}"),
                   open_dataset(f"hf:{tmp_path / 'hfset'}")):
        assert isinstance(reader, BenchmarkReader) and reader.kind in KINDS and reader.classnames
        assert reader.has_split("test") and len(list(reader.torch_dataset("test", lambda im: im))) >= 2
