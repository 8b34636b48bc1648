"""Images to graph feeds: PNG/JPEG bytes and raw float tensors, prepared as the manifest says.

A bundle with ``preprocessing`` takes one ``float32 [n, C, H, W]`` input. Clients send either
the encoded image (a V2 BYTES tensor whose elements are base64 text, or over gRPC the file's
raw bytes; ``{"b64": "..."}`` in a records instance) or the model-ready tensor itself.
Decoding is Pillow only, so a server needs no torch; the lab prepares its training images with
these same functions, so what was trained on is what is served. Every refusal names the input,
the image and the reason: not an image, a format or pixel mode the model does not take, too
many pixels, truncated data, a wrong shape.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferry.core.bundle import ImagePreprocessing
from ferry.core.protocol import NUMERIC, decode_tensor, tensors_by_name
from ferry.errors import SignatureError

Feeds = dict[str, np.ndarray]

# Modes Pillow converts to L or RGB without losing meaning; 16-bit, 32-bit and float images
# would be clipped to 8 bits silently, so they are refused instead.
ACCEPTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# Monitoring sees these per-image summaries of the model input, not every pixel.
MEAN, STD = "image_mean", "image_std"


def read_image(
    data: bytes, prep: ImagePreprocessing, where: str, formats: Collection[str] | None = None
) -> Image.Image:
    """Open and fully decode ``data``; ``formats`` defaults to the manifest's (None: any)."""
    allowed = prep.formats if formats is None else formats
    image = _open(data, where)
    if allowed and image.format not in allowed:
        raise SignatureError(
            f"{where}: format {image.format} is not accepted; send one of {', '.join(allowed)}"
        )
    width, height = image.size
    if width * height > prep.max_pixels:
        raise SignatureError(
            f"{where}: {width}x{height} is {width * height} pixels, more than the limit of "
            f"{prep.max_pixels}; scale it down (the model sees {prep.width}x{prep.height})"
        )
    if image.mode not in ACCEPTED_MODES:
        raise SignatureError(
            f"{where}: pixel mode {image.mode!r} is not supported; send 8-bit grayscale or RGB "
            "(16-bit and float images are not converted silently)"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise SignatureError(
            f"{where}: the {image.format} data is truncated or corrupt ({exc}); send the "
            "complete file"
        ) from None
    return image


def _open(data: bytes, where: str) -> Image.Image:
    if not data:
        raise SignatureError(f"{where}: the image is empty; send PNG or JPEG file bytes")
    try:
        # Pillow refuses (raises) only past twice its own limit; read_image checks ours, lower.
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise SignatureError(f"{where}: the image has too many pixels; scale it down") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        kind = next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)
        if kind is not None:  # the header is cut or broken: say so rather than "not an image"
            raise SignatureError(
                f"{where}: the {kind} data is truncated or corrupt ({len(data)} bytes); send the "
                "complete file"
            ) from None
        raise SignatureError(
            f"{where}: {len(data)} bytes starting {data[:8]!r} are not an image Pillow can read; "
            "send a PNG or JPEG file"
        ) from None


def pixels(image: Image.Image, prep: ImagePreprocessing) -> np.ndarray:
    """``uint8 [H, W, C]``: converted to the manifest's colour, resized to its size."""
    converted = image.convert("L" if prep.color == "grayscale" else "RGB")
    if converted.size != (prep.width, prep.height):
        converted = converted.resize((prep.width, prep.height), RESAMPLE[prep.resample])
    return np.asarray(converted, dtype=np.uint8).reshape(prep.height, prep.width, prep.channels)


def to_input(batch: np.ndarray, prep: ImagePreprocessing) -> np.ndarray:
    """``uint8 [n, H, W, C]`` pixels to the graph's ``float32 [n, C, H, W]``, normalised."""
    scaled = batch.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(prep.scale)
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


def summaries(batch: np.ndarray) -> Feeds:
    """Mean and standard deviation of each model input: what drift and the log look at."""
    flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
    return {
        MEAN: flat.mean(axis=1).astype(np.float32).reshape(-1, 1),
        STD: flat.std(axis=1).astype(np.float32).reshape(-1, 1),
    }


def encoded_bytes(value: object, where: str) -> bytes:
    """The file bytes of one element: base64 text (a data URL prefix is allowed), raw bytes,
    or ``{"b64": text}``."""
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        value = value["b64"]
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise SignatureError(
            f'{where}: expected the image as base64 text or {{"b64": "..."}}, received '
            f"{type(value).__name__}"
        )
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(
            f"{where}: the text is not valid base64; encode the PNG/JPEG file with base64"
        ) from None


