"""A U-Net decoder over the ResNet-v2 stages: the encoder-decoder answer to atrous convolution.

The backbone runs un-dilated (output stride 32) and the decoder climbs back to
stride 4 the U-Net way (Ronneberger et al. 2015): at each stride the coarser map is
upsampled 2x (bilinear, aligned corners), concatenated with the backbone's feature at that
stride (un-normalised in a pre-activation ResNet, so it gets its own BN+ReLU, `resnet.py`),
and refined by two 3x3 conv + BN + ReLU; a 1x1 conv gives the classes at stride 4, upsampled
to the input. This is the shape of segmentation_models.pytorch's `Unet` over a ResNet
encoder (qubvel/segmentation_models.pytorch, segmentation_models_pytorch/decoders/unet/
decoder.py: `DecoderBlock`, upsample + concatenate + two `Conv2dReLU`), with its decoder
widths (256, 128, 64) for strides 16, 8, 4. With ImageNet weights the backbone loads as in
every ResNet-based model here.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (32,)  # the un-dilated backbone: the decoder reads strides 16, 8 and 4
AUX_LOSS_WEIGHT = 0.0
SKIP_STRIDES = (16, 8, 4)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        decoder_channels=(256, 128, 64),  # the decoder's widths at strides 16, 8 and 4
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride
    if len(config.model.unet_resnet.decoder_channels) != len(SKIP_STRIDES):
        raise ConfigError(f"config.model.unet_resnet.decoder_channels="
                          f"{tuple(config.model.unet_resnet.decoder_channels)} needs one width "
                          f"per skip stride {SKIP_STRIDES}: give {len(SKIP_STRIDES)}, e.g. "
                          "(256, 128, 64).")


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "UNetResNet":
    return UNetResNet(num_classes=num_classes,
                      decoder_channels=tuple(model_config.unet_resnet.decoder_channels),
                      **backbone_kwargs(model_config))


class UNetResNet(ResNetSegmenter):
    """ResNet-v2 + a U-Net decoder to stride 4 (module docstring)."""

    decoder_channels: Sequence[int] = (256, 128, 64)

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        x = features["out"]
        for stride, channels in zip(SKIP_STRIDES, self.decoder_channels):
            skip = self.preactivate(features[f"stride{stride}"], f"skip{stride}_preact_norm",
                                    train=train)
            x = jnp.concatenate([resize_bilinear(x, skip.shape[1:3]), skip], axis=-1)
            for index in (1, 2):
                x = self.conv_bn_relu(x, channels, 3, f"decoder{stride}_conv{index}",
                                      train=train, padding="SAME")
        return self.classifier(x)
