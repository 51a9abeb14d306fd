"""Reading and checking label maps: class indices, never colours.

A label map is uint8 [h, w] of class indices 0..C-1, with `ignore_label` (255) for pixels
that count in neither the loss nor the metrics (VOC's object boundaries, CamVid's void,
canvas padding). A value outside {0..C-1, ignore_label} is refused with the file's name:
a stray 21 in 21-class VOC would otherwise be a silent wrong class or an out-of-range
one-hot, and neither shows up in the loss. Every label map is checked where it is read:
the folder readers (voc.py, camvid.py) at load, the TFDS builders when they prepare the data
(through the same functions), and `input_pipeline` again for any source that declares its
`num_classes` (a wrong label never reaches the loss, whatever the source).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from deeplab_jax import errors


class LabelValueError(errors.DataError):
    """A label map with values outside the dataset's classes; the message names the file."""


class LabelReadError(errors.DataError, OSError):
    """A label file that cannot be read at all; still an OSError, as before it had a class."""


def check_label_values(label: np.ndarray, num_classes: int, ignore_label: int,
                       where: str) -> np.ndarray:
    """Returns `label` if every value is a class index or `ignore_label`.

    Any integer dtype is accepted (so a -1 in an int32 map is caught before a cast to
    uint8 would turn it into 255); uint8 maps, the common case, cost one bincount.

    Raises:
      LabelValueError: naming `where` (a file), the offending values and the valid range.
    """
    label = np.asarray(label)
    if label.dtype.kind not in "ui":
        raise LabelValueError(f"{where}: label dtype {label.dtype}, expected integer class "
                              "indices (uint8).")
    if label.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        raise LabelValueError(
            f"{where}: label values {bad.tolist()} are neither a class index "
            f"0..{num_classes - 1} nor the ignore label {ignore_label}. Check that the file "
            "is a class-index map of this dataset (not a colour image or another dataset's "
            "labels), or map those values to the ignore label when preparing the data.")
    return label


def load_index_png(path: str) -> np.ndarray:
    """Reads a palette ('P') or greyscale ('L') PNG's stored indices as uint8 [h, w].

    The palette index is the class: colours are never decoded back to classes by hand (two
    classes may share a colour in a palette; the index is what the annotators wrote).

    Raises:
      LabelValueError: the file is not a single-channel 8-bit image (an RGB rendering of a
        label map, say), naming the file and its mode.
      LabelReadError (an OSError): the file cannot be read, naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise LabelValueError(
                    f"{path}: label image mode {image.mode!r}; expected a palette ('P') or "
                    "greyscale ('L') PNG whose pixel values are class indices. An RGB "
                    "rendering of the labels cannot be used: take the dataset's original "
                    "index PNGs (for your own data, RGB labels need \"label_format\": "
                    "\"color\" and \"colors\" in dataset.json).")
            return np.asarray(image, dtype=np.uint8).copy()
    except LabelValueError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        # Truncated, empty or not an image: PIL raises many types; all name the file here.
        raise LabelReadError(f"Cannot read the label image {path}: {error}. Replace it with a "
                             "readable copy (re-extract or re-export it as PNG), or remove "
                             "the example.") from error


class LabelColorError(LabelValueError):
    """A colour label map with colours that are no class's; the message names the file."""


class SizeMismatchError(errors.DataError):
    """An image and its label of different sizes; the message names both files."""


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: str,
                    label_path: str) -> None:
    """Raises SizeMismatchError unless the image and its label have the same height and width
    (never a silent fill or crop: the label belongs to another image, or was resized)."""
    if image.shape[:2] != label.shape[:2]:
        raise SizeMismatchError(
            f"Image {image_path} is {image.shape[0]}x{image.shape[1]} (h x w) but its label "
            f"{label_path} is {label.shape[0]}x{label.shape[1]}. Pair the image with its own "
            "label; if one of them was resized, resize the label like the image (nearest "
            "neighbour, never bilinear) or go back to the originals.")


def map_label_values(values: np.ndarray, value_to_class: dict[int, int],
                     ignore_values: Sequence[int], where: str,
                     ignore_label: int = 255) -> np.ndarray:
    """uint8 values of a label file -> class indices, ignored values -> `ignore_label`.

    Raises:
      LabelValueError: naming `where`, the values that are neither a class's nor ignored
        (with their pixel counts), and the classes.
    """
    table = np.full(256, -1, np.int64)
    for value, index in value_to_class.items():
        table[value] = index
    for value in ignore_values:
        table[value] = ignore_label
    mapped = table[values]
    if (mapped < 0).any():
        counts = np.bincount(values[mapped < 0].ravel(), minlength=256)
        bad = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
        raise LabelValueError(
            f"{where}: label values {sorted(bad)} ({sum(bad.values())} pixels) are neither a "
            f"class's (values {sorted(value_to_class)}) nor ignored ({list(ignore_values)}). "
            "If they mark pixels to ignore, set \"ignore_values\": "
            f"{sorted(set(ignore_values) | set(bad))} in dataset.json; if they are a class's, "
            "add them to that class in \"label_values\"; else fix the file (a JPEG-saved or "
            "bilinear-resized label has such stray values).")
    return mapped.astype(np.uint8)


def decode_color_label(rgb: np.ndarray, colors: np.ndarray, ignore_colors: np.ndarray,
                       where: str, ignore_label: int = 255) -> np.ndarray:
    """uint8 [h, w, 3] colours -> uint8 [h, w] class indices (class i is `colors[i]`).

    Raises:
      LabelColorError: naming `where` and the colours that are no class's and not ignored
        (the commonest of them with their pixel counts): an antialiased or JPEG-compressed
        label, or a palette that does not match.
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) \
        | rgb[..., 2].astype(np.int64)

    def code(color):
        return (int(color[0]) << 16) | (int(color[1]) << 8) | int(color[2])

    known = {code(color): index for index, color in enumerate(colors)}
    known.update({code(color): ignore_label for color in ignore_colors})
    unique, inverse = np.unique(codes, return_inverse=True)
    lookup = np.array([known.get(int(c), -1) for c in unique], np.int64)
    if (lookup < 0).any():
        counts = np.bincount(inverse.ravel(), minlength=len(unique))
        bad = sorted(((int(counts[i]), int(unique[i])) for i in np.flatnonzero(lookup < 0)),
                     reverse=True)
        listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px"
                           for n, c in bad[:5])
        raise LabelColorError(
            f"{where}: {len(bad)} colour(s) are no class's colour and not ignored: {listed}"
            + (" ..." if len(bad) > 5 else "") + ". Labels must use exactly the colours of "
            "dataset.json's 'colors' (lossless PNG, no antialiasing), or list extra colours "
            "in 'ignore_colors'.")
    return lookup[inverse].reshape(rgb.shape[:2]).astype(np.uint8)
