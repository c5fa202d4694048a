"""The one lookup of files shipped with the package: run configs (the top-level ``configs/``, installed as
``bcos_clip.configs``), benchmark suites and the dataset grouping table (``eval/`` as
``bcos_clip.eval_suites``) and the explorer page (``bcos_clip.apps.serve.static``).

Installed (a wheel or an editable install), ``importlib.resources`` finds them. From a source tree that
is on ``sys.path`` but not installed (``PYTHONPATH=.``, as ``benchmarks/gpu_check.sh`` runs), the
top-level folders are read instead.

Example::

    resource_file(CONFIGS, "tiny_rn.json")          # a Path
    resource_text(SERVE_STATIC, "index.html")        # its text
"""
from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Union

CONFIGS = "bcos_clip.configs"
EVAL_SUITES = "bcos_clip.eval_suites"
SERVE_STATIC = "bcos_clip.apps.serve.static"
# the top-level folders that become packages only when installed (pyproject.toml's package-dir)
_SOURCE_DIRS = {CONFIGS: "configs", EVAL_SUITES: "eval"}


def resource_root(package: str) -> Union[Traversable, Path]:
    """The folder of ``package``'s shipped files; FileNotFoundError when neither installed nor in the tree."""
    try:
        return resources.files(package)
    except ModuleNotFoundError:
        if package not in _SOURCE_DIRS:
            raise
        root = Path(__file__).resolve().parents[2] / _SOURCE_DIRS[package]
        if not root.is_dir():
            raise FileNotFoundError(f"{package} is not installed and {root} does not exist") from None
        return root


def resource_file(package: str, name: str) -> Path:
    """The shipped file ``name`` (``a/b.yaml`` style) of ``package`` as a path; FileNotFoundError naming both."""
    root = resource_root(package)
    node = root.joinpath(*name.split("/"))
    if not node.is_file():
        raise FileNotFoundError(f"{name} not found in {package} ({root})")
    return Path(str(node))


def resource_text(package: str, name: str) -> str:
    """The UTF-8 text of a shipped file (see :func:`resource_file`)."""
    return resource_file(package, name).read_text(encoding="utf-8")
