"""Atrous Spatial Pyramid Pooling (DeepLabv3 Sec. 3.3).

Five parallel branches over the backbone features, each 256 channels with BN and ReLU:
one 1x1 conv, three 3x3 atrous convs, and image-level features (global average pooling,
1x1 conv, upsampled back). They are concatenated and projected by a 1x1 conv (BN, ReLU).
Branches are named by position (`branch1..3`), never by rate: the rates change with the
output stride, the parameter tree must not.

`separable=True` is DeepLabv3+'s ASPP (Chen et al. 2018, Sec. 3.2; the official code's
`aspp_with_separable_conv`): each 3x3 atrous branch is a depthwise 3x3 atrous conv, BN,
ReLU, then a pointwise 1x1 conv, BN, ReLU (`separable_conv_bn_relu`).

The rate arithmetic every head with atrous branches shares is here too: rates derived from
the output stride, rescaled to another stride, and checked against the feature map.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.atrous import AtrousConv

PAPER_RATES_AT_OS16 = (6, 12, 18)


def default_atrous_rates(output_stride: int,
                         rates: Sequence[int] = PAPER_RATES_AT_OS16,
                         at_stride: int = 16) -> tuple[int, ...]:
    """`rates` given at `at_stride`, at `output_stride`: (6, 12, 18) at output stride 16,
    doubled at 8 (Sec. 3.3), halved at 32."""
    return tuple(rate * at_stride // output_stride for rate in rates)


def rescale_rates(rates: Sequence[int], from_stride: int, to_stride: int,
                  what: str = "ASPP rates", to: str = "eval") -> tuple[int, ...]:
    """Rates trained at `from_stride` for a model evaluated at `to_stride`: the same field of
    view in pixels, rate * from / to (Sec. 4.2: "rates are doubled when output_stride = 8").

    Raises:
      ConfigError: the rates do not stay whole numbers >= 1.
    """
    scaled = [rate * from_stride / to_stride for rate in rates]
    if any(rate != int(rate) or rate < 1 for rate in scaled):
        ratio = max(1, to_stride // from_stride)
        finer = (f", or evaluate at output stride {from_stride} or finer "
                 "(config.eval.output_stride)" if to == "eval" and ratio > 1 else "")
        raise ConfigError(
            f"{what} {tuple(rates)} at output stride {from_stride} do not give whole rates at "
            f"{to} output stride {to_stride} ({scaled}); set {what} to multiples of {ratio} "
            f"(all >= 1){finer}.")
    return tuple(int(rate) for rate in scaled)


def check_rates_fit(rates: Sequence[int], image_size: Sequence[int], output_stride: int,
                    where: str, field: str) -> None:
    """Refuses atrous rates of which none reaches a feature-map pixel other than the centre.

    A 3x3 convolution at rate r on an n-pixel side reads pixels i - r and i + r: when
    r >= n, every non-centre tap of every output lands in the zero padding and the branch
    is a 1x1 convolution (the paper's Fig. 4 limit). If every rate is that large, there is
    no context branch left: an error. If only some are, a warning: the config may still
    evaluate on larger images than its training crop.

    Raises:
      ConfigError: naming `field`, the rates, the feature map and the input size.
    """
    sides = [math.ceil(side / output_stride) for side in image_size]
    useless = [rate for rate in rates if rate >= max(sides)]
    if not useless:
        return
    message = (f"ASPP rates {tuple(rates)} at output stride {output_stride} on {where} "
               f"{tuple(image_size)} (feature map {sides[0]}x{sides[1]}): rate(s) "
               f"{tuple(useless)} >= the feature map side {max(sides)}, so every non-centre "
               "tap reads padding and those branches act as 1x1 convolutions")
    if len(useless) == len(rates):
        raise ConfigError(message + f". Set {field} to rates below {max(sides)} (the paper's "
                         "(6, 12, 18) suit 513x513 crops at output stride 16), or train on "
                         "larger crops.")
    logging.warning("%s.", message)


class ASPP(nn.Module):
    """[B, h, w, C] features -> [B, h, w, channels].

    Attributes:
      atrous_rates: rates of the three 3x3 branches.
      channels: width of every branch and of the projection (256 in the paper).
      atrous_impl: how the 3x3 atrous branches run, one of atrous.ATROUS_IMPLS (same
        parameters, same function; see atrous.py).
      separable: DeepLabv3+'s depthwise-separable atrous branches (module docstring).
    """

    atrous_rates: Sequence[int]
    channels: int = 256
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5
    atrous_impl: str = "xla"
    separable: bool = False

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
            if self.separable:
                branches.append(separable_conv_bn_relu(
                    x, self.channels, rate=rate, name=name, norm=norm, dtype=self.dtype))
            else:
                branches.append(bn_relu(atrous_conv(rate=rate, name=name)(x), name))
        # Image-level features (Sec. 3.3): bilinear upsampling of a 1x1 map is a broadcast.
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = bn_relu(conv((1, 1), name="image_pool")(pooled), "image_pool")
        branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.channels,)))
        y = jnp.concatenate(branches, axis=-1)
        return bn_relu(conv((1, 1), name="project")(y), "project")


def separable_conv_bn_relu(x: jax.Array, features: int, *, rate: int, name: str, norm: Any,
                           dtype: Any) -> jax.Array:
    """Depthwise 3x3 (atrous) conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU, named
    `{name}_depthwise[_norm]` and `{name}_pointwise[_norm]` (DeepLabv3+'s
    `split_separable_conv2d`). Call it inside a compact method: it creates submodules there."""
    channels = x.shape[-1]
    y = nn.Conv(channels, (3, 3), kernel_dilation=rate, padding="SAME",
                feature_group_count=channels, use_bias=False, dtype=dtype,
                param_dtype=jnp.float32, name=f"{name}_depthwise")(x)
    y = nn.relu(norm(name=f"{name}_depthwise_norm")(y))
    y = nn.Conv(features, (1, 1), use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                name=f"{name}_pointwise")(y)
    return nn.relu(norm(name=f"{name}_pointwise_norm")(y))
