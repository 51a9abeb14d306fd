"""DeepLabv3+ (Chen et al. 2018): DeepLabv3's ASPP, then a decoder at output stride 4.

Sec. 3.1 and Fig. 2: the ASPP output (as DeepLabv3's, without its classifier) is upsampled
to the stride-4 features, which first go through a 1x1 conv to 48 channels (BN, ReLU, so
they do not outweigh the encoder's 256); the two are concatenated and refined by two 3x3
convs of 256 (BN, ReLU) before the 1x1 classifier. With `separable=True` (the official
code's default for both `aspp_with_separable_conv` and `decoder_use_separable_conv`) the 3x3
convs of the ASPP's atrous branches and of the decoder are depthwise-separable
(`aspp.separable_conv_bn_relu`); the 1x1 branch, the image pooling and the projections stay
plain. As the official code, the ASPP output goes through dropout 0.1 in training.

References: tensorflow/models @dbeeb14, research/deeplab/model.py L441-536 (ASPP in
`extract_features`: the separable atrous branches, concat projection, dropout keep 0.9),
L618-758 (`refine_by_decoder`: the 48-channel `feature_projection`, resize, concat) and
L804-847 (two 3x3 `decoder_conv` of 256, separable by default); common.py L71, L96 (both
separable flags default True), L138 (256 filters); core/utils.py L38-84 @1d98467
(`split_separable_conv2d`: depthwise then pointwise; BN and ReLU come from the caller's
arg_scope, model.py L441-448, L693-700). mmsegmentation's version (sep_aspp_head.py L17-100
@0c87f7a, configs/_base_/models/deeplabv3plus_r50-d8.py L29-33 @3f8d34e) differs: 512
channels, a plain 3x3 bottleneck after its ASPP, output stride 8.

The stride-4 feature of our ResNet-v2 is the input of block1's last (striding) unit, where
the official code taps resnet_v1's 'block1/unit_2/bottleneck_v1/conv3'
(core/feature_extractor.py L380-400 @965cc3e; it has no resnet_v2 entry). Pre-activation
leaves it un-normalised, so it gets its own BN+ReLU before the 1x1 conv (`resnet.py`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import aspp, deeplabv3
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (8, 16, 32)  # the paper trains at 16 and evaluates at 16 or 8
AUX_LOSS_WEIGHT = 0.0  # the paper has none
DECODER_STRIDE = 4


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        atrous_rates=ml_collections.config_dict.placeholder(tuple),  # None: (6,12,18)*16/OS
        aspp_channels=256,  # every ASPP branch and the projection
        aspp_dropout_rate=0.1,  # after the ASPP projection, in training (official model.py)
        low_level_channels=48,  # the stride-4 features' 1x1 projection (Sec. 4.1)
        decoder_channels=256,  # the decoder's two 3x3 convs
        separable=True,  # depthwise-separable 3x3 convs in the ASPP and the decoder
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.deeplabv3plus
    if not block.atrous_rates:
        block.atrous_rates = aspp.default_atrous_rates(config.model.output_stride)
    if len(block.atrous_rates) != 3:
        raise ConfigError(f"config.model.deeplabv3plus.atrous_rates={tuple(block.atrous_rates)}: "
                          "ASPP takes three rates: give three, e.g. (6, 12, 18) at output "
                          "stride 16, or leave it unset to derive them from the stride.")
    deeplabv3.check_rates(config, "deeplabv3plus", eval_stride)


at_output_stride = deeplabv3.at_output_stride  # the rates scale with the stride, as v3's


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DeepLabV3Plus":
    block = model_config.deeplabv3plus
    return DeepLabV3Plus(
        num_classes=num_classes,
        atrous_rates=tuple(block.atrous_rates) if block.atrous_rates else None,
        aspp_channels=block.aspp_channels, aspp_dropout_rate=block.aspp_dropout_rate,
        low_level_channels=block.low_level_channels,
        decoder_channels=block.decoder_channels, separable=block.separable,
        **backbone_kwargs(model_config))


class DeepLabV3Plus(ResNetSegmenter):
    """ResNet-v2 + ASPP + the stride-4 decoder (module docstring)."""

    atrous_rates: Optional[Sequence[int]] = None
    aspp_channels: int = 256
    aspp_dropout_rate: float = 0.1
    low_level_channels: int = 48
    decoder_channels: int = 256
    separable: bool = True

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        rates = self.atrous_rates or aspp.default_atrous_rates(self.output_stride)
        x = aspp.ASPP(atrous_rates=tuple(rates), channels=self.aspp_channels, dtype=self.dtype,
                      bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                      atrous_impl=self.atrous_impl, separable=self.separable,
                      name="aspp")(features["out"], train=train)
        x = nn.Dropout(self.aspp_dropout_rate, deterministic=not train)(x)
        low = self.preactivate(features[f"stride{DECODER_STRIDE}"], "low_level_preact_norm",
                               train=train)
        low = self.conv_bn_relu(low, self.low_level_channels, 1, "low_level", train=train)
        y = jnp.concatenate([resize_bilinear(x, low.shape[1:3]), low], axis=-1)
        for index in range(2):
            name = f"decoder{index + 1}"
            if self.separable:
                y = aspp.separable_conv_bn_relu(
                    y, self.decoder_channels, rate=1, name=name, dtype=self.dtype,
                    norm=lambda **kwargs: self.norm(train, **kwargs))
            else:
                y = self.conv_bn_relu(y, self.decoder_channels, 3, name, train=train,
                                      padding="SAME")
        return self.classifier(y)
