"""Atrous Spatial Pyramid Pooling (DeepLabv3 Sec. 3.3).

Five parallel branches over the backbone features, each 256 channels with BN and ReLU:
one 1x1 conv, three 3x3 atrous convs, and image-level features (global average pooling,
1x1 conv, upsampled back). They are concatenated and projected by a 1x1 conv (BN, ReLU).
Branches are named by position (`branch1..3`), never by rate: the rates change with the
output stride, the parameter tree must not.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

PAPER_RATES_AT_OS16 = (6, 12, 18)


def default_atrous_rates(output_stride: int) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16, doubled at 8 (Sec. 3.3), halved at 32."""
    return tuple(rate * 16 // output_stride for rate in PAPER_RATES_AT_OS16)


class ASPP(nn.Module):
    """[B, h, w, C] features -> [B, h, w, channels].

    Attributes:
      atrous_rates: rates of the three 3x3 branches.
      channels: width of every branch and of the projection (256 in the paper).
    """

    atrous_rates: Sequence[int]
    channels: int = 256
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if len(self.atrous_rates) != 3:
            raise ValueError(f"ASPP takes three atrous rates, got {tuple(self.atrous_rates)}.")
        conv = functools.partial(nn.Conv, self.channels, use_bias=False, dtype=self.dtype,
                                 param_dtype=jnp.float32)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype, param_dtype=jnp.float32)

        def conv_bn_relu(y, kernel, rate, name):
            y = conv(kernel, kernel_dilation=rate, padding="SAME", name=name)(y)
            return nn.relu(norm(name=f"{name}_norm")(y))

        branches = [conv_bn_relu(x, (1, 1), 1, "branch0")]
        for index, rate in enumerate(self.atrous_rates):
            branches.append(conv_bn_relu(x, (3, 3), rate, f"branch{index + 1}"))
        # Image-level features (Sec. 3.3): bilinear upsampling of a 1x1 map is a broadcast.
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = conv_bn_relu(pooled, (1, 1), 1, "image_pool")
        branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.channels,)))
        y = jnp.concatenate(branches, axis=-1)
        return conv_bn_relu(y, (1, 1), 1, "project")
