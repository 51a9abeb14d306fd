"""Host-side resizing of whole datasets: by one factor, or each image to fit a size range.

`config.data.image_scale = 0.5` reads CamVid at 180x240 instead of 360x480: a quarter of the
pixels, for CPU runs and quick ablations. `config.data.resize_to_fit = (512, 1024)` resizes
each image of a dataset whose images vary in size (ADE20K: ~100 to ~2000 pixels a side) by its
own factor, keeping its aspect ratio, so that every example fits one fixed canvas
(mmsegmentation's keep-ratio `Resize`, see `fit_scale`). Neither is augmentation (that is
`augment.py`, on the device): every example is resized once, the same way, in training and
evaluation, so the metrics are those of the resized task (say so when reporting them).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from deeplab_jax import errors


def rescaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """round(h * s), round(w * s), at least 1 pixel each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_example(image: np.ndarray, label: np.ndarray, height: int,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes image (bilinear, antialiased when shrinking) and label (nearest) to h x w.

    Nearest neighbour keeps label values in the dataset's set (no blended class indices).
    """
    if label.shape[:2] == (height, width):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return image, label


def rescale_example(image: np.ndarray, label: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resizes image (bilinear, antialiased when shrinking) and label (nearest) by `scale`."""
    if scale == 1.0:
        return image, label
    return resize_example(image, label, *rescaled_size(*label.shape, scale))


class _ResizedSource:
    """`source` with every example resized to `self.size_for(height, width)` (image bilinear,
    label nearest: `resize_example`); other attributes pass through."""

    def __init__(self, source):
        self._source = source

    @property
    def wrapped(self):
        return self._source

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._source)

    def __getattr__(self, name):
        return getattr(self._source, name)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self._source[index]
        image, label = resize_example(example["image"], example["label"],
                                      *self.size_for(*example["label"].shape[:2]))
        return {**example, "image": image, "label": label}


class RescaledSource(_ResizedSource):
    """`source` with every example resized by `scale`; other attributes pass through."""

    def __init__(self, source, scale: float):
        if not 0.0 < scale <= 1.0:
            raise errors.ConfigError(
                f"config.data.image_scale={scale} must be in (0, 1]: it reduces the resolution "
                "of the whole dataset (upscaling adds nothing). Set e.g. "
                "--config.data.image_scale=0.5, or 1.0 for the full resolution.")
        super().__init__(source)
        self.scale = scale

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        return rescaled_size(height, width, self.scale)


def fit_scale(height: int, width: int, short_side: int, long_side_max: int) -> float:
    """The keep-ratio factor that brings the short side to `short_side`, unless the long side
    would then exceed `long_side_max`: min(long_side_max / long, short_side / short).

    mmsegmentation's `Resize(scale=(2048, 512), keep_ratio=True)`, through open-mmlab/mmcv
    @40906d3 mmcv/image/geometric.py `rescale_size`: `min(max(scale) / max(h, w),
    min(scale) / min(h, w))`. It enlarges small images too.
    """
    return min(long_side_max / max(height, width), short_side / min(height, width))


def fitted_size(height: int, width: int, short_side: int,
                long_side_max: int) -> tuple[int, int]:
    """(h, w) after `fit_scale`, rounded half up as mmcv's `_scale_size` (int(x + 0.5))."""
    scale = fit_scale(height, width, short_side, long_side_max)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class ResizedToFit(_ResizedSource):
    """`source` with each example resized, keeping its aspect ratio, to `fitted_size`.

    The image is resized bilinearly, the label by nearest neighbour (`resize_example`); other
    attributes pass through. Every result has its short side <= `short_side` and its long
    side <= `long_side_max`, so a canvas of (long_side_max, long_side_max) (+1 for the 32k+1
    convention) holds any orientation.

    Args:
      source: any example source (see `input_pipeline.py`).
      short_side, long_side_max: `config.data.resize_to_fit`.
    """

    def __init__(self, source, short_side: int, long_side_max: int):
        if not (isinstance(short_side, int) and isinstance(long_side_max, int)
                and 0 < short_side <= long_side_max):
            raise errors.ConfigError(
                f"config.data.resize_to_fit=({short_side!r}, {long_side_max!r}) must be None or "
                "(short_side, long_side_max), two integers with 0 < short_side <= "
                "long_side_max: set e.g. --config.data.resize_to_fit='(512, 1024)'.")
        super().__init__(source)
        self.short_side = short_side
        self.long_side_max = long_side_max

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        return fitted_size(height, width, self.short_side, self.long_side_max)
