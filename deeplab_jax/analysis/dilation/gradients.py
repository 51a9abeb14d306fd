"""The effective receptive field: input-gradient maps of sown intermediates.

`input_gradient_maps` differentiates a sown intermediate (a block's output, the ASPP's) at
chosen positions with respect to the images or to the input of any submodule; the variable
fillers give models whose gradients show the reachable positions (positive constants) or a
typical random network's (random). `sown` reads an intermediate by its path.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Path = Union[str, Sequence[str]]

# --------------------------------------------------------------------------------------
# Gradients of sown intermediates.


def _as_path(path: Path) -> tuple[str, ...]:
    return tuple(path.split("/")) if isinstance(path, str) else tuple(path)


def sown(tree: Mapping[str, Any], path: tuple[str, ...]):
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
        return [sown(state["intermediates"], path) for path in paths]

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
