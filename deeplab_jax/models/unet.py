"""U-Net (Ronneberger et al. 2015), the original encoder-decoder, trained from scratch.

Fig. 1 of the paper: five levels of two 3x3 convolutions (64, 128, 256, 512, 1024 channels),
2x2 max pooling between them; the decoder goes back up with 2x2 up-convolutions (transposed,
stride 2) that halve the channels, concatenates the encoder's features of the same level
(the skip connections), and applies two 3x3 convolutions per level; a 1x1 convolution gives
the classes. As most modern implementations (e.g. milesial/Pytorch-UNet, unet/unet_parts.py
`DoubleConv`), every 3x3 convolution is followed by BatchNorm and ReLU and is SAME-padded, so
the output has the input's size (the paper's convolutions are unpadded and its output is
smaller than its input).

Odd sizes: pooling rounds up (SAME), so a 65-pixel side becomes 33, then 17, 9, 5; each 2x
up-convolution then gives one pixel more than its skip has (10 for 9), and it is cropped to
the skip's size (bottom and right) before the concatenation. Milesial pads the skip side
instead (`F.pad` by diffY/diffX); cropping keeps every pixel of the skip, which is the input's
own resolution, and needs no padding values. Pixels go in at [0, 255] and are normalised to
[-1, 1] as in every model here.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.segmenter import compute_dtype, normalize_pixels

OUTPUT_STRIDES = (8, 16, 32)  # any: no backbone; config.model.output_stride is not used
RESNET_BACKBONE = False  # no ImageNet ResNet weights, no auxiliary head
AUX_LOSS_WEIGHT = 0.0  # no block3


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        channels=(64, 128, 256, 512, 1024),  # per level, the paper's
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride
    for field, why in (("aux_loss_weight", "has no block3 for an auxiliary head"),
                       ("pretrained_backbone", "is trained from scratch (no ResNet)")):
        if config.model[field]:
            raise ConfigError(f"config.model.{field}={config.model[field]!r}: U-Net {why}; "
                              + ("set it to 0." if field == "aux_loss_weight"
                                 else "leave it unset (None)."))


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "UNet":
    return UNet(num_classes=num_classes, channels=tuple(model_config.unet.channels),
                dtype=compute_dtype(model_config), bn_momentum=model_config.bn_momentum,
                bn_epsilon=model_config.bn_epsilon)


class UNet(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes]."""

    num_classes: int
    channels: Sequence[int] = (64, 128, 256, 512, 1024)
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    def double_conv(self, x: jax.Array, features: int, name: str, train: bool) -> jax.Array:
        for index in (1, 2):
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                        param_dtype=jnp.float32, name=f"{name}_conv{index}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"{name}_conv{index}_norm")(x)
            x = nn.relu(x)
        return x

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        x = normalize_pixels(images).astype(self.dtype)
        skips = []
        for level, features in enumerate(self.channels):
            if level:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            x = self.double_conv(x, features, f"down{level + 1}", train)
            skips.append(x)
        for level in range(len(self.channels) - 2, -1, -1):
            skip = skips[level]
            x = nn.ConvTranspose(self.channels[level], (2, 2), strides=(2, 2), dtype=self.dtype,
                                 param_dtype=jnp.float32, name=f"up{level + 1}_upconv")(x)
            x = x[:, :skip.shape[1], :skip.shape[2]]  # odd sizes: see the module docstring
            x = self.double_conv(jnp.concatenate([skip, x], axis=-1), self.channels[level],
                                 f"up{level + 1}", train)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                         name="logits")(x)
        return logits.astype(jnp.float32)
