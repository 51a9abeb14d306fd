"""A per-pixel classifier: 1x1 convolutions only, so no pixel sees any other.

The control for the synthetic dataset, whose classes differ by shape alone: a model without
spatial context cannot beat predicting the majority class by much, and the gap to DeepLabv3
measures what context buys. Same interface as DeepLabV3; no backbone, so no pretrained
weights, no output stride and no auxiliary head.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.segmenter import compute_dtype, normalize_pixels

OUTPUT_STRIDES = (8, 16, 32)  # any: the model has none, and ignores config.model.output_stride
RESNET_BACKBONE = False  # no ImageNet ResNet weights, no auxiliary head
AUX_LOSS_WEIGHT = 0.0  # no block3 to put an auxiliary head on


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        width=64,  # channels of every 1x1 layer
        num_layers=4,  # 1x1 conv + BN + ReLU layers before the classifier
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride
    if config.model.aux_loss_weight:
        raise ConfigError(f"config.model.aux_loss_weight={config.model.aux_loss_weight}: the "
                          "per-pixel control has no backbone for an auxiliary head; set it to 0.")
    if config.model.pretrained_backbone:
        raise ConfigError(f"config.model.pretrained_backbone="
                          f"{config.model.pretrained_backbone!r}: the per-pixel control has no "
                          "ResNet backbone to load ImageNet weights into; leave it unset "
                          "(None).")


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "PerPixelClassifier":
    block = model_config.per_pixel
    return PerPixelClassifier(num_classes=num_classes, width=block.width,
                              num_layers=block.num_layers, dtype=compute_dtype(model_config),
                              bn_momentum=model_config.bn_momentum,
                              bn_epsilon=model_config.bn_epsilon)


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
