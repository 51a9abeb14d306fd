"""Class colour palettes: index -> RGB, 256 entries so that any label (255 too) looks up.

A palette belongs to its dataset (VOC's colour map, CamVid's published class colours, a
custom dataset's metadata); `reporting/visualize.py` draws with whatever palette it is given.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

PALETTE_SIZE = 256


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map (`labelcolormap` / `bitget` in the VOC devkit).

    Bits 0, 1, 2 of the class index go to the most significant bit of R, G, B; bits 3, 4, 5
    to the next bit down, and so on. This keeps neighbouring classes visually distinct and
    matches the colours of VOC's own SegmentationClass PNGs.

    Returns:
      uint8 [256, 3]: index 0 = (0, 0, 0), 1 = (128, 0, 0), 15 = (192, 128, 128),
      255 = (224, 224, 192).
    """
    palette = np.zeros((PALETTE_SIZE, 3), dtype=np.uint8)
    for index in range(PALETTE_SIZE):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def palette_from_colors(colors: Sequence[Sequence[int]],
                        ignore_color: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A 256-entry palette from per-class colours (e.g. CamVid's published class colours).

    Args:
      colors: [C, 3] RGB colours in 0..255, one per class, with C <= 255.
      ignore_color: RGB colour for index 255, the ignore label.

    Returns:
      uint8 [256, 3]: rows 0..C-1 are `colors`, index 255 is `ignore_color`, the rest black.
    """
    colors = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
    if len(colors) >= PALETTE_SIZE:
        # Index 255 is reserved for the ignore colour.
        raise ValueError(f"at most {PALETTE_SIZE - 1} class colours, got {len(colors)}")
    if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise ValueError("colours must lie in 0..255")
    palette = np.zeros((PALETTE_SIZE, 3), dtype=np.uint8)
    palette[:len(colors)] = colors
    palette[PALETTE_SIZE - 1] = np.asarray(ignore_color, dtype=np.uint8)
    return palette
