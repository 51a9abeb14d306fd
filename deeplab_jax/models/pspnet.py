"""PSPNet (Zhao et al. 2017): the pyramid pooling module on the dilated ResNet.

Sec. 3.3 and Fig. 3: the last block's features are average-pooled into 1x1, 2x2, 3x3 and
6x6 bins; each pooled map goes through a 1x1 conv to a quarter of the channels (BN, ReLU)
and is upsampled back; the four are concatenated with the features, fused by a 3x3 conv
(512, BN, ReLU), channel-wise dropout 0.1, and classified by a 1x1 conv. Trained with the
auxiliary FCN head on block3 at weight 0.4 (Sec. 3.4; `segmenter.py`). References: the
authors' PyTorch code, hszhao/semseg @4f274c3, model/pspnet.py L8-26 (`PPM`: adaptive
average pooling, 1x1 conv without bias to 2048/4 channels, BN, ReLU, aligned-corners
upsampling, concatenation), L62-78 (`cls`: 3x3 conv 512, BN, ReLU, Dropout2d(0.1), 1x1; the
`aux` head), tool/train.py L272 and config/cityscapes/cityscapes_pspnet50.yaml L19 (aux
weight 0.4); and open-mmlab/mmsegmentation, mmseg/models/decode_heads/psp_head.py L11-116
@5563185 and configs/_base_/models/pspnet_r50-d8.py L15-49 @3f8d34e (output stride 8,
aux weight 0.4).

The bins are PyTorch's adaptive average pooling bins (`adaptive_pool_matrix`): bin i of n
over a side of length L covers [floor(i L / n), ceil((i + 1) L / n)), so on a 45x60 map the
3x3 and 6x6 bins overlap by a row or column where n does not divide L, exactly as
`torch.nn.AdaptiveAvgPool2d` (pytorch/pytorch, aten/src/ATen/native/AdaptivePooling.h
L21-27 @048e6c5: `start_index`, `end_index`). Upsampling is bilinear with aligned corners, as the authors'
code (`F.interpolate(..., align_corners=True)`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (8, 16, 32)  # the paper and mmsegmentation train at 8 ("d8")
AUX_LOSS_WEIGHT = 0.4  # Sec. 3.4; mmsegmentation's pspnet_r50-d8


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        bins=(1, 2, 3, 6),  # pyramid levels: n x n average-pooling bins (Sec. 3.3)
        # Each level's 1x1 conv; None: a quarter of the input channels (2048 / 4 = 512).
        bin_channels=ml_collections.config_dict.placeholder(int),
        channels=512,  # the 3x3 fusion conv
        dropout_rate=0.1,  # before the classifier
    ))


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "PSPNet":
    block = model_config.pspnet
    return PSPNet(num_classes=num_classes, bins=tuple(block.bins),
                  bin_channels=block.bin_channels, channels=block.channels,
                  dropout_rate=block.dropout_rate, **backbone_kwargs(model_config))


def adaptive_pool_matrix(size: int, bins: int) -> np.ndarray:
    """[bins, size] averaging weights of PyTorch's adaptive average pooling along one axis."""
    matrix = np.zeros((bins, size), np.float32)
    for index in range(bins):
        start = math.floor(index * size / bins)
        end = math.ceil((index + 1) * size / bins)
        matrix[index, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jax.Array, bins: int) -> jax.Array:
    """[B, H, W, C] -> [B, bins, bins, C], `torch.nn.AdaptiveAvgPool2d(bins)`'s bins."""
    rows = jnp.asarray(adaptive_pool_matrix(x.shape[1], bins), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(x.shape[2], bins), x.dtype)
    return jnp.einsum("wW,bhWc->bhwc", cols, jnp.einsum("hH,bHWc->bhWc", rows, x))


class PSPNet(ResNetSegmenter):
    """ResNet-v2 + the pyramid pooling module (module docstring)."""

    bins: Sequence[int] = (1, 2, 3, 6)
    bin_channels: Optional[int] = None
    channels: int = 512
    dropout_rate: float = 0.1

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        x = features["out"]
        bin_channels = self.bin_channels or x.shape[-1] // 4
        levels = [x]
        for bins in self.bins:
            pooled = self.conv_bn_relu(adaptive_avg_pool(x, bins), bin_channels, 1,
                                       f"pool{bins}", train=train)
            levels.append(resize_bilinear(pooled, x.shape[1:3]))
        y = self.conv_bn_relu(jnp.concatenate(levels, axis=-1), self.channels, 3, "fuse",
                              train=train, padding="SAME")
        y = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(y)
        return self.classifier(y)
