"""Tokenizers of transformers CLIP folders: open_clip's when it is the same BPE, else the folder's own.

The folder's own tokenizer is used through open_clip's HFTokenizer (`text_cfg.hf_tokenizer_name` = the
folder). `bundle_tokenizer` copies such a local tokenizer into a checkpoint directory and
`resolve_bundled_tokenizer` points the config back at that copy on load, so a checkpoint never depends
on the folder it came from.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from bcos_clip.runtime.contained import OutsideFolderError, folder_inside, is_inside

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json")
BUNDLED_DIR = "tokenizer"
CLIP_VOCAB_SIZE = 49408
CLIP_EOS_IDS = (2, 49407)  # legacy argmax pooling, or the real <|endoftext|> id
# open_clip's special-token spellings -> the transformers CLIP vocabulary's
SPECIAL_NAMES = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def _folder_bpe(directory: Path) -> Optional[Tuple[Dict[str, int], List[str]]]:
    """(vocab, merges as 'a b' strings) of the folder's tokenizer files, or None without any."""
    try:
        if (directory / "tokenizer.json").is_file():
            model = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")).get("model", {})
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            return dict(model.get("vocab", {})), merges
        if (directory / "vocab.json").is_file():
            vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
            merges_path = directory / "merges.txt"
            lines = merges_path.read_text(encoding="utf-8").splitlines() if merges_path.is_file() else []
            return vocab, [ln for ln in lines if ln and not ln.startswith("#version")]
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the tokenizer files in {directory}: {exc}") from exc
    return None


def _open_clip_bpe() -> Tuple[Dict[str, int], List[str]]:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    vocab = {SPECIAL_NAMES.get(k, k): v for k, v in tok.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])]
    return vocab, merges


def is_open_clip_bpe(vocab: Mapping[str, int], merges: List[str]) -> bool:
    """True when a vocabulary + merge list is exactly open_clip's CLIP BPE."""
    ref_vocab, ref_merges = _open_clip_bpe()
    return dict(vocab) == ref_vocab and list(merges) == ref_merges


def tokenizer_settings(directory: PathLike, text_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """text_cfg entries for the folder's tokenizer: {} (open_clip's SimpleTokenizer) or hf_tokenizer_name."""
    d = Path(directory)
    bpe = _folder_bpe(d)
    standard = int(text_cfg.get("vocab_size", 0)) == CLIP_VOCAB_SIZE and \
        int(text_cfg.get("eos_id", CLIP_EOS_IDS[1])) in CLIP_EOS_IDS
    if bpe is None:
        if not standard:
            raise ValueError(f"{d} has no tokenizer files (tokenizer.json or vocab.json + merges.txt) and its "
                             f"vocabulary ({text_cfg.get('vocab_size')}) is not CLIP's: save the tokenizer "
                             "into the folder (tokenizer.save_pretrained)")
        log.info("%s: no tokenizer files; using open_clip's CLIP BPE tokenizer (vocabulary 49408)", d)
        return {}
    if standard and is_open_clip_bpe(*bpe):
        log.info("%s: the tokenizer is open_clip's CLIP BPE; using open_clip's SimpleTokenizer", d)
        return {}
    log.info("%s: using the folder's own tokenizer (transformers)", d)
    return {"hf_tokenizer_name": str(d.resolve())}


def bundle_tokenizer(model_cfg: Dict[str, Any], directory: PathLike,
                     tokenizer: Any = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """Copy the HF tokenizer named in `model_cfg` into `directory/tokenizer`: the files of a local folder,
    or (a hub name) the files `tokenizer` (open_clip's HFTokenizer of that name) saves.

    Returns (model config to save, with hf_tokenizer_name relative to the checkpoint; the folder name)
    or (model_cfg, None) when the config names no HF tokenizer.
    """
    name = model_cfg.get("text_cfg", {}).get("hf_tokenizer_name")
    if not name:
        return model_cfg, None
    src, dest = Path(name), Path(directory) / BUNDLED_DIR
    if src.is_dir():
        files = [f for f in TOKENIZER_FILES if (src / f).is_file()]
        if not files:
            raise FileNotFoundError(f"tokenizer folder {src} holds none of {', '.join(TOKENIZER_FILES)}")
        if src.resolve() != dest.resolve():
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(src / f, dest / f)
    elif hasattr(getattr(tokenizer, "tokenizer", None), "save_pretrained"):
        tokenizer.tokenizer.save_pretrained(str(dest))  # a hub tokenizer: the checkpoint carries its files
    else:
        log.warning("tokenizer %r is a hub name and was not bundled: loading the checkpoint needs "
                    "bcos_clip.load(..., allow_hub=True)", name)
        return model_cfg, None
    cfg = copy.deepcopy(model_cfg)
    cfg["text_cfg"]["hf_tokenizer_name"] = BUNDLED_DIR
    return cfg, BUNDLED_DIR


def resolve_bundled_tokenizer(model_cfg: Dict[str, Any], directory: PathLike,
                              tokenizer_info: Mapping[str, Any], allow_hub: bool = False) -> Dict[str, Any]:
    """Point a saved config's hf_tokenizer_name at the tokenizer copy inside checkpoint `directory`.

    The files must lie inside the checkpoint (no ``..``, absolute path or link leading out of it); a
    tokenizer named any other way (a hub name, a folder elsewhere) is used only with ``allow_hub=True``.
    Raises OutsideFolderError (one line) otherwise.
    """
    files = tokenizer_info.get("files")
    if files:
        if not is_inside(directory, str(files)):
            raise OutsideFolderError(f"checkpoint {directory}: config.json puts its tokenizer files at {files!r}, "
                                     "outside the checkpoint; only files inside it are read")
        if not (Path(directory) / str(files)).is_dir():
            raise FileNotFoundError(f"checkpoint {directory}: its tokenizer folder {Path(directory) / str(files)} "
                                    "is missing")
        cfg = copy.deepcopy(model_cfg)
        cfg["text_cfg"]["hf_tokenizer_name"] = str(folder_inside(directory, str(files), "checkpoint"))
        return cfg
    name = model_cfg.get("text_cfg", {}).get("hf_tokenizer_name")
    if name and not allow_hub:
        raise OutsideFolderError(f"checkpoint {directory}: config.json names the tokenizer {name!r} (a hub name or a "
                                 "folder outside the checkpoint); only tokenizer files inside the checkpoint are "
                                 "read unless you ask: bcos_clip.load(..., allow_hub=True)")
    return model_cfg
