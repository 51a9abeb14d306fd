"""Dilation arithmetic: the analysis behind the notebooks in experiments/notebooks/.

Pure functions (numpy, plus JAX where a model is applied) for the questions DeepLabv3 raises
about atrous convolution (Chen et al. 2017, Sec. 3):

- which taps of a 3x3 atrous filter land inside the feature map (Sec. 3.3, Fig. 4), in
  closed form (`valid_tap_histogram`), by enumeration (`valid_tap_count_map`) and measured on
  the package's own ASPP branches (`measured_tap_validity`);
- effective kernel size k + (k - 1)(r - 1) and the theoretical receptive field of a chain of
  (kernel, stride, rate) layers (`receptive_field`), the chain being read off the model's
  own `strides_and_rates` (`deeplab_layers`);
- the input-gradient map of a sown intermediate (`input_gradient_maps`), with respect to the
  images or to the input of any submodule, for effective receptive fields and for the
  positions a block reaches;
- which offsets a stack of 3x3 atrous convs reaches (`gridding_mask`, `path_counts`,
  `count_holes`): equal rates vs multi-grid (Sec. 3.2);
- the output-size formula floor((h + p_total - k_eff) / s) + 1 (`conv_output_size`), the
  sizes it predicts at every stage (`theoretical_stage_sizes`) and the sizes the modules
  actually produce (`measured_stage_sizes`), and when aligned-corners upsampling lands each
  feature exactly on a pixel (`aligned_corners_error`).

Conventions: feature maps are [B, H, W, C]; offsets and positions are (row, column); a
"rate" is the atrous (dilation) rate; padding follows the model (`resnet.same_padding`:
TF-style SAME at stride 1, slim's explicit symmetric padding at stride 2).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax.models.aspp import ASPP, default_atrous_rates
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, same_padding, strides_and_rates

Padding = Union[str, int, tuple[int, int], Sequence[tuple[int, int]]]
Path = Union[str, Sequence[str]]


# --------------------------------------------------------------------------------------
# Effective kernel size and the taps of an atrous filter.


def effective_kernel_size(kernel_size: int, rate: int) -> int:
    """k_eff = k + (k - 1)(r - 1): the span of a k-tap filter with rate r (Sec. 3.1)."""
    if kernel_size < 1 or rate < 1:
        raise ValueError(f"kernel_size={kernel_size} and rate={rate} must be >= 1.")
    return kernel_size + (kernel_size - 1) * (rate - 1)


def tap_offsets(kernel_size: int, rate: int) -> np.ndarray:
    """Offsets of a centred odd k-tap filter's taps along one axis: (j - (k-1)/2) * r."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size={kernel_size} must be odd to have a centre tap.")
    half = (kernel_size - 1) // 2
    return np.arange(-half, half + 1) * rate


