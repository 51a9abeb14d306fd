"""RefineNet (Lin et al., CVPR 2017): four cascaded RefineNet blocks over the un-dilated ResNet.

The 4-cascaded RefineNet (Sec. 3.1, multi-path refinement): the backbone runs without atrous
convolution (output stride 32), and RefineNet-4 (stride 32) to RefineNet-1 (stride 4) each read
the backbone's feature at their stride; every block but RefineNet-4 also reads the output of
the coarser block before it. A RefineNet block (Sec. 3.2), on each input path:
- residual conv units (RCU: ReLU, 3x3 conv, ReLU, 3x3 conv, plus the identity; the original
  ResNet unit without its BN), two per path, at the path's width: 512 for RefineNet-4 and 256
  for the others in the paper (`channels`);
- multi-resolution fusion: a 3x3 conv per path to the block's width, the coarser path
  upsampled to the finer one's size, the two summed (RefineNet-4 has one path: no fusion);
- chained residual pooling (CRP): a ReLU, then a chain of {5x5 max pool with stride 1, 3x3
  conv}, each block pooling the previous block's output, every output added to the sum;
- one output RCU.
Two more RCUs follow RefineNet-1, before the prediction (the paper's output convolutions,
Sec. 3.2), then dropout and the classifier at stride 4; the logits are upsampled to the
image (`segmenter.py`).

Reference: the authors' MatConvNet code, guosheng/refinenet (files @2c62eaf unless noted):
- main/gen_net_opts_model_type1.m @1754efe (`gen_featnet_config_resnet_custom`: input widths
  [512 256 256 256]; `gen_refine_config_basic`: 2 chained pooling blocks, "set the pooling
  number to 2 or 4", pool size 5, `adapt_conv_num=2` RCUs per backbone path,
  `refine_block_conv_num_mainflow=3` RCUs after each CRP);
- main/gen_network_refine_group.m (`add_stage_adapt_block`: a 3x3 conv from the backbone
  stage to the block's width, then its RCUs; `do_gen_refinenet_joint`: a 3x3 conv per path to
  the smallest input width, the sum, then CRP and the RCUs);
- main/My_net_util.m (`add_res_conv_block`: ReLU, 3x3 conv with bias, ReLU, 3x3 conv without
  bias, sum; `add_dim_reduce_layer`: every other conv is 3x3 without bias; no BN anywhere);
- main/gen_network_pool_block.m (`do_gen_block`, the "original implementation": ReLU, then
  pool-then-conv blocks, all summed; the file's default `do_gen_block_convbeforepool`,
  "improved version", convolves before pooling);
- main/My_sum_layer.m (fusion: the smaller maps resized to the largest, then summed);
- main/gen_network_featnet_resnet.m @8770eae (`add_init_net_dropout`: dropout on the
  backbone stages wider than 512 channels, i.e. strides 32 and 16) and
  main/gen_network_loss_group.m (dropout 0.5, then a 3x3 conv with bias to the classes).
DrSleep/refinenet-pytorch @65541db, models/resnet.py (`RefineNet.forward`) and
utils/layer_factory.py (`CRPBlock`: pool then conv; `RCUBlock`), the PyTorch port of the
released models, shows the same network with 4 CRP blocks (the released VOC model), dropout
0.5 on layer4, layer3 and before the classifier, and aligned-corners bilinear upsampling.

Where the reference code puts the RCUs: its blocks end in 3 RCUs and its coarser path has no
RCU in the next block; the paper counts 1 output RCU, then 2 on each input path of the next
block (three RCUs between blocks, Sec. 3.2). The two are the same function with
the same parameters; the parameters here are grouped the paper's way (`output_rcu`, then
`coarser_rcu1`, `coarser_rcu2` of the next block; `final_rcu1`, `final_rcu2` after RefineNet-1).

Our backbone is a pre-activation ResNet-v2: its stage outputs (`features['stride16']` etc.)
are un-normalised sums, whose scale grows with depth, where the reference's post-activation
ResNet-v1 hands over BN+ReLU'd activations; and the head has no BN of its own to absorb the
difference. So each tapped stage gets its own BN+ReLU (`strideN_preact_norm`, what the next
unit's `preact_norm` would apply: `segmenter.preactivate`), as in `unet_resnet.py` and
`fcn.py`, and the stride-32 path reads `features['out']`, already through the backbone's
`postnorm`. The backbone's parameters stay exactly TF-slim's, so ImageNet weights load.

Initialisation: the reference draws every head conv from N(0, 0.01^2)
(`My_net_util.add_conv_layer_dagnn`, `gen_network_loss_group.m`); here every conv of the head
and the classifier draws from N(0, 0.2304 / fan_in), which is exactly that on the 3x3
256-channel convs that make most of the paper's head (0.2304 = 0.01^2 * 3 * 3 * 256), with
the same gain at any width. flax's default (LeCun normal, gain 1), which the other heads use
before their BN, blows up here: the head has no BN, and every block adds residuals (RCUs, the
CRP's sum, the fusion's sum), so block outputs grew 2.3x per block and the logits started at
std 22 (CPU widths: depth-14 width-16 backbone, channels (64, 32, 32, 32)) and 24 (the
paper's widths), in training mode on random 90x120 / 65x97 images; the reference's literal
init gives 0.10 at the paper's widths, this one 0.11 at the CPU widths and 0.12 at the paper's.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (32,)  # the un-dilated backbone: distinct features at strides 32, 16, 8, 4
AUX_LOSS_WEIGHT = 0.0  # the paper and the reference code have none
BLOCK_STRIDES = (32, 16, 8, 4)  # RefineNet-4 .. RefineNet-1: the backbone stride each reads
RCUS_PER_PATH = 2  # Sec. 3.2; reference `adapt_conv_num=2`
FINAL_RCUS = 2  # after RefineNet-1, before the classifier (Sec. 3.2, output convolutions)
CRP_POOL_SIZE = 5  # 5x5 max pooling, stride 1 (reference `chained_pool_size=5`)
# Backbone strides whose features go through dropout: the reference drops the stages wider
# than 512 channels (`add_init_net_dropout`), ResNet's 2048 (stride 32) and 1024 (stride 16).
DROPOUT_STRIDES = (32, 16)
# N(0, 0.2304 / fan_in): the reference's N(0, 0.01^2) at fan-in 3 * 3 * 256 (module docstring).
HEAD_KERNEL_INIT = nn.initializers.variance_scaling(0.01**2 * 3 * 3 * 256, "fan_in", "normal")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        # Widths of RefineNet-4, -3, -2, -1 (strides 32, 16, 8, 4): each block's input paths,
        # fusion, CRP and output RCU (the paper's 512 then 256).
        channels=(512, 256, 256, 256),
        # {max pool, conv} blocks per chained residual pooling: 2 is the reference code's
        # default, 4 its released models'; 0: no CRP, nor its ReLU (`use_chained_pool=false`).
        crp_blocks=2,
        dropout_rate=0.5,  # on the stride-32 and 16 features and before the classifier
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    """Checks the block and the strides; derives nothing."""
    block = config.model.refinenet
    channels = tuple(block.channels)
    if len(channels) != len(BLOCK_STRIDES) or not all(
            isinstance(width, int) and width >= 1 for width in channels):
        raise ConfigError(f"config.model.refinenet.channels={channels} needs one positive "
                          f"width per RefineNet block (strides {BLOCK_STRIDES}, RefineNet-4 "
                          "first): give 4, e.g. (512, 256, 256, 256), the paper's.")
    if not isinstance(block.crp_blocks, int) or block.crp_blocks < 0:
        raise ConfigError(f"config.model.refinenet.crp_blocks={block.crp_blocks!r} must be a "
                          "whole number >= 0 (pooling blocks per chained residual pooling): "
                          "set 2 (the reference code's default), 4 (its released models) or "
                          "0 (no pooling).")
    if not 0.0 <= block.dropout_rate < 1.0:
        raise ConfigError(f"config.model.refinenet.dropout_rate={block.dropout_rate} must be "
                          "in [0, 1): set 0.5 (the reference code's) or 0 for no dropout.")
    for name, stride in (("model", config.model.output_stride), ("eval", eval_stride)):
        if stride not in OUTPUT_STRIDES:
            raise ConfigError(
                f"config.{name}.output_stride={stride}: RefineNet refines the un-dilated "
                "backbone's distinct stride-32, 16, 8 and 4 features, so it needs output "
                "stride 32. Set config.model.output_stride=32 (and leave config.eval."
                "output_stride unset), or use a dilated model such as "
                "config.model.architecture='deeplabv3' for stride 8 or 16.")


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "RefineNet":
    block = model_config.refinenet
    return RefineNet(num_classes=num_classes, channels=tuple(block.channels),
                     crp_blocks=block.crp_blocks, dropout_rate=block.dropout_rate,
                     **backbone_kwargs(model_config))


def conv3x3(features: int, name: str, dtype: Any, use_bias: bool = False) -> nn.Conv:
    """The reference's only kernel size: 3x3, size-preserving, float32 parameters, the
    reference's initial scale (`HEAD_KERNEL_INIT`)."""
    return nn.Conv(features, (3, 3), padding="SAME", use_bias=use_bias, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=HEAD_KERNEL_INIT, name=name)


