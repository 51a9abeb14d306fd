"""VGG-16 (Simonyan and Zisserman 2015, Table 1, configuration "D"): the encoder of SegNet,
DeepLab v1 and the Dilation front end.

Thirteen 3x3 convolutions, each followed by ReLU, in five groups of 2, 2, 3, 3, 3 layers with
64, 128, 256, 512 and 512 channels, each group followed by max pooling. The layers carry the
names of Caffe's VGG_ILSVRC_16_layers (conv1_1 ... conv5_3), which the DeepLab and Dilation
prototxts inherit (fyu/dilation @0f10574, network.py L80: `'conv{0}_{1}'.format(l+1, i+1)`),
so ImageNet weights could be mapped onto them by name later. `VGG16` covers what its three users
change:

- `batch_norm`: BatchNorm after every convolution, which then has no bias (VGG16-BN, SegNet's
  encoder); without it every convolution has a bias, as the original (DeepLab v1, Dilation);
- `width_divisor`: divides every width (CPU-sized runs);
- `kernel_size`: SegNet-Basic's 7x7 (with its own `widths`, 4 groups of one layer);
- `dilations`: one atrous rate per group (DeepLab v1 and Dilation: 2 in group 5);
- `pools`: per group, the max pooling after it, a window and a stride (DeepLab v1: 3x3 windows
  and stride 1 after groups 4 and 5), or None for no pooling (Dilation drops pool4 and pool5);
- `pool_argmax`: 2x2 pooling that also returns where each maximum was (SegNet's unpooling);
- `layer_name`: the naming pattern (SegNet keeps its `encoder{group}_conv{index}`).

A model puts the encoder's layers at the top of its own parameter tree (`nn.share_scope`), as
Caffe's flat layer names do (conv1_1 ... conv5_3 beside fc6, fc7, fc8), and as SegNet's
parameters always were: the tree is the same as if the model had created the layers itself.

Sizes: convolutions are SAME-padded (DeepLab's pad 1; the Dilation code's convolutions are
unpadded and its input reflection-padded by 186 pixels instead, network.py L15-L29) and
pooling pads with the lowest value, so it rounds up: a side of n pixels becomes ceil(n / s).
That is Caffe's pooling exactly for 2x2 windows (Caffe rounds up: the last window of an odd
side is a window of its own), and for 3x3/2 windows with pad 1 on odd sides (DeepLab's crops,
321 = 32k+1 pixels, keep every side odd: 161, 81, 41); on an even side Caffe's 3x3/2 pooling
gives one output more (n / 2 + 1).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.atrous import ATROUS_IMPLS, AtrousConv

VGG16_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CAFFE_LAYER_NAME = "conv{group}_{index}"  # conv1_1 ... conv5_3


class Pool(NamedTuple):
    """Max pooling: a window x window kernel at a stride, SAME-padded (module docstring)."""

    window: int
    stride: int


IMAGENET_POOL = Pool(window=2, stride=2)  # VGG-16's own pool1 ... pool5


def divide_widths(widths: Sequence[Sequence[int]], divisor: int) -> tuple[tuple[int, ...], ...]:
    """Every width divided by `divisor` (at least 1 channel): CPU-sized encoders."""
    return tuple(tuple(max(1, width // divisor) for width in group) for group in widths)


# The kernels' default start: He et al. (2015, Sec. 2.2), variance 2 / fan_in, with which a
# 16-layer ReLU network without BN keeps the scale of its activations from scratch (flax's
# LeCun default halves their second moment at every ReLU: 2^-15 by fc7). The papers start
# from ImageNet weights instead, which this codebase does not import for VGG.
HE_INIT = nn.initializers.he_normal()


def max_pool(x: jax.Array, pool: Pool) -> jax.Array:
    """[B, H, W, C] -> [B, ceil(H / stride), ceil(W / stride), C], SAME-padded with -inf."""
    return nn.max_pool(x, (pool.window, pool.window), strides=(pool.stride, pool.stride),
                       padding="SAME")


def max_pool_with_argmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2x2 max pooling with stride 2 (rounding up) and where each maximum was.

    Args:
      x: [B, H, W, C].

    Returns:
      (pooled [B, ceil(H/2), ceil(W/2), C], argmax int32 [same]: 0..3, the maximum's place
      in its window in row-major order (dy * 2 + dx); ties go to the first, as Caffe's).
    """
    batch, height, width, channels = x.shape
    padded_h, padded_w = -(-height // 2) * 2, -(-width // 2) * 2
    lowest = jnp.finfo(x.dtype).min
    x = jnp.pad(x, ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0)),
                constant_values=lowest)
    windows = x.reshape(batch, padded_h // 2, 2, padded_w // 2, 2, channels)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(
        batch, padded_h // 2, padded_w // 2, channels, 4)
    return jnp.max(windows, axis=-1), jnp.argmax(windows, axis=-1).astype(jnp.int32)


def check_config(config: ml_collections.ConfigDict, name: str, model: str) -> None:
    """The config of a VGG-16 model (DeepLab v1, the Dilation front end, the context module on
    it): block `config.model.<name>`'s `width_divisor`, `fc_channels` and `dropout_rate`, and
    the shared fields that do not apply to a VGG (the auxiliary head, ResNet weights).

    Raises:
      ConfigError: naming the field, its value and the fix.
    """
    block = config.model[name]
    for field in ("width_divisor", "fc_channels"):
        if not isinstance(block[field], int) or block[field] < 1:
            raise ConfigError(f"config.model.{name}.{field}={block[field]!r} must be a whole "
                              f"number >= 1; set e.g. --config.model.{name}.{field}="
                              f"{4 if field == 'width_divisor' else 256} for a CPU-sized "
                              "network.")
    if not 0.0 <= block.dropout_rate < 1.0:
        raise ConfigError(f"config.model.{name}.dropout_rate={block.dropout_rate} must be in "
                          f"[0, 1): set 0.5 (the paper's) or 0 for no dropout.")
    for field, why in (("aux_loss_weight", "has no ResNet block3 for an auxiliary head"),
                       ("pretrained_backbone", "is a VGG-16, not the ResNet those weights fit")):
        if config.model[field]:
            raise ConfigError(f"config.model.{field}={config.model[field]!r}: {model} {why}; "
                              + ("set it to 0." if field == "aux_loss_weight"
                                 else "leave it unset (None)."))
    if config.model.atrous_impl not in ATROUS_IMPLS:
        raise ConfigError(f"config.model.atrous_impl={config.model.atrous_impl!r} is not one "
                          f"of {ATROUS_IMPLS}; set one of them (xla is the default).")


def fully_connected_as_convolutions(x: jax.Array, *, channels: int, fc6_kernel_size: int,
                                    fc6_rate: int, dropout_rate: float, train: bool,
                                    atrous_impl: str, dtype: Any) -> jax.Array:
    """VGG-16's fc6 and fc7 as convolutions, each with ReLU and Caffe's dropout (element-wise,
    in training only): fc6 a `fc6_kernel_size` square kernel at dilation `fc6_rate`, fc7 1x1,
    both `channels` wide and He-initialised. DeepLab v1 (LargeFOV: 3x3 at 12, 1024) and the
    Dilation front end (7x7 at 4, 4096) differ only in those numbers.

    Called from a model's compact method: the layers are that model's, named fc6 and fc7.
    """
    fc6 = AtrousConv(channels, fc6_kernel_size, rate=fc6_rate, padding="SAME", dtype=dtype,
                     kernel_init=HE_INIT, impl=atrous_impl, name="fc6")
    x = nn.Dropout(dropout_rate, deterministic=not train)(nn.relu(fc6(x)))
    fc7 = nn.Conv(channels, (1, 1), dtype=dtype, param_dtype=jnp.float32, kernel_init=HE_INIT,
                  name="fc7")
    return nn.Dropout(dropout_rate, deterministic=not train)(nn.relu(fc7(x)))


class PoolIndices(NamedTuple):
    """What SegNet's decoder needs to undo a 2x2 pooling: the argmax and the size before."""

    argmax: jax.Array
    size: tuple[int, int]


class VGG16(nn.Module):
    """[B, H, W, C] (normalised pixels) -> (features, pool indices), see the module docstring.

    Returns the last group's output after its pooling (if any), and one `PoolIndices` per
    group when `pool_argmax` (else an empty tuple).

    Attributes:
      widths: the output channels of each layer, per group (before `width_divisor`).
      width_divisor: divides every width (at least 1 channel).
      kernel_size: of every convolution.
      batch_norm: BN (named `<layer>_norm`) after each convolution, which then has no bias.
      dilations: the atrous rate of each group's convolutions; None: 1 everywhere.
      pools: the pooling after each group (`Pool`, or None for none); None: VGG-16's 2x2/2
        after every group.
      pool_argmax: every pooling is 2x2/2 and returns its argmax (SegNet).
      layer_name: format of the layer names, with {group} and {index} counted from 1.
      kernel_init: of the convolution kernels (biases start at zero).
      atrous_impl: how dilated convolutions run (`atrous.py`; the parameters are the same).
      dtype, bn_momentum, bn_epsilon: computation dtype (parameters stay float32), BN's.
    """

    widths: Sequence[Sequence[int]] = VGG16_WIDTHS
    width_divisor: int = 1
    kernel_size: int = 3
    batch_norm: bool = False
    dilations: Optional[Sequence[int]] = None
    pools: Optional[Sequence[Optional[Pool]]] = None
    pool_argmax: bool = False
    layer_name: str = CAFFE_LAYER_NAME
    kernel_init: Callable[..., jax.Array] = HE_INIT
    atrous_impl: str = "xla"
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, *,
                 train: bool) -> tuple[jax.Array, tuple[PoolIndices, ...]]:
        widths = divide_widths(self.widths, self.width_divisor)
        dilations = tuple(self.dilations) if self.dilations else (1,) * len(widths)
        pools = tuple(self.pools) if self.pools is not None else (IMAGENET_POOL,) * len(widths)
        if not len(widths) == len(dilations) == len(pools):
            raise ValueError(f"VGG16 needs one dilation and one pool per group: {len(widths)} "
                             f"groups, dilations {dilations}, pools {pools}.")
        indices = []
        for group, (group_widths, rate, pool) in enumerate(zip(widths, dilations, pools), 1):
            for index, features in enumerate(group_widths, 1):
                x = self.conv(x, features, rate, self.layer_name.format(group=group,
                                                                        index=index), train)
            if self.pool_argmax:
                if pool != IMAGENET_POOL:
                    raise ValueError(f"pool_argmax pools 2x2 with stride 2; group {group} asks "
                                     f"for {pool}.")
                size = x.shape[1:3]
                x, argmax = max_pool_with_argmax(x)
                indices.append(PoolIndices(argmax, size))
            elif pool is not None:
                x = max_pool(x, pool)
        return x, tuple(indices)

    def conv(self, x: jax.Array, features: int, rate: int, name: str,
             train: bool) -> jax.Array:
        """conv (+ BN) + ReLU, named `name` (and `name_norm`)."""
        x = AtrousConv(features, (self.kernel_size,) * 2, rate=rate, padding="SAME",
                       use_bias=not self.batch_norm, dtype=self.dtype, param_dtype=jnp.float32,
                       kernel_init=self.kernel_init, impl=self.atrous_impl, name=name)(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"{name}_norm")(x)
        return nn.relu(x)
