"""The shapes world: training scenes with captions, and the demo's evaluation tasks.

Training captions name colour and shape, and the count and position of objects, because the
structured evaluation tasks ask for them (a CLIP never trained on counts stays at chance on counting):
``"a green star in the top right"``, ``"two red circles on the left"``,
``"three objects: two blue squares and a yellow star"``. About half the training scenes hold one object
and half hold 2-4; about one in eight is drawn as an outline sketch. Optionally a share of them are 2 x 2
collages of small one-object scenes (``collage.py``).

The evaluation tasks mirror CLIP_benchmark's three groups (``DEMO_TASKS``): ``shapes_natural``
(one filled object, class = colour + shape, 16 classes), ``shapes_sketch`` (the same 16 classes as
outline sketches under heavy noise: a shifted domain), ``shapes_count`` (1-4 objects of random classes)
and ``shapes_position`` (which quadrant one object is in). Scene primitives are in ``scene.py``;
writing to disk is in ``writer.py``.

Example::

    rng = sample_rng(0, "train", 7)
    scene = sample_train_scene(rng, 64)
    image, caption = render_scene(scene), caption_scene(scene, rng)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from bcos_clip.data.shapes.collage import GRID, Collage, render_collage
from bcos_clip.data.shapes.scene import (
    COLORS,
    COUNT_WORDS,
    NATURAL_CLASSES,
    QUADRANTS,
    SHAPES,
    Scene,
    ShapeObject,
    place_many,
    place_single,
    random_label,
    render_scene,
    sample_background,
    sample_rng,
)

# The demo's evaluation tasks (CLIP_benchmark ``wds/<name>`` folders) and their CLIP_benchmark group.
DEMO_TASKS: Dict[str, str] = {
    "shapes_natural": "natural",
    "shapes_sketch": "specialized",
    "shapes_count": "structured",
    "shapes_position": "structured",
}
RETRIEVAL_TASK = "shapes_retrieval"

P_SINGLE = 0.5  # share of one-object training scenes
P_OUTLINE = 0.12  # share of training scenes drawn as outline sketches
P_CENTER = 0.15  # share of one-object training scenes with the object in the centre
P_SAME = 0.4  # share of multi-object training scenes whose objects all share one class

# --------------------------------------------------------------------------- training scenes


def sample_train_scene(rng: np.random.Generator, size: int = 64) -> Scene:
    """A training scene: one object (in a quadrant or the centre) or 2-4 objects, sometimes sketched."""
    outline = bool(rng.random() < P_OUTLINE)
    background = sample_background(rng)
    if rng.random() < P_SINGLE:
        where = "center" if rng.random() < P_CENTER else QUADRANTS[int(rng.integers(len(QUADRANTS)))]
        objects: Tuple[ShapeObject, ...] = (place_single(rng, size, random_label(rng), where,
                                                         outline=outline),)
    else:
        n = int(rng.integers(2, 5))
        if rng.random() < P_SAME:
            labels = [random_label(rng)] * n
        else:
            labels = [random_label(rng) for _ in range(n)]
        objects = place_many(rng, size, labels, outline=outline)
    return Scene(size=size, background=background, objects=objects)


# --------------------------------------------------------------------------- captions


def _side(values: Sequence[float], half: float, tol: float) -> int:
    """-1 if all values are clearly below ``half``, +1 if all clearly above, else 0."""
    if all(v < half - tol for v in values):
        return -1
    if all(v > half + tol for v in values):
        return 1
    return 0


def position_phrase(objects: Sequence[ShapeObject], size: int) -> Optional[str]:
    """Where a group of objects is: "in the top left", "on the right", "at the top", "in the center"
    (a single object near the middle), or None when the group straddles the image."""
    half = size / 2.0
    tol = 0.03 * size
    h = _side([o.cx for o in objects], half, tol)
    v = _side([o.cy for o in objects], half, tol)
    if len(objects) == 1 and abs(objects[0].cx - half) < 0.09 * size \
            and abs(objects[0].cy - half) < 0.09 * size:
        return "in the center"
    if h and v:
        return f"in the {'top' if v < 0 else 'bottom'} {'left' if h < 0 else 'right'}"
    if h:
        return "on the left" if h < 0 else "on the right"
    if v:
        return "at the top" if v < 0 else "at the bottom"
    return None


def _groups(objects: Sequence[ShapeObject]) -> List[List[ShapeObject]]:
    """Objects grouped by class, largest group first (ties: order of first appearance)."""
    groups: Dict[str, List[ShapeObject]] = {}
    for o in objects:
        groups.setdefault(o.label, []).append(o)
    return sorted(groups.values(), key=lambda g: -len(g))


def _group_phrase(group: Sequence[ShapeObject], size: int, with_position: bool) -> str:
    o = group[0]
    n = len(group)
    text = f"a {o.label}" if n == 1 else f"{COUNT_WORDS[n - 1]} {o.color} {o.shape}s"
    where = position_phrase(group, size) if with_position else None
    return f"{text} {where}" if where else text


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _choose(rng: np.random.Generator, forms: Sequence[Tuple[float, str]]) -> str:
    weights = np.asarray([w for w, _ in forms], dtype=np.float64)
    return forms[int(rng.choice(len(forms), p=weights / weights.sum()))][1]


def _single_caption(scene: Scene, rng: np.random.Generator) -> str:
    o = scene.objects[0]
    where = position_phrase(scene.objects, scene.size) or ""
    lead = "a sketch of" if o.outline else "a photo of"
    form = _choose(rng, [(0.35, "{a} {where}"), (0.15, "{lead} {a} {where}"), (0.15, "{a}"),
                         (0.1, "{lead} {a}"), (0.1, "one {cs} {where}"),
                         (0.15, "one object: {a} {where}")])
    a = f"a {o.label}" if not o.outline or form.startswith("{lead}") else f"a {o.label} sketch"
    return form.format(a=a, cs=o.label, where=where, lead=lead).strip()


def _multi_caption(scene: Scene, rng: np.random.Generator) -> str:
    groups = _groups(scene.objects)
    listed = _join([_group_phrase(g, scene.size, len(groups) <= 2) for g in groups])
    n_word = COUNT_WORDS[len(scene.objects) - 1]
    lead = "a sketch of" if scene.objects[0].outline else "a photo of"
    form = _choose(rng, [(0.35, "{n} objects: {listed}"), (0.35, "{listed}"),
                         (0.15, "{lead} {listed}"), (0.15, "{lead} {n} objects")])
    return form.format(n=n_word, listed=listed, lead=lead)


def caption_collage(collage: Collage, rng: np.random.Generator) -> str:
    """Every cell's object in reading order; with probability 1/3 each with its quadrant."""
    names = [f"a {c.objects[0].label}{' sketch' if c.objects[0].outline else ''}" for c in collage.cells]
    form = int(rng.integers(3))
    if form == 0:
        return _join([f"{n} in the {q}" for n, q in zip(names, QUADRANTS)])
    return ("a collage of " if form == 1 else "") + _join(names)


