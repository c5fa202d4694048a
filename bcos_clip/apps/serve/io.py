"""Uploads in, PNGs out, for `bcos-clip serve`: capped image decoding, base64, hashing.

Every check raises `RequestError(status, message)`; the API turns it into a JSON 4xx answer with that
one-line message.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

# Formats a browser can send and Pillow decodes safely; anything else is "not an image" to us.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class RequestError(Exception):
    """A bad request: `status` (4xx) and a one-line message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_side: int = 4096
    max_prompts: int = 16
    max_prompt_chars: int = 200

    def body_bytes(self) -> int:
        """The largest request body accepted: a base64 image (4/3 of the bytes) plus form/JSON overhead."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Raw upload bytes -> an RGB PIL image, or RequestError (413 too large, 415 not an image)."""
    if len(data) == 0:
        raise RequestError(400, "the image is empty (0 bytes)")
    if len(data) > limits.max_upload_bytes:
        raise RequestError(413, f"the image is {len(data)} bytes; the limit is {limits.max_upload_bytes} "
                                "bytes (--max-upload-mb)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            fmt = img.format
            width, height = img.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise RequestError(413, "the image has too many pixels (decompression-bomb guard)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RequestError(415, f"the upload is not an image Pillow can read ({type(exc).__name__})") from None
    if fmt not in ALLOWED_FORMATS:
        raise RequestError(415, f"image format {fmt} is not accepted; send one of {', '.join(ALLOWED_FORMATS)}")
    if max(width, height) > limits.max_image_side:
        raise RequestError(413, f"the image is {width}x{height} pixels; the limit is {limits.max_image_side} "
                                "pixels a side (--max-image-side)")
    try:
        img.load()
        return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(415, f"the {fmt} image could not be decoded ({exc})") from None


def decode_base64(text: str, field: str = "image") -> bytes:
    """Base64 (optionally a `data:...;base64,` URL) -> bytes, or RequestError 400."""
    if not isinstance(text, str) or not text:
        raise RequestError(400, f"'{field}' must be a non-empty base64 string")
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"'{field}' is not valid base64") from None


def image_hash(data: bytes) -> str:
    """The cache key of an upload: sha256 of its bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def png_bytes(array: Union[np.ndarray, Image.Image]) -> bytes:
    """(H, W, 3|4) uint8 or float in [0, 1], or a PIL image -> PNG bytes."""
    if not isinstance(array, Image.Image):
        arr = np.asarray(array)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        array = Image.fromarray(arr)
    buf = io.BytesIO()
    array.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
