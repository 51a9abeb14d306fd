"""DeepLab v2's ASPP (Chen et al. 2017, TPAMI, Sec. 3.3 and Fig. 4): atrous branches summed.

ASPP-L for ResNet-101: four 3x3 convolutions (with bias) applied to the last block at rates
(6, 12, 18, 24) at output stride 8, each straight to the classes, their logits summed; no
BatchNorm, no image-level pooling, no 1x1 branch (those came with DeepLabv3). The
classifiers start from N(0, 0.01) weights and zero biases. The authors' Caffe prototxt
(`fc1_voc12_c0..c3`) is not in a public repository we could read; its two PyTorch ports
agree: kazuto1011/deeplab-pytorch @4219467, libs/models/deeplabv2.py L17-35 (`_ASPP`: 3x3
convs with bias, N(0, 0.01), zero bias, `sum` of the branches) with configs/voc12.yaml L33
(rates 6, 12, 18, 24), and isht7/pytorch-deeplab-resnet @ba81363, deeplab_resnet.py
L104-139 (`Classifier_Module`, summed). The dense CRF that v2 adds after the network is a
post-processing option of any model, not part of this head.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.models import aspp, deeplabv3
from deeplab_jax.models.atrous import AtrousConv
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (8, 16)  # the paper trains at 8; 16 halves the rates
AUX_LOSS_WEIGHT = 0.0  # the paper has none
PAPER_RATES_AT_OS8 = (6, 12, 18, 24)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        # None: (6, 12, 18, 24) at output stride 8, scaled with the stride (v2's ASPP-L).
        atrous_rates=ml_collections.config_dict.placeholder(tuple),
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.deeplabv2
    if not block.atrous_rates:
        block.atrous_rates = aspp.default_atrous_rates(
            config.model.output_stride, PAPER_RATES_AT_OS8, at_stride=8)
    deeplabv3.check_rates(config, "deeplabv2", eval_stride)


at_output_stride = deeplabv3.at_output_stride  # the rates scale with the stride, as v3's


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DeepLabV2":
    rates = model_config.deeplabv2.atrous_rates
    return DeepLabV2(num_classes=num_classes, atrous_rates=tuple(rates) if rates else None,
                     **backbone_kwargs(model_config))


class DeepLabV2(ResNetSegmenter):
    """ResNet-v2 + ASPP-L by sum (module docstring)."""

    atrous_rates: Optional[Sequence[int]] = None  # None: PAPER_RATES_AT_OS8 at this stride

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        rates = self.atrous_rates or aspp.default_atrous_rates(
            self.output_stride, PAPER_RATES_AT_OS8, at_stride=8)
        x = features["out"]
        logits = 0.0
        for index, rate in enumerate(rates):
            logits = logits + AtrousConv(
                self.num_classes, (3, 3), rate=rate, padding="SAME", use_bias=True,
                dtype=self.dtype, param_dtype=jnp.float32, impl=self.atrous_impl,
                kernel_init=nn.initializers.normal(0.01), name=f"branch{index}")(x)
        return logits
