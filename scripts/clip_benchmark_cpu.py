"""Run CLIP_benchmark's own ``clip_benchmark eval`` on a CPU, patched as little as needed.

Run it with the Python of an environment where ``clip_benchmark==1.6.2`` is installed (its own venv);
``bcos_clip`` must be importable there only to load a bcos_clip checkpoint::

    CB=/tmp/cb_venv/bin/python
    PYTHONPATH=. $CB scripts/clip_benchmark_cpu.py --register teacher.json=/path/teacher.json -- \\
        eval --dataset wds/x --pretrained_model teacher.json,teacher.pt student, --dataset_root 'root/{dataset}'

What is patched, and nothing else:

1. Linear probe (theirs asserts CUDA): a copy of ``clip_benchmark/metrics/linear_probe.py`` is imported
   with exactly two edits, checked by count: the line ``assert device == 'cuda'`` is removed, and the
   four ``.cuda()`` calls become ``.to(device)`` (``device`` is "cpu" on a machine without CUDA).
   ``DataParallel`` over no GPUs runs the module itself; the rest of their code runs as it is.
2. Model registry: ``--register NAME=CONFIG.json`` registers an open_clip model config under NAME (a
   bcos_clip demo teacher file ``{"model_cfg": ...}`` or a plain open_clip config), through
   ``open_clip.add_model_config``, so that ``--model NAME --pretrained WEIGHTS`` loads it with open_clip.
3. Model loading: a ``--model`` that is a bcos_clip checkpoint folder loads with ``bcos_clip.load`` (the
   B-cos model, its [0, 1] preprocess and its tokenizer); every other model goes through CLIP_benchmark's
   own open_clip loader, unchanged.

Nothing touches the random numbers: their probe draws its training-set permutation from the global
RNG where loading the model and iterating the feature loaders left it, and bcos-clip's
``--probe-protocol clip_benchmark`` replays that sequence (``bcos_clip/evaluation/probe_rng.py``).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

PROBE_EDITS = (("    assert device == 'cuda' # need to use cuda for this else too slow\n", "", 1),
               (".cuda()", ".to(device)", 4))


def patched_linear_probe(workdir: Path):
    """CLIP_benchmark's linear_probe module with :data:`PROBE_EDITS` applied, counts checked."""
    from clip_benchmark.metrics import linear_probe

    source = inspect.getsource(linear_probe)
    for old, new, count in PROBE_EDITS:
        found = source.count(old)
        if found != count:
            raise SystemExit(f"clip_benchmark_cpu: expected {count}x {old.strip()!r} in {linear_probe.__file__}, "
                             f"found {found}: not clip_benchmark 1.6.2?")
        source = source.replace(old, new)
    path = workdir / "linear_probe_cpu.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("clip_benchmark.metrics.linear_probe_cpu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def register_config(name: str, config: str, workdir: Path) -> None:
    """open_clip.add_model_config of ``config`` under ``name`` (open_clip names a config by its file stem)."""
    import open_clip

    data = json.loads(Path(config).read_text())
    model_cfg = data.get("model_cfg", data)
    model_cfg = {k: v for k, v in model_cfg.items() if k != "preprocess_cfg"}
    path = workdir / "configs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(path)
    if open_clip.get_model_config(name) is None:
        raise SystemExit(f"clip_benchmark_cpu: open_clip did not register {name!r} from {config}")


def bcos_aware_loader(original):
    """CLIP_benchmark's open_clip loader, with bcos_clip checkpoint folders loaded by bcos_clip."""

    def load(model_name: str, pretrained: str, cache_dir: str = None, device="cpu"):
        if (Path(model_name) / "config.json").is_file() and (Path(model_name) / "model.safetensors").is_file():
            import bcos_clip

            model = bcos_clip.load(model_name).to(device)
            return model, model.preprocess, model.tokenizer
        return original(model_name=model_name, pretrained=pretrained, cache_dir=cache_dir, device=device)

    return load


USAGE = "usage: clip_benchmark_cpu.py [--register NAME=CONFIG.json ...] -- eval ..."


def split_argv(argv: List[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(registrations, clip_benchmark arguments) of the command line."""
    if "--" not in argv:
        raise SystemExit(USAGE)
    own, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    regs = []
    while own:
        if own[0] == "--register" and len(own) >= 2 and "=" in own[1]:
            regs.append(tuple(own[1].split("=", 1)))
            own = own[2:]
        else:
            raise SystemExit(f"clip_benchmark_cpu: unexpected {own[0]!r}; {USAGE}")
    return regs, rest


def main(argv: List[str]) -> int:
    regs, rest = split_argv(argv)
    import clip_benchmark.cli as cli
    import clip_benchmark.models as models

    workdir = Path(tempfile.mkdtemp(prefix="clip_benchmark_cpu_"))
    for name, config in regs:
        register_config(name, config, workdir)
    cli.linear_probe = patched_linear_probe(workdir)
    models.TYPE2FUNC["open_clip"] = bcos_aware_loader(models.TYPE2FUNC["open_clip"])
    print("clip_benchmark_cpu: patched linear_probe (assert removed, .cuda() -> .to(device)"
          f"); registered {[n for n, _ in regs]}; bcos_clip checkpoints load through bcos_clip", file=sys.stderr)
    sys.argv = ["clip_benchmark"] + rest
    cli.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
