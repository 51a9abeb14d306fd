"""DeepLabv3 (Chen et al. 2017): ResNet-v2 with atrous convolution, ASPP, a 1x1 classifier.

Sec. 3.3: ASPP with image-level features on the last block (`aspp.py`), then a 1x1 conv to
the classes, bilinearly upsampled to the input. The paper's rates are (6, 12, 18) at output
stride 16 and twice those at 8; `config.model.deeplabv3.atrous_rates` None derives them from
the stride. Reference implementation: tensorflow/models @dbeeb14,
research/deeplab/model.py L441-536 (`extract_features`: image pooling, the 1x1 and atrous
branches, the concat projection); the parameter names are ours (branches by position). The
official code also applies dropout 0.1 after the projection in training; the paper does
not mention it, and this model, whose figures are recorded, has none.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import aspp
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (8, 16, 32)
AUX_LOSS_WEIGHT = 0.0  # the paper trains without an auxiliary loss


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        atrous_rates=ml_collections.config_dict.placeholder(tuple),  # None: (6,12,18)*16/OS
        aspp_channels=256,  # every ASPP branch and the projection (Sec. 3.3)
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    """Fills in the rates at the training stride and checks them against the crops."""
    block = config.model.deeplabv3
    if not block.atrous_rates:
        block.atrous_rates = aspp.default_atrous_rates(config.model.output_stride)
    if len(block.atrous_rates) != 3:
        raise ConfigError(f"config.model.deeplabv3.atrous_rates={tuple(block.atrous_rates)}: "
                          "ASPP takes three rates: give three, e.g. (6, 12, 18) at output "
                          "stride 16, or leave it unset to derive them from the stride.")
    check_rates(config, "deeplabv3", eval_stride)


def check_rates(config: ml_collections.ConfigDict, name: str, eval_stride: int) -> None:
    """The rates of block `name` against the training crops and the evaluation canvases."""
    rates, train_stride = tuple(config.model[name].atrous_rates), config.model.output_stride
    field = f"config.model.{name}.atrous_rates"
    eval_rates = aspp.rescale_rates(rates, train_stride, eval_stride, field)
    aspp.check_rates_fit(rates, config.data.crop_size, train_stride, "training crops", field)
    aspp.check_rates_fit(eval_rates, config.data.canvas_size, eval_stride,
                         "evaluation canvases", field)


def at_output_stride(block: ml_collections.ConfigDict, train_stride: int,
                     eval_stride: int) -> ml_collections.ConfigDict:
    """The block for evaluation at another stride: the rates scale with it (Sec. 4.2)."""
    block.atrous_rates = aspp.rescale_rates(block.atrous_rates, train_stride, eval_stride)
    return block


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DeepLabV3":
    block = model_config.deeplabv3
    return DeepLabV3(num_classes=num_classes, aspp_channels=block.aspp_channels,
                     atrous_rates=tuple(block.atrous_rates) if block.atrous_rates else None,
                     **backbone_kwargs(model_config))


class DeepLabV3(ResNetSegmenter):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes].

    `train` switches BatchNorm between batch statistics (updated, needs
    mutable=['batch_stats']) and running averages; DeepLabv3 has no dropout, so a frozen-BN
    training stage (the paper's OS8 fine-tuning) applies the model with train=False.
    Intermediates for probing are sown into the 'intermediates' collection:
    backbone/block1..block4/output, aspp_output, logits_at_feature_resolution.
    """

    atrous_rates: Optional[Sequence[int]] = None  # None: derived from the output stride.
    aspp_channels: int = 256

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        rates = self.atrous_rates or aspp.default_atrous_rates(self.output_stride)
        x = aspp.ASPP(atrous_rates=tuple(rates), channels=self.aspp_channels, dtype=self.dtype,
                      bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                      atrous_impl=self.atrous_impl, name="aspp")(features["out"], train=train)
        self.sow("intermediates", "aspp_output", x)
        logits = self.classifier(x)
        self.sow("intermediates", "logits_at_feature_resolution", logits)
        return logits
