"""Labelled images: ``builtin:digits`` or a folder with one sub-folder of images per class,
decoded and resized exactly as a server will (``ferry.serving.images``), then split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ferry.core.bundle import BundleManifest, ImagePreprocessing
from ferry.core.spec import Spec, SplitSpec
from ferry.data.builtin import digits_images
from ferry.errors import DataError, SignatureError
from ferry.export.quantize import Holdout
from ferry.serving.images import pixels, read_image, to_input

INPUT = "image"
DIGITS = "builtin:digits"
DIGITS_SIDE, FOLDER_SIDE = 8, 32
SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Enough calibration rows for stable activation ranges, few enough to stay fast.
CALIBRATION_ROWS = 512


@dataclass(frozen=True)
class ImageSet:
    pixels: np.ndarray  # uint8 [n, H, W, C], as the server prepares them
    labels: np.ndarray  # class name per image
    classes: list[str]

    def take(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.pixels[index], self.labels[index], self.classes)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageSplit:
    train: ImageSet
    valid: ImageSet
    test: ImageSet
    rows: int
    fingerprint: str


def geometry(spec: Spec) -> ImagePreprocessing:
    """The spec's size and colour; mean and std are filled in from the training images."""
    assert spec.model is not None
    digits = spec.data.source == DIGITS
    height, width = spec.model.size(DIGITS_SIDE if digits else FOLDER_SIDE)
    color = spec.model.color or ("grayscale" if digits else "rgb")
    channels = 1 if color == "grayscale" else 3
    return ImagePreprocessing(
        input=INPUT,
        height=height,
        width=width,
        color=color,
        mean=[0.0] * channels,
        std=[1.0] * channels,
    )


def with_statistics(prep: ImagePreprocessing, train: ImageSet) -> ImagePreprocessing:
    """Per-channel mean and std of the scaled training pixels (std floored: no division by 0)."""
    scaled = train.pixels.reshape(-1, prep.channels).astype(np.float64) * prep.scale
    mean = [float(v) for v in scaled.mean(axis=0)]
    std = [max(float(v), 1e-3) for v in scaled.std(axis=0)]
    return prep.model_copy(update={"mean": mean, "std": std})


def load_images(spec: Spec, prep: ImagePreprocessing) -> ImageSet:
    source = spec.data.source
    if source == DIGITS:
        images = _digits(prep)
    else:
        images = _folder(Path(source.split(":", 1)[1]).expanduser(), prep)
    if spec.data.rows is not None and spec.data.rows < len(images):
        keep = np.random.default_rng(spec.split.seed).choice(len(images), spec.data.rows, False)
        images = images.take(np.sort(keep))
    return images


def _digits(prep: ImagePreprocessing) -> ImageSet:
    raw, targets = digits_images()
    prepared = np.stack([pixels(Image.fromarray(image), prep) for image in raw])
    labels = targets.astype(str)
    return ImageSet(prepared, labels, sorted(set(labels.tolist())))


def _folder(root: Path, prep: ImagePreprocessing) -> ImageSet:
    if not root.is_dir():
        raise DataError(
            f"data.source: image folder {str(root)!r} not found; give folder:PATH to a "
            "directory with one sub-folder of images per class"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, c) for c in classes for f in sorted((root / c).iterdir()) if _is_image(f)]
    found = sorted({c for _, c in files})
    if len(found) < 2:
        raise DataError(
            f"data.source: {str(root)!r} holds images of {len(found)} class(es) {found}; a "
            "classifier needs at least 2 sub-folders (one per class) with images in them"
        )
    prepared = np.stack([_file_pixels(path, prep) for path, _ in files])
    labels = np.asarray([c for _, c in files], dtype=object).astype(str)
    return ImageSet(prepared, labels, found)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def _file_pixels(path: Path, prep: ImagePreprocessing) -> np.ndarray:
    try:
        image = read_image(path.read_bytes(), prep, f"image {str(path)!r}", formats=())
    except SignatureError as exc:
        raise DataError(f"{exc.message}; fix or remove the file") from None
    return pixels(image, prep)


def split_images(images: ImageSet, split: SplitSpec) -> ImageSplit:
    """Stratified, seeded train / validation / test split of the spec's shares."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(images))
    try:
        rest, test = train_test_split(
            index, test_size=split.test_size, stratify=images.labels, random_state=split.seed
        )
        share = split.valid_size / (1 - split.test_size)
        train, valid = train_test_split(
            rest, test_size=share, stratify=images.labels[rest], random_state=split.seed
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(images)} images into train, validation and test by class: "
            f"{exc}; add images to the smallest classes or change split.test_size/valid_size"
        ) from None
    return ImageSplit(
        images.take(np.sort(train)),
        images.take(np.sort(valid)),
        images.take(np.sort(test)),
        len(images),
        fingerprint(images),
    )


def fingerprint(images: ImageSet) -> str:
    digest = hashlib.sha256(images.pixels.tobytes())
    digest.update("\n".join(images.labels.tolist()).encode())
    return digest.hexdigest()[:16]


def holdout(spec: Spec, manifest: BundleManifest) -> Holdout:
    """Calibration rows (validation split) and the test split, prepared as the bundle's
    manifest says: what ``ferry export --quantize`` scores before and after."""
    prep = manifest.preprocessing
    if prep is None:
        raise DataError(f"bundle {manifest.name!r} is not an image model (no preprocessing)")
    split = split_images(load_images(spec, prep), spec.split)
    calibration = split.valid if len(split.valid) else split.train
    rows = to_input(calibration.pixels[:CALIBRATION_ROWS], prep)
    batches = [{prep.input: rows[i : i + 64]} for i in range(0, len(rows), 64)]
    test = {prep.input: to_input(split.test.pixels, prep)}
    return Holdout(calibration=batches, test=test, y_test=split.test.labels)
