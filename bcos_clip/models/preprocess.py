"""Image transforms from an open_clip preprocess config: the teacher's (normalised) and the B-cos
student's (to [0, 1], no Normalize: the B-cos tower folds the normalisation into its first conv)."""
from __future__ import annotations

from typing import Any, Callable, Dict

from open_clip.transform import PreprocessCfg, image_transform_v2
from torchvision import transforms as T


def make_preprocess(pp: Dict[str, Any], normalize: bool = True, is_train: bool = False) -> Callable:
    """PIL image -> (3, H, W) tensor. With normalize=False the output is in [0, 1]."""
    cfg = PreprocessCfg(**{k: v for k, v in pp.items() if k in PreprocessCfg.__dataclass_fields__})
    tf = image_transform_v2(cfg, is_train=is_train)
    if normalize:
        return tf
    return T.Compose([t for t in tf.transforms if not isinstance(t, T.Normalize)])


def image_size(pp: Dict[str, Any]) -> int:
    size = pp.get("size", 224)
    return int(size if isinstance(size, int) else size[0])
