"""Training losses: per-pixel softmax cross-entropy with ignored pixels, and L2 weight decay.

This module owns:
- `softmax_cross_entropy_sum` / `mean_cross_entropy`: the DeepLab training loss, a per-pixel
  softmax cross-entropy (official deeplab/utils/train_utils.py), skipping pixels whose label
  is `ignore_label` (the 255 "void" boundary of PASCAL VOC) or that are masked out (padding).
  The sum/count pair lets callers average over all valid pixels of a sharded global batch.
- `weight_decay_mask` / `l2_weight_decay`: the L2 regulariser of TF-slim's `resnet_arg_scope`,
  which applies `l2_regularizer(weight_decay)` to convolution weights only.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

DEFAULT_IGNORE_LABEL = 255  # PASCAL VOC / Cityscapes-trainId "void" label.
CONV_KERNEL_NAME = "kernel"
CONV_KERNEL_NDIM = 4  # Flax nn.Conv kernels are [kh, kw, in, out]; Dense kernels are 2-D.

PyTree = Any


def _valid_pixels(
    labels: jax.Array, ignore_label: int, mask: jax.Array | None
) -> jax.Array:
    """bool [B, H, W]: label is not `ignore_label` and `mask` (if any) is True."""
    valid = labels != ignore_label
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"mask {mask.shape} must have the shape of labels {labels.shape}.")
        valid = valid & mask.astype(bool)
    return valid


def softmax_cross_entropy_sum(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int = DEFAULT_IGNORE_LABEL,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sums the per-pixel softmax cross-entropy over valid pixels.

    A pixel is valid when its label is not `ignore_label` and `mask` (if given) is True. Invalid
    pixels contribute exactly zero to the loss and to its gradient, whatever their logits
    (even inf/NaN) and labels (255 is out of range for the gather).

    Args:
      logits: float [B, H, W, K] unnormalised class scores (any float dtype; computed in f32).
      labels: int [B, H, W] class ids in [0, K), or `ignore_label`.
      ignore_label: label of pixels to skip.
      mask: optional bool [B, H, W]; False pixels are skipped.

    Returns:
      (loss_sum, num_valid): float32 scalars, the summed cross-entropy and the number of valid
      pixels (counted in int32, exact, then cast).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {logits.shape} must be labels {labels.shape} + [K].")
    valid = _valid_pixels(labels, ignore_label, mask)
    # bf16 log-softmax loses precision on large logits; the loss is cheap, so use f32.
    logits = logits.astype(jnp.float32)
    # "Double where": sanitise the inputs of invalid pixels *before* the computation, then zero
    # their outputs. Zeroing only the output would still backprop 0 * NaN = NaN through
    # log-softmax if an ignored pixel's logits were non-finite, and label 255 would be an
    # out-of-range gather index.
    safe_logits = jnp.where(valid[..., None], logits, 0.0)
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(safe_logits, safe_labels)
    per_pixel = jnp.where(valid, per_pixel, 0.0)
    num_valid = jnp.sum(valid, dtype=jnp.int32).astype(jnp.float32)
    return jnp.sum(per_pixel), num_valid


def weighted_cross_entropy_sum(
    logits: jax.Array,
    labels: jax.Array,
    class_weights: jax.Array,
    *,
    ignore_label: int = DEFAULT_IGNORE_LABEL,
) -> tuple[jax.Array, jax.Array]:
    """Class-weighted cross-entropy: (sum of w[label] * ce, number of valid pixels).

    The loss is their ratio, as SegNet's Caffe loss normalises it (alexgkendall/caffe-segnet,
    src/caffe/layers/softmax_loss_layer.cpp: `loss / count`, count the non-ignored pixels);
    torch's `CrossEntropyLoss(weight=w)` divides by the weights' sum instead. With every
    weight 1 it is the plain mean. SegNet's median-frequency balancing
    (`training/class_weights.py`) gives w.

    Args:
      logits: float [B, H, W, K]; labels: int [B, H, W]; class_weights: float [K].

    Returns:
      (weighted sum, number of valid pixels): float32 scalars.
    """
    valid = _valid_pixels(labels, ignore_label, None)
    weights = jnp.where(valid, jnp.asarray(class_weights, jnp.float32)[
        jnp.where(valid, labels, 0).astype(jnp.int32)], 0.0)
    safe_logits = jnp.where(valid[..., None], logits.astype(jnp.float32), 0.0)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(
        safe_logits, jnp.where(valid, labels, 0).astype(jnp.int32))
    num_valid = jnp.sum(valid, dtype=jnp.int32).astype(jnp.float32)
    return jnp.sum(jnp.where(valid, per_pixel, 0.0) * weights), num_valid


def mean_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int = DEFAULT_IGNORE_LABEL,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean softmax cross-entropy over the valid pixels of the batch.

    The denominator is max(num_valid, 1), so a batch with every pixel ignored (possible with
    small random crops of VOC boundaries) gives loss 0 and zero gradients instead of 0/0 = NaN.

    Args:
      logits: float [B, H, W, K].
      labels: int [B, H, W].
      ignore_label: label of pixels to skip.
      mask: optional bool [B, H, W]; False pixels are skipped.

    Returns:
      float32 scalar.
    """
    loss_sum, num_valid = softmax_cross_entropy_sum(
        logits, labels, ignore_label=ignore_label, mask=mask)
    return loss_sum / jnp.maximum(num_valid, 1.0)


def weight_decay_mask(params: PyTree) -> PyTree:
    """Selects the parameters that weight decay applies to: convolution kernels.

    TF-slim's `resnet_arg_scope` (used by DeepLab) puts `weights_regularizer` on `conv2d` only:
    BatchNorm scale/bias (gamma/beta) and conv biases are not decayed. A leaf is selected iff
    its name is `kernel` and it is 4-D ([kh, kw, in, out]); 2-D Dense kernels are not selected.

    Args:
      params: nested dict (Flax params) or any pytree of arrays.

    Returns:
      A pytree with the structure of `params` and a Python bool per leaf; usable as the `mask`
      of `optax.add_decayed_weights` / `optax.masked`.
    """
    def is_conv_kernel(path: tuple[Any, ...], leaf: Any) -> bool:
        name = jax.tree_util.keystr(path[-1:], simple=True) if path else None
        return name == CONV_KERNEL_NAME and jnp.ndim(leaf) == CONV_KERNEL_NDIM

    return jax.tree_util.tree_map_with_path(is_conv_kernel, params)


def l2_weight_decay(params: PyTree, weight_decay: float) -> jax.Array:
    """L2 penalty on convolution kernels: weight_decay * 0.5 * sum(w ** 2).

    The 0.5 matches `tf.nn.l2_loss` inside slim's `l2_regularizer`, so the gradient on each
    kernel is exactly `weight_decay * w` (and zero on non-decayed parameters).

    Args:
      params: nested dict (Flax params) or any pytree of arrays.
      weight_decay: decay coefficient (e.g. 1e-4 for ResNet backbones).

    Returns:
      float32 scalar.
    """
    mask_leaves = jax.tree_util.tree_leaves(weight_decay_mask(params))
    param_leaves = jax.tree_util.tree_leaves(params)
    squared_norm = jnp.zeros((), jnp.float32)
    for leaf, decayed in zip(param_leaves, mask_leaves, strict=True):
        if decayed:
            squared_norm = squared_norm + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return weight_decay * 0.5 * squared_norm
