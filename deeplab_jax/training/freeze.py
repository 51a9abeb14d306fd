"""Training in stages: parameters frozen by name pattern.

Some models' papers train them in stages: Yu and Koltun (2016, Sec. 4-5) train the front end
first, then the context module on the frozen front end's output, then both jointly; DeepLabv3
fine-tunes with frozen BatchNorm. A stage starts from the previous one's weights
(`config.init_from`) and freezes what `config.optim.frozen` names: glob patterns over the
parameter paths, e.g. ('backbone/*',) or ('vgg/*', 'fc6/*'), matched with `fnmatch`
against names such as 'backbone/block1/unit01/conv1/kernel' ('*' crosses '/'). A frozen
parameter
- gets no gradient: the loss sees it through `stop_gradient`, so XLA does not compute the
  backward pass of a frozen front end at all;
- gets no weight decay and no optimizer state: the optimizer is an
  `optax.multi_transform` that sends frozen leaves to `optax.set_to_zero` (no momentum, no
  Adam moments are allocated for them);
- keeps its BatchNorm statistics: a BatchNorm whose scale or bias is frozen normalises with
  its running statistics, as in evaluation, and never updates them (`frozen_batch_norm`).
So a frozen parameter and its statistics are bit-identical after any number of steps.
Nothing changes when no pattern is given: the optimizer and its state are the usual ones.
"""
from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Iterator, Sequence

import flax.linen as nn
from flax.linen.dtypes import canonicalize_dtype
import jax
import jax.numpy as jnp
import optax

from deeplab_jax.errors import ConfigError

PyTree = Any
TRAINABLE, FROZEN = "trainable", "frozen"


def leaf_path(path: tuple) -> str:
    """'backbone/block1/unit01/conv1/kernel' of a pytree key path."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def frozen_mask(params: PyTree, patterns: Sequence[str]) -> PyTree:
    """A bool per parameter: whether a pattern names it."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: matches(leaf_path(path), patterns), params)


def check_patterns(params: PyTree, patterns: Sequence[str]) -> int:
    """Refuses a pattern that names no parameter (a typo would freeze nothing); returns
    how many parameter values are frozen."""
    paths = [leaf_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
            tops = sorted({path.split("/")[0] for path in paths})
            raise ConfigError(
                f"config.optim.frozen: {pattern!r} names no parameter of this model. Its "
                f"parameters are {', '.join(f'{top}/...' for top in tops)} (e.g. "
                f"{paths[0]!r}); write a glob over those names, e.g. '{tops[0]}/*'.")
    return sum(leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if matches(leaf_path(path), patterns))


def optimizer(inner: optax.GradientTransformation,
              patterns: Sequence[str]) -> optax.GradientTransformation:
    """`inner` for the trainable parameters, nothing (and no state) for the frozen ones."""
    if not patterns:
        return inner
    patterns = tuple(patterns)
    labels = lambda params: jax.tree.map(lambda frozen: FROZEN if frozen else TRAINABLE,
                                         frozen_mask(params, patterns))
    return optax.multi_transform({TRAINABLE: inner, FROZEN: optax.set_to_zero()}, labels)


def stop_frozen_gradients(params: PyTree, patterns: Sequence[str]) -> PyTree:
    """`params` with the frozen ones behind `stop_gradient`."""
    if not patterns:
        return params
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jax.lax.stop_gradient(leaf) if matches(leaf_path(path), patterns)
        else leaf, params)


def without_frozen(params: PyTree, patterns: Sequence[str]) -> PyTree:
    """`params` with the frozen ones zeroed: what weight decay sums over."""
    if not patterns:
        return params
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.zeros_like(leaf) if matches(leaf_path(path), patterns)
        else leaf, params)


@contextlib.contextmanager
def frozen_batch_norm(patterns: Sequence[str]) -> Iterator[None]:
    """Within it, a BatchNorm whose scale or bias is frozen runs as in evaluation.

    It normalises with its running mean and variance, in flax's own order of operations
    (`flax.linen.normalization._normalize`: (x - mean) * (rsqrt(var + eps) * scale) + bias),
    and updates nothing, whatever `use_running_average` the model passed.
    """
    if not patterns:
        yield
        return

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if not (isinstance(module, nn.BatchNorm) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        path = "/".join(module.path)
        if not (matches(f"{path}/scale", patterns) or matches(f"{path}/bias", patterns)):
            return next_fun(*args, **kwargs)
        if module.axis != -1 or module.axis_name is not None:
            raise NotImplementedError(f"Freezing BatchNorm {path}: only axis=-1 without "
                                      "cross-device axis names is supported.")
        (x,) = args[:1]
        features = lambda collection, name: module.get_variable(collection, name).reshape(
            (1,) * (x.ndim - 1) + (-1,))  # over the last axis, as flax's expand_dims
        mean, var = features("batch_stats", "mean"), features("batch_stats", "var")
        multiplier, inputs = jax.lax.rsqrt(var + module.epsilon), [x]
        if module.use_scale:
            inputs.append(features("params", "scale"))
            multiplier = multiplier * inputs[-1]
        y = (x - mean) * multiplier
        if module.use_bias:
            inputs.append(features("params", "bias"))
            y = y + inputs[-1]
        return jnp.asarray(y, canonicalize_dtype(*inputs, dtype=module.dtype))

    with nn.intercept_methods(intercept):
        yield
