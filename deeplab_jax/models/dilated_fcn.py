"""The dilated FCN: the FCN head of torchvision and mmsegmentation on the atrous backbone.

A stack of 3x3 conv + BN + ReLU on the last block at output stride 8 (or 16), optionally
concatenated with its input and fused by one more 3x3 conv, dropout 0.1, then a 1x1 conv to
the classes. This is the "FCN" row of mmsegmentation's comparison: fcn_r50-d8, two 3x3
convs of 512 channels, `concat_input=True` (a 3x3 `conv_cat` over [input, convs]),
channel-wise dropout 0.1, auxiliary head weight 0.4 (open-mmlab/mmsegmentation,
mmseg/models/decode_heads/fcn_head.py L24-90 @5563185; configs/_base_/models/fcn_r50-d8.py
L26-50 @3f8d34e). With one conv of in/4 channels and no concatenation it is torchvision's
`FCNHead` (pytorch/vision, torchvision/models/segmentation/fcn.py L38-49 @aecbb15; element-
wise dropout there). `FCNHead` is also every model's auxiliary head on block3
(`segmenter.py`: one 3x3 conv of 256 channels, as mmsegmentation's `auxiliary_head`).
Dropout here is channel-wise (`nn.Dropout2d`'s, as mmsegmentation's decode heads).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (8, 16)  # dilated: the backbone keeps stride 8 (mmsegmentation's "d8")
AUX_LOSS_WEIGHT = 0.4  # mmsegmentation's fcn_r50-d8


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        channels=512,  # width of the 3x3 convs (mmsegmentation: 512)
        num_convs=2,  # 3x3 conv + BN + ReLU layers (mmsegmentation 2, torchvision 1)
        concat_input=True,  # concatenate the head's input and fuse with one more 3x3 conv
        dropout_rate=0.1,  # before the classifier
    ))


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DilatedFCN":
    block = model_config.dilated_fcn
    return DilatedFCN(num_classes=num_classes, channels=block.channels,
                      num_convs=block.num_convs, concat_input=block.concat_input,
                      dropout_rate=block.dropout_rate, **backbone_kwargs(model_config))


class FCNHead(nn.Module):
    """[B, h, w, C] normalised features -> [B, h, w, num_classes] logits (module docstring)."""

    num_classes: int
    channels: int = 512
    num_convs: int = 2
    concat_input: bool = True
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def conv_bn_relu(y, name):
            y = nn.Conv(self.channels, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                        param_dtype=jnp.float32, name=name)(y)
            y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"{name}_norm")(y)
            return nn.relu(y)

        y = x
        for index in range(self.num_convs):
            y = conv_bn_relu(y, f"conv{index + 1}")
        if self.concat_input:
            y = conv_bn_relu(jnp.concatenate([x, y.astype(x.dtype)], axis=-1), "conv_cat")
        y = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(y)
        return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                       name="logits")(y)


class DilatedFCN(ResNetSegmenter):
    """ResNet-v2 at output stride 8 or 16 + `FCNHead` (module docstring)."""

    channels: int = 512
    num_convs: int = 2
    concat_input: bool = True
    dropout_rate: float = 0.1

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        return FCNHead(self.num_classes, channels=self.channels, num_convs=self.num_convs,
                       concat_input=self.concat_input, dropout_rate=self.dropout_rate,
                       dtype=self.dtype, bn_momentum=self.bn_momentum,
                       bn_epsilon=self.bn_epsilon, name="fcn_head")(features["out"], train=train)
