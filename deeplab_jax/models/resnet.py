"""Pre-activation ResNet-v2 backbone with atrous convolution, as TF-slim's resnet_v2.

The structure follows `tf_slim.nets.resnet_v2` unit for unit, so that its ImageNet
checkpoints map onto our parameters by name:
- root: 7x7/2 conv with bias and no norm, then 3x3/2 max pool;
- each bottleneck unit: BN+ReLU pre-activation; the shortcut is a 1x1 conv of the
  pre-activation where the depth changes, otherwise the input subsampled; 1x1 conv
  (BN+ReLU), 3x3 conv (BN+ReLU, carries the stride and the atrous rate), 1x1 conv with bias;
- the stride sits on the LAST unit of blocks 1-3 (slim's `resnet_v2_block`);
- a final BN+ReLU (`postnorm`) since pre-activation units leave their output unnormalised.

Features at every stage (`ResNetV2` returns a dict): heads that read more than the last
block (the DeepLabv3+ and U-Net decoders, FCN's skips, the auxiliary head) get the stage
outputs *un-normalised*, as the pre-activation units leave them, and apply their own BN+ReLU
(`segmenter.preactivate`), the way the next unit's `preact_norm` would. Only the final output
goes through the backbone's `postnorm`. So the backbone's parameters are exactly TF-slim's
whichever head reads it, and its ImageNet checkpoints load into every ResNet-based model.
Because slim puts the stride on the *last* unit of a block, a block's output is at twice
the stride of its units: the stride-4 feature is the input of block1's last unit (block1's
own output is at stride 8), and so on.

Output stride (DeepLabv3 Sec. 3.1): once the running stride reaches the target, later strides
become atrous rates instead (slim's `stack_blocks_dense`), and block4 multiplies its rate by
the multi-grid factors (Sec. 3.2). Strides and rates are resolved by `strides_and_rates`, a
pure function; the units never compute rates themselves, and the parameter tree does not
depend on the output stride.

DeepLabv3's other model (Sec. 3.2, "Going deeper with atrous convolution"):
`num_cascaded_blocks` 1-3 appends copies of block4 as block5..block7, with block4's widths.
Then every block but the last strides on its last unit, block4 included, so the output
stride without atrous convolution is 32 * 2**num_cascaded_blocks (256 for block7), and the
multi-grid factors apply in every block from block4 on. With 0 the network, its strides and
its parameter tree are exactly ResNet's.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplab_jax.models.atrous import AtrousConv

# Bottleneck units per block. 50/101/152 are He et al.'s; 14 and 26 are test-sized.
UNITS_PER_BLOCK = {
    14: (1, 1, 1, 1),
    # CPU-sized stand-ins for ResNet-50 and ResNet-101 in the cascade tables
    # (experiments/cascade): block4 keeps its three units, so Multi-Grid (r1, r2, r3) applies
    # as in the paper, and the deeper one differs in block3 only, as 101 does from 50.
    20: (1, 1, 1, 3),
    29: (1, 1, 4, 3),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
ROOT_STRIDE = 4  # 7x7/2 conv then 3x3/2 max pool.
BLOCK_STRIDES = (2, 2, 2, 1)  # slim: the last unit of blocks 1-3 has stride 2.
VALID_OUTPUT_STRIDES = (8, 16, 32)
# DeepLabv3 Sec. 3.2: block4 copied as block5..block7 in cascade. Then every block but the
# last strides on its last unit ("the last convolution contains stride 2 except the one in
# last block"), so block7 without atrous convolution sits at output stride 256.
MAX_CASCADED_BLOCKS = 3

def block_strides(num_cascaded_blocks: int = 0) -> tuple[int, ...]:
    """The stride of each block's last unit: (2, 2, 2, 1) for ResNet's four blocks; with
    cascaded copies of block4, (2, ..., 2, 1) over 4 + num_cascaded_blocks blocks."""
    if not 0 <= num_cascaded_blocks <= MAX_CASCADED_BLOCKS:
        raise ValueError(f"num_cascaded_blocks={num_cascaded_blocks} is not in 0..."
                         f"{MAX_CASCADED_BLOCKS} (block4 alone up to block7): set "
                         "config.model.deeplabv3_cascade.num_cascaded_blocks to one of them.")
    return (2,) * (3 + num_cascaded_blocks) + (1,)


def valid_output_strides(num_cascaded_blocks: int = 0) -> tuple[int, ...]:
    """8 up to the stride without any atrous convolution: 32 for ResNet, 256 for block7."""
    top = ROOT_STRIDE * 2 ** (len(block_strides(num_cascaded_blocks)) - 1)
    return tuple(2**k for k in range(3, top.bit_length()))


def strides_and_rates(
    output_stride: int,
    units_per_block: Sequence[int],
    multi_grid: Sequence[int] = (1, 2, 4),
    num_cascaded_blocks: int = 0,
) -> list[list[tuple[int, int]]]:
    """Resolves the (stride, atrous rate) of every unit's 3x3 conv.

    Mirrors slim's `stack_blocks_dense`: while the running stride is below `output_stride`
    units keep their stride; after that their stride becomes 1 and later units multiply their
    rate by it. Block4's unit i then uses rate * multi_grid[i] (DeepLabv3 Sec. 3.2), and so
    does unit i of every cascaded copy of block4 (block5..block7): at output stride 16 with
    multi-grid (1, 2, 4), block4's rates are 2 * (1, 2, 4) and block7's 16 * (1, 2, 4).

    Args:
      output_stride: input size / feature size: one of `valid_output_strides`.
      units_per_block: number of units in each of the four ResNet blocks.
      multi_grid: unit rates relative to the block's rate, one per block4 unit.
      num_cascaded_blocks: copies of block4 after it (0..3), with block4's unit count.

    Returns:
      One list per block (4 + num_cascaded_blocks) of (stride, rate) per unit.
    """
    strides = block_strides(num_cascaded_blocks)
    valid = valid_output_strides(num_cascaded_blocks)
    if output_stride not in valid:
        raise ValueError(
            f"output_stride={output_stride} is not supported; use one of {valid}"
            + (" (up to 256 with copies of block4 in cascade: config.model.architecture="
               "deeplabv3_cascade and its num_cascaded_blocks)" if not num_cascaded_blocks
               else f" with {num_cascaded_blocks} cascaded block(s)") + ".")
    if len(units_per_block) != 4:
        raise ValueError(f"units_per_block must list 4 blocks, got {tuple(units_per_block)}.")
    if len(multi_grid) != units_per_block[3]:
        example = (1, 2, 4) if units_per_block[3] == 3 else (1,) * units_per_block[3]
        raise ValueError(
            f"multi_grid={tuple(multi_grid)} needs one factor per block4 unit "
            f"({units_per_block[3]} units): set config.model.multi_grid to "
            f"{units_per_block[3]} factors, e.g. {example}.")
    units_per_block = tuple(units_per_block) + (units_per_block[3],) * num_cascaded_blocks
    current_stride, rate = ROOT_STRIDE, 1
    blocks = []
    for block_index, (num_units, block_stride) in enumerate(zip(units_per_block, strides)):
        units = []
        for unit_index in range(num_units):
            stride = block_stride if unit_index == num_units - 1 else 1
            unit_rate = rate * (multi_grid[unit_index] if block_index >= 3 else 1)
            if current_stride == output_stride:
                units.append((1, unit_rate))
                rate *= stride
            else:
                units.append((stride, unit_rate))
                current_stride *= stride
        blocks.append(units)
    return blocks


def same_padding(kernel_size: int, stride: int, rate: int) -> str | list[tuple[int, int]]:
    """Slim's `conv2d_same` padding: SAME at stride 1, explicit symmetric padding otherwise.

    TF's SAME padding at stride 2 pads (0, 1) on even inputs; slim pads explicitly so the
    result does not depend on the input size's parity. Matching it keeps the imported
    ImageNet weights exact.
    """
    if stride == 1:
        return "SAME"
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    pad_total = effective - 1
    pad_begin = pad_total // 2
    return [(pad_begin, pad_total - pad_begin)] * 2


class BottleneckUnitV2(nn.Module):
    """One pre-activation bottleneck unit (slim's `bottleneck` in resnet_v2)."""

    depth: int
    depth_bottleneck: int
    stride: int
    rate: int
    conv: ModuleDef
    norm: ModuleDef
    atrous_conv: ModuleDef  # for the 3x3 conv2: AtrousConv (same parameters as `conv`)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        preact = nn.relu(self.norm(name="preact_norm")(x, use_running_average=not train))
        if x.shape[-1] == self.depth:
            # slim's `subsample`: a 1x1 max pool with the unit's stride.
            shortcut = x[:, :: self.stride, :: self.stride, :]
        else:
            shortcut = self.conv(self.depth, (1, 1), strides=self.stride, use_bias=True,
                                 name="shortcut")(preact)
        y = self.conv(self.depth_bottleneck, (1, 1), name="conv1")(preact)
        y = nn.relu(self.norm(name="conv1_norm")(y, use_running_average=not train))
        y = self.atrous_conv(self.depth_bottleneck, (3, 3), strides=self.stride, rate=self.rate,
                             padding=same_padding(3, self.stride, self.rate), name="conv2")(y)
        y = nn.relu(self.norm(name="conv2_norm")(y, use_running_average=not train))
        y = self.conv(self.depth, (1, 1), use_bias=True, name="conv3")(y)
        return shortcut + y


class ResNetBlock(nn.Module):
    """A stack of bottleneck units; output depth is 4x the bottleneck depth."""

    units: Sequence[tuple[int, int]]  # (stride, rate) per unit, from strides_and_rates.
    depth_bottleneck: int
    conv: ModuleDef
    norm: ModuleDef
    atrous_conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Returns (the block's output, the input of its last unit)."""
        last_input = x
        for unit_index, (stride, rate) in enumerate(self.units):
            last_input = x
            x = BottleneckUnitV2(
                depth=4 * self.depth_bottleneck, depth_bottleneck=self.depth_bottleneck,
                stride=stride, rate=rate, conv=self.conv, norm=self.norm,
                atrous_conv=self.atrous_conv, name=f"unit{unit_index + 1:02d}")(x, train=train)
        # Probes read intermediates['backbone']['block4']['output'].
        self.sow("intermediates", "output", x)
        return x, last_input


class ResNetV2(nn.Module):
    """Pre-activation ResNet-v2 feature extractor: [B, H, W, 3] -> a dict of features.

    Returns:
      'out': [B, H/os, W/os, 32*width], the last block after `postnorm` (BN+ReLU): what
        DeepLabv3's ASPP reads;
      'block1'..'block4' (..'block7' with cascaded blocks): each block's output,
        un-normalised;
      'stride4', 'stride8', ... up to 'stride{os}': the last activation at each stride,
        un-normalised (for os: the last block's output, before `postnorm`).

    Attributes:
      depth: a key of UNITS_PER_BLOCK (14, 20, 26, 29, 50, 101, 152).
      output_stride: 8, 16 or 32 (up to 256 with cascaded blocks: `valid_output_strides`).
      multi_grid: block4 rate factors (DeepLabv3 Sec. 3.2), one per block4 unit; they apply
        to every cascaded block too.
      num_cascaded_blocks: copies of block4 after it, named block5..block7, with block4's
        widths (DeepLabv3 Sec. 3.2, "Going deeper with atrous convolution"); 0: ResNet.
      width: channels of the root conv; block i has bottleneck width width * 2**i and
        output width 4x that (64 gives the standard ResNet).
      dtype: computation dtype; parameters stay float32.
      bn_momentum, bn_epsilon: BatchNorm decay and epsilon.
      atrous_impl: how the 3x3 convs run, one of atrous.ATROUS_IMPLS; the parameters and
        the function computed do not depend on it (see atrous.py).
    """

    depth: int = 50
    output_stride: int = 16
    multi_grid: Sequence[int] = (1, 2, 4)
    width: int = 64
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5
    atrous_impl: str = "xla"
    num_cascaded_blocks: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        if self.depth not in UNITS_PER_BLOCK:
            raise ValueError(
                f"ResNet depth {self.depth} is not defined; use one of {sorted(UNITS_PER_BLOCK)}.")
        units_per_block = UNITS_PER_BLOCK[self.depth]
        plan = strides_and_rates(self.output_stride, units_per_block, self.multi_grid,
                                 self.num_cascaded_blocks)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                                 param_dtype=jnp.float32)
        atrous_conv = functools.partial(AtrousConv, use_bias=False, dtype=self.dtype,
                                        param_dtype=jnp.float32, impl=self.atrous_impl)
        norm = functools.partial(nn.BatchNorm, momentum=self.bn_momentum,
                                 epsilon=self.bn_epsilon, dtype=self.dtype,
                                 param_dtype=jnp.float32)

        x = conv(self.width, (7, 7), strides=2, padding=same_padding(7, 2, 1), use_bias=True,
                 name="root_conv")(x.astype(self.dtype))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        features, stride = {}, ROOT_STRIDE
        for block_index, units in enumerate(plan):
            x, last_input = ResNetBlock(
                units=tuple(units), depth_bottleneck=self.width * 2**min(block_index, 3),
                conv=conv,
                norm=norm, atrous_conv=atrous_conv, name=f"block{block_index + 1}")(x, train=train)
            if units[-1][0] > 1:  # the last unit strided: its input ends the current stride
                features[f"stride{stride}"] = last_input
                stride *= units[-1][0]
            features[f"block{block_index + 1}"] = x
        features[f"stride{stride}"] = x
        features["out"] = nn.relu(norm(name="postnorm")(x, use_running_average=not train))
        return features
