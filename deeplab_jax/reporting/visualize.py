"""Turning segmentation labels into pictures: colourised masks, overlays, panels, PNG files.

This module draws class indices with a dataset's palette (the palettes themselves belong to
the datasets: `data/palettes.py`). It uses only numpy and PIL, so it runs anywhere (no JAX,
no TensorFlow): the training loop hands it host arrays, and the resulting uint8 images go to
TensorBoard (through `reporting/writer.py`) or to PNG files.

Labels are integer class maps [H, W] with values in 0..255; 255 is conventionally the
"ignore" index (VOC's object boundaries, CamVid's void), and every palette here has 256
entries so that any such label can be looked up without a special case.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from deeplab_jax.data.palettes import PALETTE_SIZE
from deeplab_jax.errors import DataError


def _check_label(label: np.ndarray) -> np.ndarray:
    """Returns `label` as an integer array, raising if any value is outside 0..255."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {label.dtype}")
    bad = (label < 0) | (label > PALETTE_SIZE - 1)
    if bad.any():
        values = np.unique(label[bad])
        raise ValueError(f"label values outside 0..255: {values[:10].tolist()}"
                         + (" ..." if len(values) > 10 else ""))
    return label


def _to_uint8_image(image: np.ndarray) -> np.ndarray:
    """uint8 passes through; floats in [0, 255] are rounded and clipped."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Maps class indices to palette colours.

    Args:
      label: int [H, W] (any shape works) with values in 0..255.
      palette: uint8 [256, 3].

    Returns:
      uint8 [H, W, 3].

    Raises:
      ValueError: naming the label values outside 0..255.
    """
    label = _check_label(label)
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.shape != (PALETTE_SIZE, 3):
        raise ValueError(f"palette must be [256, 3], got {palette.shape}")
    return palette[label]


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray,
            alpha: float = 0.5, ignore_label: int | None = 255) -> np.ndarray:
    """Blends the colourised label over the image.

    Args:
      image: uint8 or float in [0, 255], [H, W, 3].
      label: int [H, W] with values in 0..255.
      palette: uint8 [256, 3].
      alpha: weight of the label colour; 0 shows only the image, 1 only the colours.
      ignore_label: pixels with this label show the image unchanged (None: blend them all).

    Returns:
      uint8 [H, W, 3].
    """
    image = _to_uint8_image(image)
    colors = colorize(label, palette)
    if image.shape != colors.shape:
        raise ValueError(f"image {image.shape} and label {np.shape(label)} do not match")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if ignore_label is not None:
        # Ignored pixels carry no class, so painting them would suggest one.
        keep = np.asarray(label) == ignore_label
        blended[keep] = image[keep]
    return blended


def prediction_panel(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                     palette: np.ndarray, *, max_rows: int | None = None,
                     gap: int = 2) -> np.ndarray:
    """A grid with one row per example: image | ground truth | prediction.

    Args:
      images: uint8 or float in [0, 255], [N, H, W, 3].
      labels: int [N, H, W] ground truth (255 = ignore, drawn with palette[255]).
      predictions: int [N, H, W] predicted classes.
      palette: uint8 [256, 3].
      max_rows: show only the first `max_rows` examples (None: all of them).
      gap: width in pixels of the white separators between tiles.

    Returns:
      uint8 [n*H + (n-1)*gap, 3*W + 2*gap, 3] with n = min(N, max_rows).
    """
    images = _to_uint8_image(images)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {images.shape}")
    if labels.shape != images.shape[:3] or predictions.shape != images.shape[:3]:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} "
                         f"must be {images.shape[:3]}")
    n = images.shape[0] if max_rows is None else min(images.shape[0], max_rows)
    if n < 1:
        raise ValueError("prediction_panel needs at least one example")
    h, w = images.shape[1:3]
    # White background, so whatever is not covered by a tile is a separator.
    panel = np.full((n * h + (n - 1) * gap, 3 * w + 2 * gap, 3), 255, dtype=np.uint8)
    for row in range(n):
        tiles = (images[row], colorize(labels[row], palette),
                 colorize(predictions[row], palette))
        top = row * (h + gap)
        for col, tile in enumerate(tiles):
            left = col * (w + gap)
            panel[top:top + h, left:left + w] = tile
    return panel


def _make_parent(path: str | os.PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes uint8 [H, W, 3] (RGB) or [H, W] (greyscale) to a PNG, creating parent dirs."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3
                                                           and array.shape[-1] == 3)):
        raise ValueError(f"expected uint8 [H, W, 3] or [H, W], got {array.dtype} {array.shape}")
    _make_parent(path)
    Image.fromarray(array).save(path, format="PNG")


def save_indexed_png(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray) -> None:
    """Writes a palette ('P' mode) PNG whose pixel values are the class indices.

    This is the format of VOC's SegmentationClass files: image viewers show the colours,
    while `load_indexed_png` (or any reader that does not convert to RGB) gets the indices.

    Args:
      path: output file; parent directories are created.
      label: int [H, W] with values in 0..255.
      palette: uint8 [256, 3].
    """
    label = _check_label(label)
    palette = np.asarray(palette, dtype=np.uint8)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got {label.shape}")
    if palette.shape != (PALETTE_SIZE, 3):
        raise ValueError(f"palette must be [256, 3], got {palette.shape}")
    h, w = label.shape
    # frombytes rather than fromarray: fromarray would make an 'L' image, and converting
    # 'L' to 'P' is a colour quantisation, not a relabelling.
    image = Image.frombytes("P", (w, h), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    image.putpalette(palette.tobytes())
    _make_parent(path)
    image.save(path, format="PNG")


def load_indexed_png(path: str | os.PathLike) -> np.ndarray:
    """Reads the class indices of a palette (or greyscale) PNG.

    Returns:
      uint8 [H, W] pixel indices, not their palette colours.

    Raises:
      DataError (a ValueError): the file is RGB(A), whose pixels are colours, not indices.
    """
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise DataError(f"{path}: expected a palette or greyscale PNG, got mode "
                            f"{image.mode!r}; give the label map (deeplab_jax.predict's "
                            "NAME.png), not a colourised one (NAME_color.png).")
        return np.array(image, dtype=np.uint8)
