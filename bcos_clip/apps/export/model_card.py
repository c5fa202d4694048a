"""The model card (README.md with hub metadata) of an exported bcos_clip checkpoint.

Built from the checkpoint's config.json (teacher, bcosify spec, preprocessing, import provenance) and,
when present, the run's train_config.json, metrics.jsonl summary and evaluation result records.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bcos_clip.models.loading import hub_model_id

# the headline metric of a result record, in order of preference
MAIN_METRICS = ("acc1", "lp_acc1", "mean_average_precision", "image_retrieval_recall@5", "text_retrieval_recall@5",
                "mean_per_class_recall")
TRAIN_FIELDS = ("train_data", "train_num_samples", "loss", "temperature", "epochs", "steps", "batch_size",
                "optimizer", "lr", "wd", "lr_scheduler", "precision", "seed")
SPEC_NOTES = {
    "b": "alignment pressure B of every converted conv / linear",
    "bias": "biases kept (False: conv, linear, BatchNorm-shift and attention biases removed)",
    "attnpool_positional": "RN attention-pool positional embedding kept (null: same as bias)",
    "qk": "attention q/k projections ('linear': plain, they only set detached attention weights)",
    "input_encoding": "'folded': [x, 1-x] with CLIP's normalisation folded into the first conv; "
                      "'normalize6': the paper's 6-channel Normalize",
    "official_c_proj": "paper compatibility: RN attention-pool c_proj acts as a plain linear",
    "official_v_proj": "paper compatibility: RN attention-pool v_proj is a plain linear",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def main_metric(metrics: Mapping[str, Any]) -> Tuple[str, Any]:
    """(name, value) of a record's headline metric."""
    for name in MAIN_METRICS:
        if metrics.get(name) is not None:
            return name, metrics[name]
    numeric = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
    return numeric[0] if numeric else ("-", None)


def _tower(model_cfg: Dict[str, Any]) -> str:
    v = model_cfg.get("vision_cfg", {})
    if isinstance(v.get("layers"), (list, tuple)):
        return f"ModifiedResNet (blocks {list(v['layers'])}, width {v.get('width')})"
    return f"VisionTransformer ({v.get('layers')} layers, width {v.get('width')}, patch {v.get('patch_size')})"


def _front_matter(config: Dict[str, Any], license: Optional[str]) -> str:
    src = config.get("source", {})
    lines = ["---", "library_name: bcos_clip", "pipeline_tag: zero-shot-image-classification",
             "tags:", "- clip", "- b-cos", "- interpretability", "- explainability"]
    base = hub_model_id(src.get("name"), src.get("pretrained"))
    if base:
        lines.append(f"base_model: {base}")
    if license:
        lines.append(f"license: {license}")
    return "\n".join(lines + ["---", ""])


def _model_section(config: Dict[str, Any]) -> List[str]:
    src, spec, pp = config.get("source", {}), config.get("bcosify", {}), config.get("preprocess_cfg", {})
    size = pp.get("size", "?")
    model_cfg = config.get("model_cfg", {})
    lines = ["## Model", "",
             f"- Base (teacher) CLIP: `{src.get('name')}`"
             + (f", pretrained `{src.get('pretrained')}`" if src.get("pretrained") else "")
             + (f", config overrides `{json.dumps(src.get('overrides'))}`" if src.get("overrides") else ""),
             f"- Image tower: B-cosified {_tower(model_cfg)}, embedding dimension {model_cfg.get('embed_dim')}; "
             "text tower: the teacher's, frozen",
             f"- Input: RGB in [0, 1] at {size} px, encoded as [x, 1-x] (6 channels) inside the model",
             "", "### B-cosify settings", "", "| setting | value | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{json.dumps(v)}` | {SPEC_NOTES.get(k, '')} |" for k, v in spec.items()]
    return lines + [""]


def _training_section(train_cfg: Optional[Dict[str, Any]], metrics: Optional[Dict[str, Any]],
                      official: Optional[Dict[str, Any]]) -> List[str]:
    lines = ["## Training", ""]
    if official:
        lines += [f"Imported from a checkpoint released with the B-cosification paper (Arya et al., NeurIPS "
                  f"2024; shrebox/B-cosification): experiment `{official.get('experiment_name', '?')}`, dataset "
                  f"`{official.get('dataset', '?')}`, epoch {official.get('epoch', '?')}, step "
                  f"{official.get('global_step', '?')}. Text tower: {official.get('text_tower', 'the teacher')}.",
                  ""]
    if train_cfg:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{_fmt(train_cfg.get(k))}` |" for k in TRAIN_FIELDS if train_cfg.get(k) is not None]
        lines.append("")
    if metrics:
        lines += [f"Training log (metrics.jsonl): {metrics['records']} records up to step {metrics['last_step']}; "
                  f"last loss {_fmt(metrics.get('last_loss'))}"
                  + (f"; last in-training zero-shot top-1 {_fmt(metrics['last_zeroshot_top1'])}"
                     if metrics.get("last_zeroshot_top1") is not None else "") + ".", ""]
    if not (official or train_cfg or metrics):
        lines += ["No training record was found beside this checkpoint.", ""]
    return lines


def _results_section(results: Sequence[Dict[str, Any]]) -> List[str]:
    if not results:
        return []
    lines = ["## Evaluation", "", "| dataset | task | metric | value |", "|---|---|---|---|"]
    for rec in sorted(results, key=lambda r: (str(r.get("task")), str(r.get("dataset")))):
        name, value = main_metric(rec.get("metrics", {}))
        lines.append(f"| {rec.get('dataset')} | {rec.get('task')} | {name} | {_fmt(value)} |")
    return lines + [""]


def render_model_card(config: Dict[str, Any], title: str, train_cfg: Optional[Dict[str, Any]] = None,
                      metrics: Optional[Dict[str, Any]] = None, results: Sequence[Dict[str, Any]] = (),
                      license: Optional[str] = None) -> str:
    """The README.md text of an exported checkpoint."""
    official = config.get("extra", {}).get("official")
    parts = [_front_matter(config, license), f"# {title}", "",
             "An inherently interpretable CLIP image tower made with bcos_clip: the teacher's image tower "
             "B-cosified (every layer a dynamic linear map, so each prediction is exactly explained by "
             "contributions of the input pixels) and distilled back to the teacher's embedding space.", ""]
    parts += _model_section(config) + _training_section(train_cfg, metrics, official) + _results_section(results)
    parts += ["## Usage", "", "```python", "import bcos_clip", "",
              "model = bcos_clip.load(\"path/to/this/folder\")  # BcosCLIP", "emb = model.encode_image(images)  "
              "# (N, 3, H, W) in [0, 1]", "expl = bcos_clip.explain(model, images, [\"a photo of a dog\"])",
              "```", "", "## Files", "",
              "- `config.json`: model config, teacher source, bcosify spec, preprocessing, tokenizer, versions",
              "- `model.safetensors`: B-cos image tower + frozen text tower",
              "- `teacher_visual.safetensors` (when present): the teacher's original image tower", ""]
    versions = config.get("versions", {})
    if versions:
        parts.append("Saved with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return "\n".join(parts) + "\n"