class ResidualConvUnit(nn.Module):
    """RCU (Sec. 3.2): x + conv2(relu(conv1(relu(x)))) at x's width; conv1 has a bias,
    conv2 none (reference `add_res_conv_block`)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        y = conv3x3(width, "conv1", self.dtype, use_bias=True)(nn.relu(x))
        y = conv3x3(width, "conv2", self.dtype)(nn.relu(y))
        return x + y


class ChainedResidualPooling(nn.Module):
    """CRP (Sec. 3.2): relu(x) plus every output of a chain of {5x5/1 max pool, 3x3 conv}
    blocks, each pooling the previous block's output (reference `do_gen_block`)."""

    num_blocks: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # The ReLU before the pooling: "important for the effectiveness of subsequent pooling
        # operations" (Sec. 3.2); reference `_poolprev_relu`.
        x = nn.relu(x)
        total, chain = x, x
        for index in range(self.num_blocks):
            chain = nn.max_pool(chain, (CRP_POOL_SIZE, CRP_POOL_SIZE), strides=(1, 1),
                                padding="SAME")  # pads with -inf, as PyTorch's MaxPool2d
            chain = conv3x3(x.shape[-1], f"conv{index + 1}", self.dtype)(chain)
            total = total + chain
        return total


class RefineNetBlock(nn.Module):
    """One RefineNet block (Sec. 3.2): [B, h, w, C] backbone feature (normalised)
    and, except for RefineNet-4, the coarser block's output -> [B, h, w, channels].

    Parameters: `backbone_adapt` (the 3x3 conv from the backbone stage to `channels`),
    `backbone_rcu1..2`, `coarser_rcu1..2` (at the coarser block's width), `backbone_fusion`
    and `coarser_fusion` (3x3 convs to `channels`; RefineNet-4 has neither), `crp/conv1..n`,
    `output_rcu`.
    """

    channels: int
    crp_blocks: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, backbone: jax.Array, coarser: Optional[jax.Array] = None) -> jax.Array:
        x = conv3x3(self.channels, "backbone_adapt", self.dtype)(backbone)
        for index in range(RCUS_PER_PATH):
            x = ResidualConvUnit(self.dtype, name=f"backbone_rcu{index + 1}")(x)
        if coarser is not None:
            # Multi-resolution fusion: convolve each path to the block's width (at its own
            # resolution, as the reference), upsample the coarser one, sum.
            for index in range(RCUS_PER_PATH):
                coarser = ResidualConvUnit(self.dtype, name=f"coarser_rcu{index + 1}")(coarser)
            x = conv3x3(self.channels, "backbone_fusion", self.dtype)(x)
            coarser = conv3x3(self.channels, "coarser_fusion", self.dtype)(coarser)
            x = x + resize_bilinear(coarser, x.shape[1:3])
        if self.crp_blocks:
            x = ChainedResidualPooling(self.crp_blocks, self.dtype, name="crp")(x)
        return ResidualConvUnit(self.dtype, name="output_rcu")(x)


