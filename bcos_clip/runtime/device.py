"""The one device picker: a ``--device`` value -> a ``torch.device``.

Every command that takes ``--device`` (train, eval, explain, localize, serve, bench, demo) calls
:func:`pick_device`; torchrun ranks pass their local rank.
"""
from __future__ import annotations

from typing import Optional

import torch

AUTO = ("", "auto")


def pick_device(requested: Optional[str] = None, local_rank: Optional[int] = None) -> torch.device:
    """``None`` / ``"auto"`` -> ``cuda`` when CUDA is available, else ``cpu``; anything else as torch reads it.

    A CUDA device on a machine without CUDA, or a name torch does not know, is a ValueError naming
    ``--device``. ``local_rank`` (a torchrun rank's LOCAL_RANK): a bare ``cuda`` becomes ``cuda:<local_rank>``
    and the process is bound to that device.
    """
    name = str(requested)
    if (requested or "") in AUTO:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {requested!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine")
        if local_rank is not None:
            device = torch.device("cuda", local_rank if device.index is None else device.index)
            torch.cuda.set_device(device)
    return device