class ImageInputs:
    """Request decoding for one image model, chosen once when the model loads."""

    def __init__(self, prep: ImagePreprocessing) -> None:
        self.prep = prep
        self.name = prep.input
        self.shape = (prep.channels, prep.height, prep.width)

    def from_tensors(self, inputs: object, max_elements: int) -> tuple[Feeds, int]:
        """V2 ``inputs``: one tensor named like the graph input, BYTES or numeric."""
        if not isinstance(inputs, list) or not inputs:
            raise SignatureError("'inputs' must be a non-empty list of tensors")
        by_name = tensors_by_name(inputs)
        if list(by_name) != [self.name]:
            raise SignatureError(
                f"inputs {list(by_name)} do not match the model: send one tensor named "
                f"{self.name!r}, BYTES (PNG/JPEG, base64) or FP32 {self._shape_text()}"
            )
        tensor = by_name[self.name]
        array = decode_tensor(tensor, max_elements)
        if tensor.get("datatype") == "BYTES":
            batch = self._decode_all(self._elements(array))
        else:
            batch = self._raw(array, str(tensor.get("datatype")))
        return {self.name: batch}, len(batch)

    def from_records(self, instances: object) -> tuple[Feeds, int]:
        """``[{"image": {"b64": "..."}}, ...]``, or ``[C][H][W]`` nested lists per instance."""
        if not isinstance(instances, list) or not instances:
            raise SignatureError("'instances' must be a non-empty list of objects")
        images = [self._record(i, record) for i, record in enumerate(instances)]
        return {self.name: np.stack(images)}, len(images)

    def monitored(self, feeds: Feeds) -> Feeds:
        return summaries(feeds[self.name])

    def _shape_text(self) -> str:
        return "[n, {}, {}, {}]".format(*self.shape)

    def _elements(self, array: np.ndarray) -> list[Any]:
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
            return list(array.reshape(-1))
        raise SignatureError(
            f"input {self.name!r}: BYTES shape {list(array.shape)} should be [n] or [n, 1], "
            "one encoded image per element"
        )

    def _decode_all(self, values: list[Any]) -> np.ndarray:
        batch = [self._decode(f"input {self.name!r}, image {i}", v) for i, v in enumerate(values)]
        return to_input(np.stack(batch), self.prep)

    def _decode(self, where: str, value: object) -> np.ndarray:
        return pixels(read_image(encoded_bytes(value, where), self.prep, where), self.prep)

    def _raw(self, array: np.ndarray, datatype: str) -> np.ndarray:
        if datatype not in NUMERIC:
            raise SignatureError(
                f"input {self.name!r}: datatype {datatype} is neither BYTES (encoded images) "
                f"nor numeric; send FP32 {self._shape_text()}"
            )
        if array.ndim != 4 or tuple(array.shape[1:]) != self.shape:
            raise SignatureError(
                f"input {self.name!r}: raw tensor of shape {list(array.shape)} does not fit the "
                f"model's {self._shape_text()}; send values already resized and normalised as "
                "the manifest's preprocessing says, or the PNG/JPEG file as BYTES"
            )
        return self._finite(array.astype(np.float32, copy=False), f"input {self.name!r}")

    def _finite(self, array: np.ndarray, where: str) -> np.ndarray:
        if not np.isfinite(array).all():
            raise SignatureError(f"{where}: the tensor holds NaN or infinity; send numbers")
        return array

    def _record(self, index: int, record: object) -> np.ndarray:
        where = f"instance {index}"
        if not isinstance(record, Mapping) or set(record) != {self.name}:
            raise SignatureError(
                f'{where} must be an object with one field, {{"{self.name}": {{"b64": "..."}}}} '
                f"(or {self.name!r}: nested lists of shape {list(self.shape)})"
            )
        value = record[self.name]
        if isinstance(value, list):
            return self._record_tensor(where, value)
        image = self._decode(f"{where}, {self.name!r}", value)
        return to_input(image[np.newaxis], self.prep)[0]

    def _record_tensor(self, where: str, value: list[Any]) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            array = np.empty(0, dtype=np.float32)
        if array.shape != self.shape:
            raise SignatureError(
                f"{where}: {self.name!r} as nested lists must have shape {list(self.shape)} "
                f"(channels, height, width), received {list(array.shape)}"
            )
        return self._finite(array, where)