def caption_scene(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming colours, shapes, the count and (where clear) the positions of the objects."""
    if len(scene.objects) == 1:
        return _single_caption(scene, rng)
    return _multi_caption(scene, rng)


# --------------------------------------------------------------------------- evaluation tasks


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: class names, templates (``{c}``) and a sampler of class ``k``'s scenes."""

    name: str
    group: str
    classnames: Tuple[str, ...]
    templates: Tuple[str, ...]
    sample: Callable[[np.random.Generator, int, int], Scene]


def _split_natural(k: int) -> Tuple[str, str]:
    color, shape = NATURAL_CLASSES[k].split(" ")
    return color, shape


def _where(rng: np.random.Generator) -> str:
    return "center" if rng.random() < P_CENTER else QUADRANTS[int(rng.integers(len(QUADRANTS)))]


def _natural(rng: np.random.Generator, size: int, k: int) -> Scene:
    obj = place_single(rng, size, _split_natural(k), _where(rng))
    return Scene(size, sample_background(rng), (obj,))


def _sketch(rng: np.random.Generator, size: int, k: int) -> Scene:
    obj = place_single(rng, size, _split_natural(k), _where(rng), outline=True)
    return Scene(size, sample_background(rng, heavy_noise=True), (obj,))


def _count(rng: np.random.Generator, size: int, k: int) -> Scene:
    objects = place_many(rng, size, [random_label(rng) for _ in range(k + 1)])
    return Scene(size, sample_background(rng), objects)


def _position(rng: np.random.Generator, size: int, k: int) -> Scene:
    obj = place_single(rng, size, random_label(rng), QUADRANTS[k])
    return Scene(size, sample_background(rng), (obj,))


TASK_BUILDERS: Dict[str, TaskSpec] = {
    spec.name: spec for spec in (
        TaskSpec("shapes_natural", DEMO_TASKS["shapes_natural"], NATURAL_CLASSES,
                 ("a photo of a {c}.", "a {c}.", "a picture of a {c}.", "a photo of one {c}."),
                 _natural),
        TaskSpec("shapes_sketch", DEMO_TASKS["shapes_sketch"], NATURAL_CLASSES,
                 ("a sketch of a {c}.", "a {c} sketch.", "a noisy sketch of a {c}.", "a drawing of a {c}."),
                 _sketch),
        TaskSpec("shapes_count", DEMO_TASKS["shapes_count"],
                 tuple(f"{w} object{'s' if i else ''}" for i, w in enumerate(COUNT_WORDS)),
                 ("{c}.", "a photo of {c}.", "a picture of {c}.", "{c} on a background."),
                 _count),
        TaskSpec("shapes_position", DEMO_TASKS["shapes_position"], QUADRANTS,
                 ("an object in the {c}.", "a shape in the {c}.", "a photo of an object in the {c}.",
                  "something in the {c}."),
                 _position),
    )
}


def _task(name: str) -> TaskSpec:
    if name not in TASK_BUILDERS:
        raise KeyError(f"unknown shapes task {name!r} (expected one of {sorted(TASK_BUILDERS)})")
    return TASK_BUILDERS[name]


def task_classnames(name: str) -> Tuple[str, ...]:
    """Class names of task ``name`` (line i of its ``classnames.txt`` is class i)."""
    return _task(name).classnames


def task_templates(name: str) -> Tuple[str, ...]:
    """Zero-shot templates of task ``name`` (CLIP_benchmark style, with ``{c}``)."""
    return _task(name).templates


def sample_task_scene(name: str, seed: int, split: str, index: int, size: int = 64) -> Tuple[Scene, int]:
    """Sample ``index`` of ``split`` of task ``name``: (scene, class index); classes cycle with index."""
    spec = _task(name)
    k = index % len(spec.classnames)
    rng = sample_rng(seed, f"{name}/{split}", index)
    return spec.sample(rng, size, k), k


def sample_collage(rng: np.random.Generator, size: int, outline: bool = False) -> Collage:
    """GRID * GRID one-object scenes (random class, quadrant or centre as ``_where``, own background)."""
    cells = []
    for _ in range(GRID * GRID):  # draw order: place, label, object, background
        where = _where(rng)
        obj = place_single(rng, size, random_label(rng), where, outline=outline)
        cells.append(Scene(size, sample_background(rng), (obj,)))
    return Collage(size=size, cells=tuple(cells))


def train_sample(seed: int, index: int, size: int = 64, stream: str = "train",
                 collage_share: float = 0.0) -> Tuple[Union[Scene, Collage], str]:
    """Training sample ``index``: (scene or collage, caption); a pure function of its arguments.

    ``collage_share``: the chance that the sample is a 2 x 2 collage (``collage.py``); drawn from a stream
    of its own, so every other sample is the scene it is with a share of 0."""
    if collage_share > 0:
        rng = sample_rng(seed, f"{stream}/collage", index)
        if rng.random() < collage_share:
            collage = sample_collage(rng, size, outline=bool(rng.random() < P_OUTLINE))
            return collage, caption_collage(collage, rng)
    rng = sample_rng(seed, stream, index)
    scene = sample_train_scene(rng, size)
    return scene, caption_scene(scene, rng)


def render_sample(sample: Union[Scene, Collage]):
    """A training sample (scene or collage) as an RGB PIL image."""
    return render_collage(sample) if isinstance(sample, Collage) else render_scene(sample)


__all__ = [
    "COLORS", "SHAPES", "QUADRANTS", "COUNT_WORDS", "NATURAL_CLASSES", "DEMO_TASKS", "RETRIEVAL_TASK",
    "TASK_BUILDERS", "TaskSpec", "Scene", "ShapeObject", "sample_rng", "render_scene",
    "sample_train_scene", "caption_scene", "position_phrase", "task_classnames", "task_templates",
    "sample_task_scene", "train_sample", "render_sample", "Collage", "sample_collage", "caption_collage",
]
