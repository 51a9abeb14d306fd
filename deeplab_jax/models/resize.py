"""Bilinear resizing with aligned corners, as the official DeepLab code resizes.

DeepLab (TF) resizes logits and images with `align_corners=True`, which is why its crops
are 32k+1 pixels (513): corner pixels of a 33x33 feature map land exactly on the corners
of the 513x513 image. We implement it as two small interpolation matrices (one per axis)
applied with einsum: exact, shape-static, and a matmul on GPU/TPU.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of align-corners linear interpolation along one axis."""
    if out_size == 1 or in_size == 1:
        source = np.zeros(out_size)
    else:
        source = np.arange(out_size) * ((in_size - 1) / (out_size - 1))
    lower = np.clip(np.floor(source).astype(np.int64), 0, in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = source - lower
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes [B, h, w, C] to [B, H, W, C] bilinearly with aligned corners.

    The computation runs in x's dtype (float32 logits stay float32).
    """
    height, width = size
    if x.shape[1:3] == (height, width):
        return x
    rows = jnp.asarray(interpolation_matrix(x.shape[1], height), x.dtype)
    cols = jnp.asarray(interpolation_matrix(x.shape[2], width), x.dtype)
    x = jnp.einsum("Hh,bhwc->bHwc", rows, x)
    return jnp.einsum("Ww,bHwc->bHWc", cols, x)
