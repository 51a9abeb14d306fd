"""The dilated context module (Yu and Koltun 2016), on the atrous ResNet or the paper's front end.

The basic context module (Sec. 3, Table 1): C-channel 3x3 convolutions at dilations
1, 1, 2, 4, 8, 16, 1, each followed by the truncation max(., 0), then a 1x1 convolution with
C channels; C is the number of classes, since the module refines class scores. Its
*identity initialisation* sets every 3x3 kernel to pass channel i to channel i at the centre
tap (zeros elsewhere) and the 1x1 to the identity, biases to zero, so that the module starts
as the identity on non-negative inputs and training only adds context to the scores.
Reference: fyu/dilation (the authors' Caffe code).

Three front ends (`front_end`):
- "resnet": as a head instead of ASPP: the ResNet-v2 features at output stride 8 (after
  the backbone's BN+ReLU), a 1x1 convolution to the class scores, then the module;
- "deeplabv3": stacked on DeepLabv3's logits (at feature resolution, before upsampling), as
  the paper stacks it on its own front end (its ASPP is set by this block's `atrous_rates`
  and `aspp_channels`); DeepLabv3's parameters keep their names. At initialisation the
  module passes DeepLabv3's logits through, truncated at 0 as every layer of the module does
  (the argmax is unchanged wherever some class scores above 0).
- "dilation": the paper's own model (Sec. 5: the module on the front end of Sec. 4): the
  module on the class scores of the Dilation front end (`dilation_frontend.py`,
  VGG-16, output stride 8 only), whose parameters carry exactly the names of the standalone
  `dilation_frontend` model (conv1_1 ... fc7, final), with `context` beside them, so a trained
  front end initialises this model by name, as the paper trains the front end first. The
  scores go into the module as the reference's do, without a ReLU before its first layer
  (fyu/dilation @0f10574, models/dilation8_pascal_voc_deploy.prototxt L314-L317: `ct_conv1_1`
  reads `fc-final`): at initialisation the output is the scores truncated at 0, as above. The
  front end's fields (`width_divisor`, `fc_channels`, `dropout_rate`) are in this block, as
  config.model.dilation_frontend's are in its; neither the auxiliary head nor the ResNet's
  ImageNet weights apply to it. The paper's second stage trains the module on the output of
  the trained front end at test time (fyu/dilation docs/training.md, "Context Module"): with
  the front end frozen, `dropout_rate=0` gives the module that same input.

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
from deeplab_jax.models import aspp, deeplabv3, dilation_frontend, vgg
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import backbone_kwargs

OUTPUT_STRIDES = (8, 16)  # the paper's front end is at 8 (front_end="dilation": 8 only)
AUX_LOSS_WEIGHT = 0.0
# RESNET_BACKBONE is the default (True): the registry asks it of the architecture, and the
# ResNet front ends are the default. front_end="dilation" is a VGG-16: `resolve` refuses the
# auxiliary head and the ResNet weights for it.
FRONT_ENDS = ("resnet", "deeplabv3", "dilation")
DILATIONS = (1, 1, 2, 4, 8, 16, 1)  # Table 1, "Dilation", layers 1-7 (then the 1x1)


def default_config() -> ml_collections.ConfigDict:
    frontend = dilation_frontend.default_config()
    return ml_collections.ConfigDict(dict(
        # "resnet" (a head instead of ASPP), "deeplabv3" (on its logits) or "dilation" (on the
        # Dilation front end's scores, the paper's model)
        front_end="resnet",
        dilations=DILATIONS,  # the 3x3 layers' dilations at output stride 8
        # front_end="deeplabv3" only: its ASPP (as config.model.deeplabv3's fields).
        atrous_rates=ml_collections.config_dict.placeholder(tuple),  # None: (6,12,18)*16/OS
        aspp_channels=256,
        # front_end="dilation" only: the front end (as config.model.dilation_frontend's fields).
        width_divisor=frontend.width_divisor,  # divides every VGG-16 width
        fc_channels=frontend.fc_channels,  # fc6 and fc7
        dropout_rate=frontend.dropout_rate,  # after fc6 and fc7, in training
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.context_module
    if block.front_end not in FRONT_ENDS:
        raise ConfigError(f"config.model.context_module.front_end={block.front_end!r} is not "
                          f"one of {FRONT_ENDS}; set one of them, e.g. "
                          "--config.model.context_module.front_end=deeplabv3.")
    if block.front_end == "dilation":
        for name, stride in (("model", config.model.output_stride), ("eval", eval_stride)):
            if stride not in dilation_frontend.OUTPUT_STRIDES:
                raise ConfigError(f"config.{name}.output_stride={stride}: the Dilation front end "
                                  "(config.model.context_module.front_end='dilation') runs at "
                                  f"output stride 8 only; set --config.{name}.output_stride=8.")
        vgg.check_config(config, "context_module",
                         "the context module on the Dilation front end")
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
    if block.front_end == "dilation":
        return DilationContext(num_classes=num_classes, dilations=tuple(block.dilations),
                               **dilation_frontend.build_kwargs(model_config, block))
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


class DilationContext(dilation_frontend.DilationFrontEnd):
    """The Dilation front end (the standalone model's parameter names) + the context module
    on its stride-8 class scores, then the bilinear upsampling."""

    dilations: Sequence[int] = DILATIONS

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        scores = self.class_scores(images, train=train)
        refined = ContextModule(self.num_classes, tuple(self.dilations), dtype=self.dtype,
                                name="context")(scores)
        return resize_bilinear(refined.astype(jnp.float32), images.shape[1:3])