class RefineNet(ResNetSegmenter):
    """ResNet-v2 at output stride 32 + the 4-cascaded RefineNet (module docstring).

    Parameters beside `backbone`: `stride16_preact_norm`, `stride8_preact_norm`,
    `stride4_preact_norm` (BN+ReLU of the tapped stages), `refinenet4` .. `refinenet1`
    (`RefineNetBlock`, strides 32 .. 4), `final_rcu1`, `final_rcu2`, `logits` (3x3, bias).
    """

    channels: Sequence[int] = (512, 256, 256, 256)
    crp_blocks: int = 2
    dropout_rate: float = 0.5

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = None  # the coarser block's output: none for RefineNet-4
        for block_index, (stride, channels) in enumerate(zip(BLOCK_STRIDES, self.channels)):
            if stride == BLOCK_STRIDES[0]:
                stage = features["out"]  # through the backbone's postnorm already
            else:
                stage = self.preactivate(features[f"stride{stride}"],
                                         f"stride{stride}_preact_norm", train=train)
            if stride in DROPOUT_STRIDES:
                stage = dropout(stage)
            x = RefineNetBlock(channels=channels, crp_blocks=self.crp_blocks, dtype=self.dtype,
                               name=f"refinenet{len(BLOCK_STRIDES) - block_index}")(stage, x)
        for index in range(FINAL_RCUS):
            x = ResidualConvUnit(self.dtype, name=f"final_rcu{index + 1}")(x)
        # Reference `gen_network_loss_group.m`: dropout 0.5, then a 3x3 conv with bias.
        logits = conv3x3(self.num_classes, "logits", self.dtype, use_bias=True)(dropout(x))
        self.sow("intermediates", "logits_at_feature_resolution", logits)
        return logits
