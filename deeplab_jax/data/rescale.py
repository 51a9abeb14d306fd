"""Host-side resizing of a whole dataset by one factor, for cheap runs at reduced resolution.

`config.data.image_scale = 0.5` reads CamVid at 180x240 instead of 360x480: a quarter of the
pixels, for CPU runs and quick ablations. It is not augmentation (that is `augment.py`, on
the device): every example is resized once, the same way, in training and evaluation, so
the metrics are those of the reduced-resolution task (say so when reporting them).
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def rescaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """round(h * s), round(w * s), at least 1 pixel each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_example(image: np.ndarray, label: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resizes image (bilinear, antialiased when shrinking) and label (nearest) by `scale`.

    Nearest neighbour keeps label values in the dataset's set (no blended class indices).
    """
    if scale == 1.0:
        return image, label
    height, width = rescaled_size(*label.shape, scale)
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return image, label


class RescaledSource:
    """`source` with every example resized by `scale`; other attributes pass through."""

    def __init__(self, source, scale: float):
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"config.data.image_scale={scale} must be in (0, 1]: it reduces "
                             "the resolution of the whole dataset (upscaling adds nothing).")
        self._source = source
        self.scale = scale

    def __len__(self) -> int:
        return len(self._source)

    def __getattr__(self, name):
        return getattr(self._source, name)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self._source[index]
        image, label = rescale_example(example["image"], example["label"], self.scale)
        return {**example, "image": image, "label": label}