def _hw(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


# --------------------------------------------------------------------------------------
# Valid taps of a 3x3 atrous filter on an n x n map with zero (SAME) padding: Fig. 4.


def axis_tap_counts(size: int, rate: int) -> dict[int, int]:
    """Closed form, one axis, 3-tap filter at stride 1 with SAME zero padding.

    Position i sees its centre tap always, tap -r when i >= r and tap +r when i <= n-1-r.
    Hence n3 = max(n - 2r, 0) positions see all 3 taps, n1 = max(min(r, n) - max(n - r, 0),
    0) positions (those with n-r <= i <= r-1; 2r - n of them while r <= n) only the centre
    one, and the rest see 2.

    Returns:
      {taps seen: number of positions} for taps seen in (1, 2, 3).
    """
    if size < 1 or rate < 1:
        raise ValueError(f"size={size} and rate={rate} must be >= 1.")
    three = max(size - 2 * rate, 0)
    one = max(min(rate, size) - max(size - rate, 0), 0)
    return {1: one, 2: size - three - one, 3: three}


def valid_tap_histogram(size: Union[int, Sequence[int]], rate: int) -> dict[int, float]:
    """Closed form: fraction of output positions by number of valid 3x3 taps (1..9).

    A 3x3 filter's taps are the product of one 3-tap filter per axis, so a position sees
    (row taps) x (column taps) valid weights: 1, 2, 3, 4, 6 or 9. Every output position of
    the H x W map (stride 1, SAME zero padding) counts once.
    """
    height, width = _hw(size)
    rows, cols = axis_tap_counts(height, rate), axis_tap_counts(width, rate)
    histogram = {count: 0.0 for count in (1, 2, 3, 4, 6, 9)}
    for (row_taps, row_n), (col_taps, col_n) in itertools.product(rows.items(), cols.items()):
        histogram[row_taps * col_taps] += row_n * col_n / (height * width)
    return histogram


def valid_tap_fractions(size: Union[int, Sequence[int]], rate: int) -> dict[str, float]:
    """The figures of Fig. 4 in closed form.

    Returns:
      all_valid: fraction of positions where all 9 taps land inside the map;
      centre_only: fraction where only the centre tap does (the filter is a 1x1 there);
      four_valid: fraction where 4 taps do (a corner of the map, the map smaller than 2r);
      mean_valid: the fraction of the 9 taps inside the map, averaged over all positions.
    """
    height, width = _hw(size)
    histogram = valid_tap_histogram((height, width), rate)
    # Separable: mean over positions of (row taps)(column taps) / 9, axis by axis.
    mean_rows = sum(t * n for t, n in axis_tap_counts(height, rate).items()) / height
    mean_cols = sum(t * n for t, n in axis_tap_counts(width, rate).items()) / width
    return {
        "all_valid": histogram[9],
        "centre_only": histogram[1],
        "four_valid": histogram[4],
        "mean_valid": mean_rows * mean_cols / 9.0,
    }


def valid_tap_count_map(size: Union[int, Sequence[int]], rate: int,
                        kernel_size: int = 3) -> np.ndarray:
    """By enumeration: [H, W] number of a k x k filter's taps inside the map, per position."""
    height, width = _hw(size)
    offsets = tap_offsets(kernel_size, rate)

    def axis(n):
        positions = np.arange(n)[:, None] + offsets[None, :]
        return ((positions >= 0) & (positions < n)).sum(axis=1)

    return np.outer(axis(height), axis(width))


def measured_tap_validity(size: Union[int, Sequence[int]], rates: Sequence[int]) -> np.ndarray:
    """Measured on the package's ASPP: [len(rates), H, W, 9] 1 where tap t lands inside.

    Each rate is a 3x3 branch of the real `ASPP` module (its own atrous conv and padding),
    applied to an all-ones [1, H, W, 1] map with a one-hot kernel per tap (output channel t
    is tap t = 3 * row + column): the output is 1 exactly where that tap reads the map and 0
    where it reads the zero padding. The branch conv outputs are read with flax's
    `capture_intermediates`, before the branch's BatchNorm.
    """
    height, width = _hw(size)
    rates = [int(rate) for rate in rates]
    if not rates:
        raise ValueError("rates is empty.")
    padded = rates + [rates[-1]] * (-len(rates) % 3)  # ASPP takes exactly three rates.
    ones = jnp.ones((1, height, width, 1), jnp.float32)
    one_hot = jnp.asarray(np.eye(9, dtype=np.float32).reshape(3, 3, 1, 9))
    branches = ("branch1", "branch2", "branch3")
    # The parameter tree does not depend on the rates: initialise once, apply per rate.
    variables = ASPP(atrous_rates=(1, 1, 1), channels=9).init(jax.random.key(0), ones,
                                                             train=False)
    params = dict(variables["params"])
    for name in branches:
        params[name] = {**params[name], "kernel": one_hot}
    variables = {**variables, "params": params}
    out = []
    for start in range(0, len(padded), 3):
        aspp = ASPP(atrous_rates=tuple(padded[start:start + 3]), channels=9)
        _, state = aspp.apply(
            variables, ones, train=False,
            capture_intermediates=lambda module, method: module.name in branches,
            mutable=["intermediates"])
        for name in branches:
            out.append(np.asarray(state["intermediates"][name]["__call__"][0][0]))
    return np.rint(np.stack(out[:len(rates)])).astype(np.int32)


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
                   atrous_rates: Optional[Sequence[int]] = None) -> list[tuple[str, int, int, int]]:
    """The model's spatial layers as (name, kernel, stride, rate), from `strides_and_rates`.

    Root 7x7/2 conv, 3x3/2 max pool, then each bottleneck unit's 3x3 conv (it carries the
    unit's stride and rate; the 1x1 convs and the shortcut add nothing to the receptive
    field). through='aspp' appends the ASPP's largest-rate 3x3 branch: the receptive field
    of the atrous branches. (The image-level branch pools the whole image, so the ASPP
    output's true receptive field is the whole image.)

    Args:
      through: 'root_conv', 'max_pool', 'block1'..'block4' or 'aspp'.
    """
    stages = ("root_conv", "max_pool", "block1", "block2", "block3", "block4", "aspp")
    if through not in stages:
        raise ValueError(f"through={through!r} is not one of {stages}.")
    plan = strides_and_rates(output_stride, UNITS_PER_BLOCK[depth], multi_grid)
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
# Gradients of sown intermediates.


