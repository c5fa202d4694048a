"""open_clip's ImageNet class names and prompt templates, for callers that may not import open_clip."""
from __future__ import annotations

from typing import Callable, List, Tuple, Union

Template = Union[str, Callable[[str], str]]
TEMPLATE_SETS = ("openai", "simple")


def imagenet_classnames_and_templates(templates: str = "openai") -> Tuple[List[str], List[Template]]:
    """The 1000 ImageNet class names and open_clip's templates ("openai": 80, "simple": 7)."""
    from open_clip import zero_shot_metadata as meta

    if templates not in TEMPLATE_SETS:
        raise ValueError(f"templates {templates!r}: choose one of {', '.join(TEMPLATE_SETS)}")
    chosen = meta.OPENAI_IMAGENET_TEMPLATES if templates == "openai" else meta.SIMPLE_IMAGENET_TEMPLATES
    return list(meta.IMAGENET_CLASSNAMES), list(chosen)
