"""Output sizes: the formula floor((h + p_total - k_eff) / s) + 1, and what the model produces.

`conv_output_size` and `padding_total` (TF-style SAME at stride 1, slim's explicit symmetric
padding at stride 2, as `resnet.same_padding`), the sizes they predict at every stage
(`theoretical_stage_sizes`) against those the modules produce (`measured_stage_sizes`), and
when aligned-corners upsampling lands each feature exactly on a pixel
(`aligned_corners_error`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax.analysis.dilation.gradients import sown
from deeplab_jax.analysis.dilation.taps import effective_kernel_size
from deeplab_jax.models.resnet import (MAX_CASCADED_BLOCKS, UNITS_PER_BLOCK, same_padding,
                                       strides_and_rates)

Padding = Union[str, int, tuple[int, int], Sequence[tuple[int, int]]]

# --------------------------------------------------------------------------------------
# Output sizes.


def padding_total(size: int, kernel_size: int, stride: int = 1, rate: int = 1,
                  padding: Padding = "SAME") -> int:
    """Total padding along one axis: SAME (TF rule), VALID, p (each side) or (begin, end).

    A list of (begin, end) pairs, as `resnet.same_padding` returns, is read for this axis
    from its first pair.
    """
    k_eff = effective_kernel_size(kernel_size, rate)
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return 0
        if padding.upper() == "SAME":
            return max((math.ceil(size / stride) - 1) * stride + k_eff - size, 0)
        raise ValueError(f"padding={padding!r} is not SAME, VALID or explicit.")
    if isinstance(padding, (int, np.integer)):
        return 2 * int(padding)
    if isinstance(padding[0], (tuple, list)):
        padding = padding[0]
    begin, end = padding
    return int(begin) + int(end)


def conv_output_size(size: int, kernel_size: int, stride: int = 1, rate: int = 1,
                     padding: Padding = "SAME") -> int:
    """H_out = floor((h + p_total - k_eff) / s) + 1, p_total = 2p for symmetric padding."""
    k_eff = effective_kernel_size(kernel_size, rate)
    total = padding_total(size, kernel_size, stride, rate, padding)
    if size + total < k_eff:
        raise ValueError(f"An input of {size} padded by {total} is smaller than the "
                         f"effective kernel {k_eff}.")
    return (size + total - k_eff) // stride + 1


BLOCKS = tuple(f"block{index}" for index in range(1, 5 + MAX_CASCADED_BLOCKS))
STAGES = ("root_conv", "max_pool", *BLOCKS, "aspp", "logits", "output")


def theoretical_stage_sizes(image_size: int, output_stride: int, depth: int = 50,
                            multi_grid: Optional[Sequence[int]] = None,
                            num_cascaded_blocks: int = 0) -> dict[str, int]:
    """Spatial size after each stage, by `conv_output_size` with the model's padding.

    The root 7x7/2 conv and the strided 3x3s use `resnet.same_padding` (explicit symmetric
    at stride 2), the max pool TF SAME (which pads (0, 1) on even inputs: hence p_total
    rather than 2p). A strided unit's shortcut (1x1 conv or subsampling at stride s) must
    land on the same size as its 3x3 path; that is checked. The ASPP and the 1x1 logits keep
    the size (stride 1, SAME); the output is resized back to the image size. With
    `num_cascaded_blocks`, block5..block7 follow block4 (`resnet.strides_and_rates`).
    """
    units = UNITS_PER_BLOCK[depth]
    multi_grid = tuple(multi_grid) if multi_grid is not None else (1,) * units[3]
    plan = strides_and_rates(output_stride, units, multi_grid, num_cascaded_blocks)
    sizes = {}
    h = conv_output_size(image_size, 7, 2, 1, same_padding(7, 2, 1))
    sizes["root_conv"] = h
    h = conv_output_size(h, 3, 2, 1, "SAME")
    sizes["max_pool"] = h
    for block_index, block in enumerate(plan):
        for stride, rate in block:
            conv_path = conv_output_size(h, 3, stride, rate, same_padding(3, stride, rate))
            shortcut = conv_output_size(h, 1, stride, 1, "SAME")
            if conv_path != shortcut:
                raise AssertionError(f"Unit paths disagree: {conv_path} != {shortcut}.")
            h = conv_path
        sizes[f"block{block_index + 1}"] = h
    sizes["aspp"] = sizes["logits"] = h
    sizes["output"] = image_size
    return sizes


def measured_stage_sizes(model: nn.Module, image_size: int) -> dict[str, int]:
    """The sizes the model's modules actually produce (shapes only: `jax.eval_shape`).

    root_conv: the output of the 'root_conv' module; max_pool: the input of block1; blocks,
    aspp, logits: the sown intermediates; output: the model's output.
    """
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    seen = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            name = context.module.name
            if name == "root_conv":
                seen["root_conv"] = out.shape[1]
            elif name == "block1":
                seen["max_pool"] = args[0].shape[1]
        return out

    def run(x):
        with nn.intercept_methods(record):
            variables = model.init(jax.random.key(0), x, train=False)
            return model.apply(variables, x, train=False, mutable=["intermediates"])

    output, state = jax.eval_shape(run, images)
    inter = state["intermediates"]
    backbone = inter.get("backbone", inter)
    sizes = dict(seen)
    for block in BLOCKS:
        if block in backbone:
            sizes[block] = sown(backbone, (block, "output")).shape[1]
    if "aspp_output" in inter:
        sizes["aspp"] = sown(inter, ("aspp_output",)).shape[1]
    if "logits_at_feature_resolution" in inter:
        sizes["logits"] = sown(inter, ("logits_at_feature_resolution",)).shape[1]
        sizes["output"] = output.shape[1]
    return {stage: sizes[stage] for stage in STAGES if stage in sizes}


def aligned_corners_error(image_size: int, feature_size: int, output_stride: int) -> float:
    """Largest distance, in pixels, between feature i's aligned-corners position and i * OS.

    Aligned-corners upsampling puts feature i at pixel i * (H - 1) / (h - 1); it is the
    pixel i * OS that the feature was computed at exactly when H - 1 = OS * (h - 1), i.e.
    H = OS * k + 1 and h = k + 1 (then the error is 0).
    """
    if feature_size == 1:
        return 0.0
    index = np.arange(feature_size)
    placed = index * (image_size - 1) / (feature_size - 1)
    return float(np.max(np.abs(placed - index * output_stride)))
