"""DeepLabv3's other model (Chen et al. 2017, Sec. 3.2): atrous blocks in cascade.

"Going deeper with atrous convolution": block4 is copied as block5, block6 and block7 and
the copies are stacked after it (`num_cascaded_blocks` 0-3: block4 alone up to block7).
Every block but the last strides on its last unit, so without atrous convolution block7's
output is at stride 256; a smaller output stride turns the later strides into atrous rates
(`resnet.strides_and_rates`), and the Multi-Grid unit rates (r1, r2, r3) multiply every
block's rate from block4 on (at OS16 with (1, 2, 4), block4's rates are 2 x (1, 2, 4) and
block7's 16 x (1, 2, 4)). The head is a 1x1 classifier on the last block (Tables 1-3: the
cascade without ASPP); `aspp=True` puts DeepLabv3's ASPP between them, the combination the
paper reports did not improve. No reference implementation ships this model
(tensorflow/models research/deeplab, mmsegmentation and torchvision have ASPP only); the
blocks are the backbone's own units (`resnet.py`), named block5..block7 beside block1..4.

ImageNet weights (TF-slim's resnet_v2 has block1-4 only) load into block1-4; blocks 5-7
start random (`cascade_init="random"`, the default) or as copies of the loaded block4
(`"block4"`: every array of block4 whose shape fits; a copy's first unit reads block4's
output, twice as deep as the block3 output block4 reads, so its `preact_norm` and `conv1`
keep their initialisation, and it has no projection shortcut). The paper does not say which; its training code initialises from a checkpoint
with `ignore_missing_vars=True` (tensorflow/models research/deeplab/train.py, through
utils/train_utils.py `get_model_init_fn`), which leaves variables absent from the ImageNet
checkpoint at their random initialisation: random is what that pipeline does.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import aspp, deeplabv3
from deeplab_jax.models.resnet import MAX_CASCADED_BLOCKS, valid_output_strides
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = valid_output_strides(MAX_CASCADED_BLOCKS)  # 8 ... 256, by the cascade depth
AUX_LOSS_WEIGHT = 0.0  # the paper trains without an auxiliary loss
CASCADE_INITS = ("random", "block4")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        num_cascaded_blocks=3,  # copies of block4 after it: 0 (block4) .. 3 (block7)
        aspp=False,  # DeepLabv3's ASPP on the last block (the paper's combination)
        # With aspp=True, as config.model.deeplabv3's fields:
        atrous_rates=ml_collections.config_dict.placeholder(tuple),  # None: (6,12,18)*16/OS
        aspp_channels=256,
        # With an ImageNet backbone: blocks 5-7 start "random" or as copies of "block4".
        cascade_init="random",
    ))


def num_cascaded_blocks(model_config: ml_collections.ConfigDict) -> int:
    """How many copies of block4 the backbone has (config_lib checks strides with it)."""
    return int(model_config.deeplabv3_cascade.num_cascaded_blocks)


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.deeplabv3_cascade
    if not 0 <= block.num_cascaded_blocks <= MAX_CASCADED_BLOCKS:
        raise ConfigError(f"config.model.deeplabv3_cascade.num_cascaded_blocks="
                          f"{block.num_cascaded_blocks} is not in 0..{MAX_CASCADED_BLOCKS} "
                          "(0: block4 alone; 3: block4 to block7); set one of them.")
    if block.cascade_init not in CASCADE_INITS:
        raise ConfigError(f"config.model.deeplabv3_cascade.cascade_init={block.cascade_init!r} "
                          f"is not one of {CASCADE_INITS}; set one of them.")
    if block.cascade_init != "random" and not config.model.pretrained_backbone:
        raise ConfigError("config.model.deeplabv3_cascade.cascade_init='block4' copies the "
                          "ImageNet block4 into blocks 5-7: it needs "
                          "config.model.pretrained_backbone (a resnet_v2 .npz or slim "
                          "checkpoint), or set --config.model.deeplabv3_cascade.cascade_init="
                          "random.")
    if block.aspp:
        if not block.atrous_rates:
            block.atrous_rates = aspp.default_atrous_rates(config.model.output_stride)
        if len(block.atrous_rates) != 3 or min(block.atrous_rates) < 1:
            raise ConfigError(f"config.model.deeplabv3_cascade.atrous_rates="
                              f"{tuple(block.atrous_rates)}: ASPP takes three rates >= 1 (at "
                              f"output stride {config.model.output_stride} give them "
                              "explicitly: the paper's (6, 12, 18) are at 16).")
        deeplabv3.check_rates(config, "deeplabv3_cascade", eval_stride)


def at_output_stride(block: ml_collections.ConfigDict, train_stride: int,
                     eval_stride: int) -> ml_collections.ConfigDict:
    """With ASPP, its rates scale with the stride (Sec. 4.2); the cascade's own rates come
    from the stride itself."""
    if block.aspp and block.atrous_rates:
        block.atrous_rates = aspp.rescale_rates(block.atrous_rates, train_stride, eval_stride)
    return block


def pretrained_options(model_config: ml_collections.ConfigDict) -> dict:
    """How `pretrained.load_backbone` fills the blocks the ImageNet checkpoint lacks."""
    return {"copy_block4_to_cascade": model_config.deeplabv3_cascade.cascade_init == "block4"}


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DeepLabV3Cascade":
    block = model_config.deeplabv3_cascade
    return DeepLabV3Cascade(
        num_classes=num_classes, num_cascaded_blocks=block.num_cascaded_blocks,
        aspp=block.aspp, aspp_channels=block.aspp_channels,
        atrous_rates=tuple(block.atrous_rates) if block.atrous_rates else None,
        **backbone_kwargs(model_config))


class DeepLabV3Cascade(ResNetSegmenter):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes].

    Parameters: `backbone` (block1..block4, then block5..block7 as the cascade depth asks),
    `logits` and, with ASPP, `aspp` (DeepLabv3's names). Intermediates sown for probing:
    backbone/blockN/output, aspp_output (with ASPP), logits_at_feature_resolution.
    """

    aspp: bool = False
    atrous_rates: Optional[Sequence[int]] = None
    aspp_channels: int = 256

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        x = features["out"]
        if self.aspp:
            rates = self.atrous_rates or aspp.default_atrous_rates(self.output_stride)
            x = aspp.ASPP(atrous_rates=tuple(rates), channels=self.aspp_channels,
                          dtype=self.dtype, bn_momentum=self.bn_momentum,
                          bn_epsilon=self.bn_epsilon, atrous_impl=self.atrous_impl,
                          name="aspp")(x, train=train)
            self.sow("intermediates", "aspp_output", x)
        logits = self.classifier(x)
        self.sow("intermediates", "logits_at_feature_resolution", logits)
        return logits
