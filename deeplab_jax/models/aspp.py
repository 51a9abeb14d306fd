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

from deeplab_jax.models.atrous import AtrousConv

PAPER_RATES_AT_OS16 = (6, 12, 18)


def default_atrous_rates(output_stride: int) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16, doubled at 8 (Sec. 3.3), halved at 32."""
    return tuple(rate * 16 // output_stride for rate in PAPER_RATES_AT_OS16)


class ASPP(nn.Module):
    """[B, h, w, C] features -> [B, h, w, channels].

    Attributes:
      atrous_rates: rates of the three 3x3 branches.
      channels: width of every branch and of the projection (256 in the paper).
      atrous_impl: how the 3x3 atrous branches run, one of atrous.ATROUS_IMPLS (same
        parameters, same function; see atrous.py).
    """

    atrous_rates: Sequence[int]
    channels: int = 256
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5
    atrous_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if len(self.atrous_rates) != 3:
            raise ValueError(f"ASPP takes three atrous rates, got {tuple(self.atrous_rates)}.")
        conv = functools.partial(nn.Conv, self.channels, use_bias=False, dtype=self.dtype,
                                 param_dtype=jnp.float32)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype, param_dtype=jnp.float32)

        atrous_conv = functools.partial(AtrousConv, self.channels, (3, 3), padding="SAME",
                                        use_bias=False, dtype=self.dtype,
                                        param_dtype=jnp.float32, impl=self.atrous_impl)

        def bn_relu(y, name):
            return nn.relu(norm(name=f"{name}_norm")(y))

        branches = [bn_relu(conv((1, 1), name="branch0")(x), "branch0")]
        for index, rate in enumerate(self.atrous_rates):
            name = f"branch{index + 1}"
            branches.append(bn_relu(atrous_conv(rate=rate, name=name)(x), name))
        # Image-level features (Sec. 3.3): bilinear upsampling of a 1x1 map is a broadcast.
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = bn_relu(conv((1, 1), name="image_pool")(pooled), "image_pool")
        branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.channels,)))
        y = jnp.concatenate(branches, axis=-1)
        return bn_relu(conv((1, 1), name="project")(y), "project")
