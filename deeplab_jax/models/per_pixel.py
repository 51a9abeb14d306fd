"""A per-pixel classifier: 1x1 convolutions only, so no pixel sees any other.

The control for the synthetic dataset, whose classes differ by shape alone: a model without
spatial context cannot beat predicting the majority class by much, and the gap to DeepLabv3
measures what context buys. Same interface as DeepLabV3.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplab_jax.models.deeplab import normalize_pixels


class PerPixelClassifier(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes]."""

    num_classes: int
    width: int = 64
    num_layers: int = 4
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype, param_dtype=jnp.float32)
        x = normalize_pixels(images).astype(self.dtype)
        for index in range(self.num_layers):
            x = nn.Conv(self.width, (1, 1), use_bias=False, dtype=self.dtype,
                        param_dtype=jnp.float32, name=f"conv{index + 1}")(x)
            x = nn.relu(norm(name=f"conv{index + 1}_norm")(x))
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                         name="logits")(x)
        return logits.astype(jnp.float32)
