"""The dilated context module (Yu and Koltun 2016), on the atrous ResNet at output stride 8.

The basic context module (Sec. 3, Table 1): C-channel 3x3 convolutions at dilations
1, 1, 2, 4, 8, 16, 1, each followed by the truncation max(., 0), then a 1x1 convolution with
C channels; C is the number of classes, since the module refines class scores. Its
*identity initialisation* sets every 3x3 kernel to pass channel i to channel i at the centre
tap (zeros elsewhere) and the 1x1 to the identity, biases to zero, so that the module starts
as the identity on non-negative inputs and training only adds context to the scores.
Reference: fyu/dilation (the authors' Caffe code).

Two front ends (`front_end`):
- "resnet": as a head instead of ASPP: the ResNet-v2 features at output stride 8 (after
  the backbone's BN+ReLU), a 1x1 convolution to the class scores, then the module;
- "deeplabv3": stacked on DeepLabv3's logits (at feature resolution, before upsampling), as
  the paper stacks it on its own front end (its ASPP is set by this block's `atrous_rates`
  and `aspp_channels`); DeepLabv3's parameters keep their names. At initialisation the
  module passes DeepLabv3's logits through, truncated at 0 as every layer of the module does
  (the argmax is unchanged wherever some class scores above 0).

The cascade's rates are at output stride 8, as in the paper; at 16 they halve (a rate of 1
stays 1).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import aspp, deeplabv3
from deeplab_jax.models.segmenter import backbone_kwargs

OUTPUT_STRIDES = (8, 16)  # the paper's front end is at 8
AUX_LOSS_WEIGHT = 0.0
DILATIONS = (1, 1, 2, 4, 8, 16, 1)  # Table 1, "Dilation", layers 1-7 (then the 1x1)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        front_end="resnet",  # "resnet" (a head instead of ASPP) or "deeplabv3" (on its logits)
        dilations=DILATIONS,  # the 3x3 layers' dilations at output stride 8
        # front_end="deeplabv3" only: its ASPP (as config.model.deeplabv3's fields).
        atrous_rates=ml_collections.config_dict.placeholder(tuple),  # None: (6,12,18)*16/OS
        aspp_channels=256,
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.context_module
    if block.front_end not in ("resnet", "deeplabv3"):
        raise ConfigError(f"config.model.context_module.front_end={block.front_end!r} is not "
                          "'resnet' or 'deeplabv3'; set one of them, e.g. "
                          "--config.model.context_module.front_end=deeplabv3.")
    if block.front_end == "deeplabv3":
        if not block.atrous_rates:
            block.atrous_rates = aspp.default_atrous_rates(config.model.output_stride)
        deeplabv3.check_rates(config, "context_module", eval_stride)


def at_output_stride(block: ml_collections.ConfigDict, train_stride: int,
                     eval_stride: int) -> ml_collections.ConfigDict:
    """The ASPP rates of the DeepLabv3 front end scale with the stride (the cascade's
    dilations are rescaled in the model, from its output stride)."""
    if block.atrous_rates:
        block.atrous_rates = aspp.rescale_rates(block.atrous_rates, train_stride, eval_stride)
    return block


def identity_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """[kh, kw, C, C] kernel passing channel i to channel i at the centre tap."""
    del key
    kernel = np.zeros(shape, np.float32)
    kernel[shape[0] // 2, shape[1] // 2] = np.eye(shape[2], shape[3])
    return jnp.asarray(kernel, dtype)


class ContextModule(nn.Module):
    """[B, h, w, C] non-negative scores -> [B, h, w, C] (module docstring)."""

    channels: int
    dilations: Sequence[int] = DILATIONS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index, rate in enumerate(self.dilations, 1):
            x = nn.Conv(self.channels, (3, 3), kernel_dilation=rate, padding="SAME",
                        kernel_init=identity_init, dtype=self.dtype, param_dtype=jnp.float32,
                        name=f"layer{index}")(x)
            x = nn.relu(x)
        return nn.Conv(self.channels, (1, 1), kernel_init=identity_init, dtype=self.dtype,
                       param_dtype=jnp.float32, name="output")(x)


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    block = model_config.context_module
    if block.front_end == "deeplabv3":
        return DeepLabV3Context(
            num_classes=num_classes, dilations=tuple(block.dilations),
            atrous_rates=tuple(block.atrous_rates) if block.atrous_rates else None,
            aspp_channels=block.aspp_channels, **backbone_kwargs(model_config))
    return ResNetContext(num_classes=num_classes, dilations=tuple(block.dilations),
                         **backbone_kwargs(model_config))


def _rates(dilations: Sequence[int], output_stride: int) -> list[int]:
    return [max(1, rate * 8 // output_stride) for rate in dilations]


class ResNetContext(deeplabv3.ResNetSegmenter):
    """ResNet-v2 at OS8 + 1x1 to the class scores + the context module."""

    dilations: Sequence[int] = DILATIONS

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        scores = nn.relu(self.classifier(features["out"], name="front_end_logits"))
        return ContextModule(self.num_classes, _rates(self.dilations, self.output_stride),
                             dtype=self.dtype, name="context")(scores)


class DeepLabV3Context(deeplabv3.DeepLabV3):
    """DeepLabv3 (same parameter names) + the context module on its logits."""

    dilations: Sequence[int] = DILATIONS
    atrous_rates: Optional[Sequence[int]] = None

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        logits = super().head(features, train=train)
        return ContextModule(self.num_classes, _rates(self.dilations, self.output_stride),
                             dtype=self.dtype, name="context")(nn.relu(logits))
