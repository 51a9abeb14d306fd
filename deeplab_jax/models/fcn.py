"""FCN-32s, FCN-16s and FCN-8s (Long et al. 2015): score layers on three strides, summed.

The original skip architecture on the un-dilated backbone, at output stride 32: a 1x1
"score" conv to the classes on the last block (stride 32); FCN-16s adds a score layer on the
stride-16 feature and sums it with the stride-32 scores upsampled 2x; FCN-8s does the same
again at stride 8 (the paper's Sec. 4.2 and Fig. 3). On VGG16 the three taps are pool5
(after fc6/fc7), pool4 and pool3; on our ResNet-v2 they are the final features (after the
backbone's BN+ReLU) and the last activations at strides 16 and 8 (`resnet.py`: inputs of
block3's and block2's striding units), each given its own BN+ReLU.

Reference code: shelhamer/fcn.berkeleyvision.org @1305c73, voc-fcn8s/net.py L56-83 (score
layers, `upscore2`, `score_pool4`, `score_pool3`, the sums) and voc-fcn32s/net.py L58-62.
Its upsampling deconvolutions are bilinear (surgery.py L33-59) and frozen (`lr_mult=0`,
net.py L58-61), so they are fixed bilinear interpolation, as here (with aligned corners, the
convention of every model in this codebase, which needs no crop offsets). Its new score
layers have no weight filler, so they start at zero: the skip score layers do here too,
and FCN-8s starts as the model without them, then learns what the finer strides add.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (32,)  # FCN-8s needs distinct stride-8, 16 and 32 features
AUX_LOSS_WEIGHT = 0.0  # the paper has none
VARIANTS = {"32s": (), "16s": (16,), "8s": (16, 8)}  # the skip strides, coarse to fine


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        variant="8s",  # "32s", "16s" or "8s": which strides add score layers
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    variant = config.model.fcn.variant
    if variant not in VARIANTS:
        raise ConfigError(f"config.model.fcn.variant={variant!r} is not one of "
                          f"{sorted(VARIANTS)}; set one of them (8s is the finest).")
    for name, stride in (("model", config.model.output_stride), ("eval", eval_stride)):
        if stride != 32:
            raise ConfigError(
                f"config.{name}.output_stride={stride}: FCN-{variant} is the skip architecture on "
                "the un-dilated backbone, so it needs output stride 32 (FCN-8s reads distinct "
                "stride-8, 16 and 32 features). Set config.model.output_stride=32, or use "
                "config.model.architecture='dilated_fcn' for the FCN head at stride 8 or 16.")


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "FCN":
    return FCN(num_classes=num_classes, variant=model_config.fcn.variant,
               **backbone_kwargs(model_config))


class FCN(ResNetSegmenter):
    """The skip architecture (module docstring); `variant` is "32s", "16s" or "8s"."""

    variant: str = "8s"

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        scores = self.classifier(features["out"], name="score32")
        for stride in VARIANTS[self.variant]:
            tap = self.preactivate(features[f"stride{stride}"], f"stride{stride}_preact_norm",
                                   train=train)
            skip = self.classifier(tap, name=f"score{stride}",
                                   kernel_init=nn.initializers.zeros)
            scores = resize_bilinear(scores, skip.shape[1:3]) + skip
        return scores
