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

import numpy as np
from PIL import Image


class LabelValueError(ValueError):
    """A label map with values outside the dataset's classes; the message names the file."""


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
      OSError: the file cannot be read, naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise LabelValueError(
                    f"{path}: label image mode {image.mode!r}; expected a palette ('P') or "
                    "greyscale ('L') PNG whose pixel values are class indices. An RGB "
                    "rendering of the labels cannot be used: take the dataset's original "
                    "index PNGs.")
            return np.asarray(image, dtype=np.uint8).copy()
    except LabelValueError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        # Truncated, empty or not an image: PIL raises many types; all name the file here.
        raise OSError(f"Cannot read the label image {path}: {error}") from error
