"""The demo's settings (``configs/demo.yaml``) as one frozen dataclass tree, read once per run.

``load_settings(cfg)`` reads the shipped ``configs/demo.yaml`` (and ``cfg.settings``, a user's file, merged
over it key by key, so it needs only the keys it changes), deep-merges each file's ``quick:`` section
(for ``--quick``) and ``arch: {<arch>: ...}`` section over its top level, and returns a
:class:`DemoSettings`. Every stage then reads attributes (``settings.pointing.n_grids``), never dict keys.

Defaults live in the YAML only: every field below is required, so a key missing from the YAML is an
error naming it, and no stage has a fallback of its own. (The YAML is what a user reads and edits,
what ``--settings`` files copy and what recipe sweeps tune; a second set of defaults in code could
silently disagree with it.) A ``null`` value means "the library's default" where a field is Optional
(e.g. ``world.n_train``: ``build_world``'s 20,000, quick 3,000). ``distill`` holds
``bcos_clip.train.TrainConfig`` options, checked by building one; unset options keep TrainConfig's
defaults, the training library's (as ``bcos-clip train`` has them).

An unknown key is one line naming the file and the key, with the nearest known key::

    configs/demo.yaml: unknown key 'n_grid' in section 'pointing' (did you mean 'n_grids'?)
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bcos_clip.apps.demo.config import ARCHES, SETTINGS_NAME, settings_path
from bcos_clip.models.loading import deep_merge
from bcos_clip.runtime.yaml_io import load_yaml
from bcos_clip.train import TrainConfig
from bcos_clip.train.config import FIELDS as TRAIN_FIELDS

# TrainConfig fields the demo sets itself (a YAML value for them would be ignored, so it is refused):
# where the student comes from and goes, and one checkpoint at the end (``checkpoints/latest``).
DEMO_OWNED: Dict[str, Any] = {"model": None, "pretrained": None, "train_data": None, "output": None,
                              "seed": None, "device": None, "resume": None, "save_every": 10 ** 9}


@dataclass(frozen=True)
class WorldSettings:
    """``bcos_clip.data.shapes.writer.build_world`` arguments (None: its default, quick or full)."""

    n_train: Optional[int]
    n_eval_per_class: Optional[int]
    image_size: int
    collage_share: float


@dataclass(frozen=True)
class TeacherSettings:
    """``pretrain_teacher`` arguments (None: its per-arch default, ``ARCH_DEFAULTS`` / ``QUICK_STEPS``);
    ``vision``: keys of the open_clip ``vision_cfg`` to override."""

    steps: Optional[int]
    batch_size: int
    lr: Optional[float]
    warmup: Optional[int]
    weight_decay: Optional[float]
    vision: Optional[Mapping[str, Any]]


@dataclass(frozen=True)
class CompareSettings:
    """``--compare-losses``: one more student per loss (None steps: the main student's)."""

    losses: Tuple[str, ...]
    steps: Optional[int]


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation: a suite name or file, the feature batch size, linear-probe epochs."""

    suite: str
    batch_size: int
    probe_epochs: int


@dataclass(frozen=True)
class ExplainSettings:
    """Scenes (objects ``"colour shape@where"``) x prompts explained by the student; ``cell``: panel pixels."""

    scenes: Tuple[Tuple[str, ...], ...]
    prompts: Tuple[str, ...]
    templates: Optional[Tuple[str, ...]]
    cell: int


@dataclass(frozen=True)
class PointingSettings:
    """The grid pointing game; ``target_margin``: the student's lead over the best baseline the report's
    goal asks for (a share: 0.05 = 5 points; 0 = any lead)."""

    dataset: str
    grid: int
    n_grids: int
    per_class: int
    threshold: float
    baselines: Tuple[str, ...]
    n_examples: int
    target_margin: float

    def game(self) -> Dict[str, Any]:
        """The settings that decide the game's result (its stage arguments): all but the verdict."""
        return {k: v for k, v in as_dict(self).items() if k != "target_margin"}


@dataclass(frozen=True)
class DemoSettings:
    """All settings of one demo run (quick and arch sections applied). ``distill``: TrainConfig options."""

    world: WorldSettings
    teacher: TeacherSettings
    distill: Mapping[str, Any]
    compare: CompareSettings
    eval: EvalSettings
    explain: ExplainSettings
    pointing: PointingSettings

    def train_config(self, **owned: Any) -> TrainConfig:
        """The student's TrainConfig: the ``distill`` options plus what the demo sets (``DEMO_OWNED``
        keys: model, pretrained, train_data, output, seed, device; overrides such as loss / steps)."""
        values = {**{k: v for k, v in DEMO_OWNED.items() if v is not None}, **self.distill}
        return TrainConfig(**{**values, **owned})

    @property
    def main_loss(self) -> str:
        """The loss of the main student."""
        return self.train_config(model="teacher", train_data="world", output="student").loss


SECTIONS: Dict[str, type] = {f.name: f.type for f in dataclasses.fields(DemoSettings)}
SECTION_CLASSES: Dict[str, Any] = {"world": WorldSettings, "teacher": TeacherSettings, "compare": CompareSettings,
                                   "eval": EvalSettings, "explain": ExplainSettings, "pointing": PointingSettings}


def as_dict(obj: Any) -> Any:
    """Settings as plain JSON-able data (dataclasses -> dicts, tuples -> lists), for summary.json and
    stage arguments."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


def _hint(key: str, known: List[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _known_keys(section: str) -> List[str]:
    if section == "distill":
        return [k for k in TRAIN_FIELDS if k not in DEMO_OWNED]
    return [f.name for f in dataclasses.fields(SECTION_CLASSES[section])]


def _check_section(name: str, section: Any, where: str) -> None:
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: section {name!r} must be a mapping of keys, got {section!r}")
    known = _known_keys(name)
    for key in section:
        norm = str(key).replace("-", "_") if name == "distill" else str(key)
        if name == "distill" and norm in DEMO_OWNED:
            raise KeyError(f"{where}: distill key {key!r} is set by the demo itself; remove it")
        if norm not in known:
            raise KeyError(f"{where}: unknown key {key!r} in section {name!r}{_hint(norm, known)}")


def _check_sections(data: Mapping[str, Any], where: str, extra: Tuple[str, ...] = ()) -> None:
    for name, section in data.items():
        if name in extra:
            continue
        if name not in SECTIONS:
            raise KeyError(f"{where}: unknown section {name!r}{_hint(str(name), list(SECTIONS) + list(extra))}")
        _check_section(name, section, where)


def _check_file(data: Mapping[str, Any], where: str) -> None:
    """Every section and key of one settings file is known (its ``quick:`` and ``arch:`` parts too)."""
    _check_sections(data, where, extra=("quick", "arch"))
    _check_sections(data.get("quick") or {}, f"{where}: quick")
    arch = data.get("arch") or {}
    if not isinstance(arch, Mapping):
        raise ValueError(f"{where}: 'arch' must map an arch ({', '.join(ARCHES)}) to sections, got {arch!r}")
    for name, sections in arch.items():
        if name not in ARCHES:
            raise KeyError(f"{where}: unknown arch {name!r} under 'arch'{_hint(str(name), list(ARCHES))}")
        _check_sections(sections or {}, f"{where}: arch.{name}")


def _drop_empty(data: Dict[str, Any]) -> Dict[str, Any]:
    """Sections written without keys (``world:``) change nothing: drop them before merging."""
    return {k: (_drop_empty(v) if k in ("quick", "arch") and isinstance(v, dict) else v)
            for k, v in data.items() if v is not None}


def read_settings_file(path: Path) -> Dict[str, Any]:
    """One settings YAML as a checked dict (unknown sections and keys raise, naming the file)."""
    data = load_yaml(Path(path).read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    _check_file(data, str(path))
    return _drop_empty(data)


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _convert(value: Any, kind: str, where: str) -> Any:
    """``value`` checked against the field type ``kind`` (its annotation text); lists become tuples and
    mappings read-only."""
    if kind.startswith("Optional["):
        return None if value is None else _convert(value, kind[len("Optional["):-1], where)
    if value is None:
        raise ValueError(f"{where}: null is not allowed here (expected {kind})")
    if kind in _SCALARS:
        if kind == "float" and type(value) is int:
            value = float(value)
        if type(value) is not _SCALARS[kind]:
            raise ValueError(f"{where}: expected {kind}, got {value!r}")
        return value
    if kind.startswith("Tuple["):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        inner = kind[len("Tuple["):-1].rsplit(", ...", 1)[0]
        return tuple(_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if kind.startswith("Mapping["):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return MappingProxyType(dict(value))
    raise TypeError(f"settings field type {kind!r} is not supported")  # a new field type: extend _convert


def _section(name: str, values: Mapping[str, Any], where: str) -> Any:
    cls = SECTION_CLASSES[name]
    fields = dataclasses.fields(cls)
    absent = [f.name for f in fields if f.name not in values]
    if absent:
        raise KeyError(f"{where}: section {name!r} lacks key(s) {absent} (the shipped configs/{SETTINGS_NAME} "
                       "lists every key)")
    return cls(**{f.name: _convert(values[f.name], str(f.type), f"{where}: {name}.{f.name}") for f in fields})


def build_settings(files: Sequence[Mapping[str, Any]], quick: bool, arch: str, where: str) -> DemoSettings:
    """The :class:`DemoSettings` of checked file data, later files over earlier ones; each file's
    ``arch: {arch}`` and then ``quick`` (when ``quick``) sections over its own top level (so a user file's
    top-level key holds in every mode, over the shipped file's quick value too)."""
    merged: Dict[str, Any] = {}
    for data in files:
        data = dict(data)
        quick_part, arch_part = data.pop("quick", None) or {}, (data.pop("arch", None) or {}).get(arch) or {}
        for part in (data, arch_part, quick_part if quick else {}):  # --quick wins: a smoke run stays short
            merged = deep_merge(merged, part)
    absent = [name for name in SECTIONS if name not in merged]
    if absent:
        raise KeyError(f"{where}: missing section(s) {absent}")
    distill = MappingProxyType({str(k).replace("-", "_"): v for k, v in merged["distill"].items()})
    settings = DemoSettings(distill=distill, **{name: _section(name, merged[name], where)
                                                for name in SECTION_CLASSES})
    if not 0.0 <= settings.world.collage_share <= 1.0:
        raise ValueError(f"{where}: world.collage_share: must be between 0 and 1, got {settings.world.collage_share}")
    try:  # the distill options as TrainConfig checks them (types, ranges, choices)
        settings.train_config(model="teacher", train_data="world", output="student")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: distill: {exc}") from None
    return settings


def load_settings(cfg: Any) -> DemoSettings:
    """The settings of a ``DemoConfig``: the shipped ``configs/demo.yaml``, ``cfg.settings`` (a file) merged
    over it key by key, then its ``quick`` (when ``cfg.quick``) and ``arch`` sections; read once per run."""
    paths = [settings_path()] + ([settings_path(cfg.settings)] if cfg.settings is not None else [])
    return build_settings([read_settings_file(p) for p in paths], bool(cfg.quick), str(cfg.arch), str(paths[-1]))


__all__ = ["CompareSettings", "DEMO_OWNED", "DemoSettings", "EvalSettings", "ExplainSettings", "PointingSettings",
           "SECTIONS", "TeacherSettings", "WorldSettings", "as_dict", "build_settings", "load_settings",
           "read_settings_file"]