def _as_path(path: Path) -> tuple[str, ...]:
    return tuple(path.split("/")) if isinstance(path, str) else tuple(path)


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]):
    node = tree
    for key in path:
        if key not in node:
            raise KeyError(f"No intermediate {'/'.join(path)!r}: {key!r} is not among "
                           f"{sorted(node)}.")
        node = node[key]
    return node[0] if isinstance(node, tuple) else node  # sow appends to a tuple.


def _module_input_shape(model: nn.Module, variables, inputs, module_path: tuple[str, ...]):
    shapes = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and tuple(context.module.path) == module_path:
            shapes.append(jax.ShapeDtypeStruct(args[0].shape, args[0].dtype))
        return next_fun(*args, **kwargs)

    def apply(v, x):
        with nn.intercept_methods(record):
            return model.apply(v, x, train=False, mutable=["intermediates"])

    jax.eval_shape(apply, variables, inputs)
    if not shapes:
        raise KeyError(f"No submodule {'/'.join(module_path)!r} is called by the model.")
    return shapes[0]


def input_gradient_maps(model: nn.Module, variables, inputs: jax.Array,
                        targets: Sequence[Path], position: Optional[Sequence[int]] = None,
                        wrt: Optional[Path] = None) -> list[np.ndarray]:
    """Mean |gradient| of one position of sown intermediates, as [H, W] maps.

    For each target (a path into the 'intermediates' collection, e.g.
    'backbone/block4/output' or 'aspp_output'), the gradient of the sum over channels of
    the target at `position` (default: the centre, ((h-1)//2, (w-1)//2)), with respect to
    `inputs` (wrt=None) or to the first argument of the submodule at path `wrt` (e.g.
    'backbone/block4' or, for a bare ResNetV2, 'block4'). The map is |gradient| averaged
    over the batch and the channels. The model runs in inference mode (train=False, BN
    with its running statistics), so the examples of the batch are independent and the
    map is the average of per-example maps. One forward pass serves all targets.
    """
    inputs = jnp.asarray(inputs, jnp.float32)
    paths = [_as_path(target) for target in targets]
    module_path = None if wrt is None else _as_path(wrt)

    def forward(delta):
        if module_path is None:
            _, state = model.apply(variables, inputs + delta, train=False,
                                   mutable=["intermediates"])
        else:
            def perturb(next_fun, args, kwargs, context):
                if (context.method_name == "__call__"
                        and tuple(context.module.path) == module_path):
                    args = (args[0] + delta.astype(args[0].dtype),) + tuple(args[1:])
                return next_fun(*args, **kwargs)

            with nn.intercept_methods(perturb):
                _, state = model.apply(variables, inputs, train=False,
                                       mutable=["intermediates"])
        return [_lookup(state["intermediates"], path) for path in paths]

    if module_path is None:
        delta = jnp.zeros_like(inputs)
    else:
        shape = _module_input_shape(model, variables, inputs, module_path)
        delta = jnp.zeros(shape.shape, jnp.float32)
    outputs, vjp = jax.vjp(forward, delta)
    maps = []
    for index, output in enumerate(outputs):
        height, width = output.shape[1:3]
        row, col = position if position is not None else ((height - 1) // 2, (width - 1) // 2)
        cotangents = [jnp.zeros_like(o) for o in outputs]
        cotangents[index] = cotangents[index].at[:, row, col, :].set(1)
        (gradient,) = vjp(cotangents)
        maps.append(np.asarray(jnp.mean(jnp.abs(gradient.astype(jnp.float32)), axis=(0, 3))))
    return maps


def input_gradient_map(model: nn.Module, variables, inputs: jax.Array, target: Path,
                       position: Optional[Sequence[int]] = None,
                       wrt: Optional[Path] = None) -> np.ndarray:
    """`input_gradient_maps` for one target."""
    return input_gradient_maps(model, variables, inputs, [target], position, wrt)[0]


def variable_shapes(model: nn.Module, input_shape: Sequence[int]):
    """The model's variables as ShapeDtypeStructs (`jax.eval_shape` of `init`, train=False)."""
    images = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def _fill_variables(shapes, kernel_fn):
    """Variables of the given shapes: kernels from kernel_fn(shape), biases and BN shifts
    0, BN scales 1, BN running means 0 and variances 1 (BN in inference mode is then
    x / sqrt(1 + eps))."""
    def leaf(path, shape_dtype):
        names = [getattr(key, "key", str(key)) for key in path]
        shape = tuple(shape_dtype.shape)
        if names[0] == "params" and names[-1] == "kernel":
            value = kernel_fn(shape)
        elif names[-1] in ("scale", "var"):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        return jnp.asarray(value, shape_dtype.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def random_variables(model: nn.Module, input_shape: Sequence[int], seed: int = 0):
    """Random variables for the model's own parameter tree, drawn with numpy.

    Kernels are LeCun-normal, N(0, 1 / fan_in) (flax's default conv initialiser, untruncated);
    everything else as `_fill_variables`. The same result as a random `model.init` in law,
    without running `init` eagerly (13 s for a ResNet-50 on a busy 2-core CPU, against a
    fraction of a second here).
    """
    rng = np.random.default_rng(seed)
    return _fill_variables(
        variable_shapes(model, input_shape),
        lambda shape: rng.standard_normal(shape) / np.sqrt(math.prod(shape[:-1])))


def positive_constant_variables(model: nn.Module, input_shape: Sequence[int]):
    """Every conv kernel 1 / fan_in, every bias 0, BN at its initial statistics.

    With these weights and positive inputs every activation is positive (BN is a positive
    scaling, so every ReLU passes), the network is linear and the gradient of an output
    position is a positively weighted count of the paths to each input position: nonzero
    exactly where the position is reached, with no cancellation.
    """
    return _fill_variables(variable_shapes(model, input_shape),
                           lambda shape: np.full(shape, 1.0 / math.prod(shape[:-1])))


def centred_mass_side(grad_map: np.ndarray, fraction: float = 0.9,
                      centre: Optional[Sequence[int]] = None) -> int:
    """Side of the smallest square centred on `centre` (default: the map's centre) that
    holds `fraction` of the map's total mass (a size for an effective receptive field).
    Squares are clipped to the map; 2 * half + 1 is returned even when clipped."""
    grad_map = np.abs(np.asarray(grad_map, np.float64))
    height, width = grad_map.shape
    row, col = centre if centre is not None else ((height - 1) // 2, (width - 1) // 2)
    total = grad_map.sum()
    for half in range(max(height, width)):
        window = grad_map[max(row - half, 0):row + half + 1, max(col - half, 0):col + half + 1]
        if window.sum() >= fraction * total:
            return 2 * half + 1
    return 2 * max(height, width) + 1


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


STAGES = ("root_conv", "max_pool", "block1", "block2", "block3", "block4", "aspp",
          "logits", "output")


def theoretical_stage_sizes(image_size: int, output_stride: int, depth: int = 50,
                            multi_grid: Optional[Sequence[int]] = None) -> dict[str, int]:
    """Spatial size after each stage, by `conv_output_size` with the model's padding.

    The root 7x7/2 conv and the strided 3x3s use `resnet.same_padding` (explicit symmetric
    at stride 2), the max pool TF SAME (which pads (0, 1) on even inputs: hence p_total
    rather than 2p). A strided unit's shortcut (1x1 conv or subsampling at stride s) must
    land on the same size as its 3x3 path; that is checked. The ASPP and the 1x1 logits keep
    the size (stride 1, SAME); the output is resized back to the image size.
    """
    units = UNITS_PER_BLOCK[depth]
    multi_grid = tuple(multi_grid) if multi_grid is not None else (1,) * units[3]
    plan = strides_and_rates(output_stride, units, multi_grid)
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
    for block in ("block1", "block2", "block3", "block4"):
        sizes[block] = _lookup(backbone, (block, "output")).shape[1]
    if "aspp_output" in inter:
        sizes["aspp"] = _lookup(inter, ("aspp_output",)).shape[1]
        sizes["logits"] = _lookup(inter, ("logits_at_feature_resolution",)).shape[1]
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


__all__ = [
    "STAGES", "aligned_corners_error", "axis_tap_counts", "conv_output_size",
    "count_holes", "deeplab_layers", "effective_kernel_size", "gridding_mask",
    "centred_mass_side", "input_gradient_map", "input_gradient_maps", "measured_stage_sizes",
    "measured_tap_validity", "padding_total", "path_counts", "positive_constant_variables",
    "random_variables", "reachable_offsets", "receptive_field", "tap_offsets",
    "theoretical_stage_sizes", "valid_tap_count_map", "valid_tap_fractions",
    "valid_tap_histogram", "variable_shapes",
]
