"""SegNet (Badrinarayanan et al. 2017): an encoder whose pooling indices drive the decoder.

The encoder is VGG16-BN's 13 convolutions (3x3, BN, ReLU; blocks of 2, 2, 3, 3, 3 with 64,
128, 256, 512, 512 channels), each block ending in 2x2 max pooling that remembers where
each maximum was. The decoder mirrors it: each block starts by *unpooling* with the indices
of its encoder block (every value goes back to the position its maximum came from, zeros
elsewhere: `max_unpool`), then 3x3 convolutions (BN, ReLU) that densify the sparse map; the
last one, to the classes, has no BN or ReLU. SegNet-Basic (`variant="basic"`) is the
paper's smaller model: four encoder layers of 64 channels with 7x7 convolutions, BN, ReLU
and pooling, four decoder layers of 7x7 convolutions and BN after unpooling, a 1x1
classifier. Both train from scratch here (the paper's encoder starts from VGG16 on
ImageNet, which this codebase does not import). Reference: alexgkendall/SegNet-Tutorial,
Models/segnet_train.prototxt and Models/segnet_basic_train.prototxt.

Both encoders are `vgg.VGG16`, the VGG-16 that DeepLab v1 and the Dilation front end share:
with BN, 2x2 pooling that returns its argmax, SegNet's names (`encoder{group}_conv{index}`),
SegNet-Basic's as four groups of one 7x7 layer. Its layers sit at the top of SegNet's
parameter tree beside the decoder's, so the parameter names, shapes, initial values and
outputs are those SegNet had before it shared the encoder (tests/test_vgg_models.py keeps
that earlier code and compares).

Odd sizes: pooling covers the map with 2x2 windows rounding up (the last row or column of an
odd side is a window of its own, padded with the lowest value, so it never wins against a
real one): 360x480 pools to 180x240, 90x120, 45x60, then 23x30 and 12x15. Unpooling returns
to the pre-pool size exactly (23x30 -> 45x60), as the reference's `upsample` layers do
with their explicit `upsample_h`/`upsample_w`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import vgg
from deeplab_jax.models.segmenter import compute_dtype, normalize_pixels
from deeplab_jax.models.vgg import max_pool_with_argmax  # noqa: F401  (its pooling, re-exported)

OUTPUT_STRIDES = (8, 16, 32)  # any: no ResNet backbone; config.model.output_stride unused
RESNET_BACKBONE = False  # no ImageNet ResNet weights, no auxiliary head
AUX_LOSS_WEIGHT = 0.0
VGG16_BLOCKS = vgg.VGG16_WIDTHS
BASIC_BLOCKS = ((64,), (64,), (64,), (64,))
VARIANTS = {"vgg16_bn": (VGG16_BLOCKS, 3), "basic": (BASIC_BLOCKS, 7)}


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        variant="vgg16_bn",  # "vgg16_bn" (SegNet) or "basic" (SegNet-Basic)
        width_divisor=1,  # divides every width (a smaller SegNet for CPU runs)
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride
    block = config.model.segnet
    if block.variant not in VARIANTS:
        raise ConfigError(f"config.model.segnet.variant={block.variant!r} is not one of "
                          f"{sorted(VARIANTS)}; set one of them.")
    for field, why in (("aux_loss_weight", "has no block3 for an auxiliary head"),
                       ("pretrained_backbone", "has a VGG encoder, not a ResNet")):
        if config.model[field]:
            raise ConfigError(f"config.model.{field}={config.model[field]!r}: SegNet {why}; "
                              + ("set it to 0." if field == "aux_loss_weight"
                                 else "leave it unset (None)."))


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "SegNet":
    blocks, kernel = VARIANTS[model_config.segnet.variant]
    divisor = model_config.segnet.width_divisor
    return SegNet(num_classes=num_classes, kernel_size=kernel,
                  blocks=vgg.divide_widths(blocks, divisor),
                  basic=model_config.segnet.variant == "basic",
                  dtype=compute_dtype(model_config), bn_momentum=model_config.bn_momentum,
                  bn_epsilon=model_config.bn_epsilon)


def max_unpool(x: jax.Array, argmax: jax.Array, size: Sequence[int]) -> jax.Array:
    """Puts each value of `x` at its maximum's place in a 2x2 window, zeros elsewhere.

    Args:
      x: [B, h, w, C]; argmax: [B, h, w, C] from `vgg.max_pool_with_argmax`; size: the (H, W)
        before pooling, h = ceil(H / 2).

    Returns:
      [B, H, W, C].
    """
    batch, height, width, channels = x.shape
    placed = jax.nn.one_hot(argmax, 4, dtype=x.dtype) * x[..., None]  # [B, h, w, C, 4]
    placed = placed.reshape(batch, height, width, channels, 2, 2)
    up = placed.transpose(0, 1, 4, 2, 5, 3).reshape(batch, 2 * height, 2 * width, channels)
    return up[:, :size[0], :size[1]]


class SegNet(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes]."""

    num_classes: int
    blocks: Sequence[Sequence[int]] = VGG16_BLOCKS
    kernel_size: int = 3
    basic: bool = False  # SegNet-Basic: no ReLU in the decoder, a 1x1 classifier
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    def conv_bn(self, x, features, name, train, relu=True):
        x = nn.Conv(features, (self.kernel_size,) * 2, padding="SAME", use_bias=False,
                    dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                         name=f"{name}_norm")(x)
        return nn.relu(x) if relu else x

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        x = normalize_pixels(images).astype(self.dtype)
        # Flax's default (LeCun) initialiser, as SegNet always had: its BN makes the scale moot.
        encoder = vgg.VGG16(widths=self.blocks, kernel_size=self.kernel_size, batch_norm=True,
                            pool_argmax=True, layer_name="encoder{group}_conv{index}",
                            kernel_init=nn.linear.default_kernel_init, dtype=self.dtype,
                            bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        nn.share_scope(self, encoder)  # its layers beside the decoder's, as they always were
        x, pools = encoder(x, train=train)
        for level in range(len(self.blocks), 0, -1):
            argmax, size = pools[level - 1]
            x = max_unpool(x, argmax, size)
            # The mirror of the encoder block: its widths in reverse, ending in the width of
            # the block below (the classes for the first block, where the classifier is).
            widths = list(reversed(self.blocks[level - 1]))
            outputs = widths[1:] + [self.blocks[level - 2][-1] if level > 1 else None]
            for index, features in enumerate(outputs, 1):
                name = f"decoder{level}_conv{index}"
                if features is None:  # the last convolution: to the classes
                    if self.basic:
                        x = self.conv_bn(x, widths[-1], name, train, relu=False)
                    else:
                        x = nn.Conv(self.num_classes, (self.kernel_size,) * 2, padding="SAME",
                                    dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
                else:
                    x = self.conv_bn(x, features, name, train, relu=not self.basic)
        if self.basic:
            x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                        name="logits")(x)
        return x.astype(jnp.float32)
