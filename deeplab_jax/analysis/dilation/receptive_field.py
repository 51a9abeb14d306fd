"""Which input offsets an output depends on, in theory: receptive fields and gridding.

- the theoretical receptive field of a chain of (kernel, stride, rate) layers
  (`receptive_field`), the chain read off the model's own `strides_and_rates`
  (`deeplab_layers`);
- the offsets a stack of 3x3 atrous convs reaches, and through how many paths
  (`reachable_offsets`, `path_counts`, `gridding_mask`, `count_holes`): equal rates leave
  holes ("gridding"), multi-grid rates fill them (Sec. 3.2).
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.analysis.dilation.taps import effective_kernel_size, tap_offsets
from deeplab_jax.models.aspp import default_atrous_rates
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates

# --------------------------------------------------------------------------------------
# Theoretical receptive field.


def receptive_field(layers: Iterable[Sequence[int]]) -> tuple[int, int]:
    """Theoretical receptive field of a chain of (kernel, stride, rate) layers.

    Layer by layer, size += (k_eff - 1) * jump, then jump *= stride, starting from (1, 1):
    `jump` is the distance in input pixels between neighbouring positions of the layer's
    output (the accumulated stride).

    Returns:
      (size, jump): the receptive field's side in input pixels, and the final jump.
    """
    size, jump = 1, 1
    for kernel, stride, rate in layers:
        size += (effective_kernel_size(kernel, rate) - 1) * jump
        jump *= stride
    return size, jump


def deeplab_layers(depth: int, output_stride: int, multi_grid: Sequence[int],
                   through: str = "block4",
                   atrous_rates: Optional[Sequence[int]] = None,
                   num_cascaded_blocks: int = 0) -> list[tuple[str, int, int, int]]:
    """The model's spatial layers as (name, kernel, stride, rate), from `strides_and_rates`.

    Root 7x7/2 conv, 3x3/2 max pool, then each bottleneck unit's 3x3 conv (it carries the
    unit's stride and rate; the 1x1 convs and the shortcut add nothing to the receptive
    field), through block4 or, with `num_cascaded_blocks`, through the cascade's block5..7
    (`deeplabv3_cascade`). through='aspp' appends the ASPP's largest-rate 3x3 branch after
    the last block: the receptive field of the atrous branches. (The image-level branch
    pools the whole image, so the ASPP output's true receptive field is the whole image.)

    Args:
      through: 'root_conv', 'max_pool', 'block1'..'block4' (..'block7' with cascaded
        blocks) or 'aspp'.
    """
    blocks = tuple(f"block{index}" for index in range(1, 5 + num_cascaded_blocks))
    stages = ("root_conv", "max_pool", *blocks, "aspp")
    if through not in stages:
        raise ConfigError(f"through={through!r} is not one of {stages}; pass one of them "
                          "(block5-7 need num_cascaded_blocks).")
    plan = strides_and_rates(output_stride, UNITS_PER_BLOCK[depth], multi_grid,
                             num_cascaded_blocks)
    layers = [("root_conv", 7, 2, 1), ("max_pool", 3, 2, 1)]
    for block_index, units in enumerate(plan):
        for unit_index, (stride, rate) in enumerate(units):
            layers.append((f"block{block_index + 1}/unit{unit_index + 1:02d}/conv2", 3, stride,
                           rate))
    rates = tuple(atrous_rates) if atrous_rates else default_atrous_rates(output_stride)
    layers.append(("aspp/branch3", 3, 1, max(rates)))
    end = stages.index(through)
    return [layer for layer in layers
            if stages.index(layer[0].split("/")[0]) <= end]


# --------------------------------------------------------------------------------------
# Gridding: the offsets a stack of 3x3 atrous convs reaches.


def reachable_offsets(rates: Sequence[int], kernel_size: int = 3) -> np.ndarray:
    """Sorted 1-D offsets reached by a stack of k-tap filters with the given rates.

    An output position reaches input offset o when o is a sum of one tap offset per layer
    (the centre tap, offset 0, included). Residual shortcuts, which skip a layer, reach
    nothing new: skipping is the same offset as taking the centre tap.
    """
    return np.flatnonzero(_axis_path_counts(rates, kernel_size)) - _reach(rates, kernel_size)


def _reach(rates: Sequence[int], kernel_size: int) -> int:
    return sum((kernel_size - 1) // 2 * rate for rate in rates)


def _axis_path_counts(rates: Sequence[int], kernel_size: int) -> np.ndarray:
    reach = _reach(rates, kernel_size)
    counts = np.zeros(2 * reach + 1, np.int64)
    counts[reach] = 1
    for rate in rates:
        new = np.zeros_like(counts)
        for offset in tap_offsets(kernel_size, rate):
            new += np.roll(counts, offset)  # No wrap-around: the array spans the reach.
        counts = new
    return counts


def path_counts(rates: Sequence[int], kernel_size: int = 3) -> np.ndarray:
    """[2R+1, 2R+1] number of tap combinations from the centre output to each input offset.

    R = sum of (k-1)/2 * rate is the reach; index (R, R) is offset (0, 0). It is what a
    plain stack of the convs with all-ones kernels would give as gradient.
    """
    counts = _axis_path_counts(rates, kernel_size)
    return np.outer(counts, counts)


def gridding_mask(rates: Sequence[int], kernel_size: int = 3) -> np.ndarray:
    """[2R+1, 2R+1] bool: the input offsets a stack of k x k atrous convs reaches."""
    return path_counts(rates, kernel_size) > 0


def count_holes(mask: np.ndarray) -> int:
    """Unreached cells inside the bounding box of the reached ones."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0
    box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return int(box.size - box.sum())
