"""Tests for deeplab_jax.losses: ignore-aware cross-entropy and conv-only L2 weight decay."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax.training.losses import (
    l2_weight_decay,
    mean_cross_entropy,
    softmax_cross_entropy_sum,
    weight_decay_mask,
)

IGNORE = 255
NUM_CLASSES = 6
# Eager JAX compiles op by op (slow on CPU), so the tests go through jitted functions.
ce_sum = jax.jit(softmax_cross_entropy_sum)
mean_ce_value_and_grad = jax.jit(jax.value_and_grad(mean_cross_entropy))


def _random_inputs(seed: int, shape=(2, 4, 5)):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal(shape + (NUM_CLASSES,))).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, shape).astype(np.int32)
    labels[rng.random(shape) < 0.3] = IGNORE
    return logits, labels


def _numpy_reference(logits, labels):
    """float64 loss sum, valid count and d(mean loss)/d(logits), written out by hand."""
    x = logits.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    valid = labels != IGNORE
    total, count = 0.0, int(valid.sum())
    grad = np.zeros_like(x)
    for index in zip(*np.nonzero(valid)):
        label = labels[index]
        total -= log_probs[index + (label,)]
        one_hot = np.eye(NUM_CLASSES)[label]
        grad[index] = (np.exp(log_probs[index]) - one_hot) / count
    return total, count, grad


def test_cross_entropy_matches_numpy_reference():
    logits, labels = _random_inputs(0)
    expected_sum, expected_count, expected_grad = _numpy_reference(logits, labels)
    assert 0 < expected_count < labels.size
    loss_sum, count = ce_sum(jnp.asarray(logits), jnp.asarray(labels))
    assert loss_sum.dtype == jnp.float32 and count.dtype == jnp.float32
    np.testing.assert_allclose(float(loss_sum), expected_sum, rtol=1e-5)
    assert float(count) == expected_count
    mean, grad = mean_ce_value_and_grad(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(mean), expected_sum / expected_count, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, atol=1e-6)


def test_bfloat16_logits_are_computed_in_float32():
    logits, labels = _random_inputs(1)
    bf16 = jnp.asarray(logits).astype(jnp.bfloat16)
    expected_sum, _, _ = _numpy_reference(np.asarray(bf16.astype(jnp.float32)), labels)
    loss_sum, _ = ce_sum(bf16, jnp.asarray(labels))
    assert loss_sum.dtype == jnp.float32
    np.testing.assert_allclose(float(loss_sum), expected_sum, rtol=1e-5)


@pytest.mark.parametrize("junk", [1e4, -1e4, np.inf, np.nan])
def test_ignored_pixels_change_neither_loss_nor_gradient(junk):
    logits, labels = _random_inputs(2)
    ignored = labels == IGNORE
    changed = logits.copy()
    changed[ignored] = junk
    changed[ignored, 0] = -junk if np.isfinite(junk) else junk
    loss, grad = mean_ce_value_and_grad(jnp.asarray(logits), jnp.asarray(labels))
    loss_changed, grad_changed = mean_ce_value_and_grad(jnp.asarray(changed), jnp.asarray(labels))
    assert float(loss_changed) == float(loss)
    grad_changed = np.asarray(grad_changed)
    assert np.isfinite(grad_changed).all()
    np.testing.assert_array_equal(grad_changed, np.asarray(grad))
    assert (grad_changed[ignored] == 0.0).all()


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    logits, _ = _random_inputs(3)
    labels = jnp.full(logits.shape[:-1], IGNORE, jnp.int32)
    loss, grad = mean_ce_value_and_grad(jnp.asarray(logits), labels)
    assert float(loss) == 0.0
    grad = np.asarray(grad)
    assert np.isfinite(grad).all() and (grad == 0.0).all()
    loss_sum, count = ce_sum(jnp.asarray(logits), labels)
    assert float(loss_sum) == 0.0 and float(count) == 0.0


def test_mask_acts_like_ignore_label():
    logits, labels = _random_inputs(4)
    rng = np.random.default_rng(5)
    mask = rng.random(labels.shape) > 0.4
    labels_as_ignored = np.where(mask, labels, IGNORE)
    assert (labels_as_ignored != labels).any()
    fn = mean_ce_value_and_grad
    loss_masked, grad_masked = fn(jnp.asarray(logits), jnp.asarray(labels), mask=jnp.asarray(mask))
    loss_ignored, grad_ignored = fn(jnp.asarray(logits), jnp.asarray(labels_as_ignored))
    np.testing.assert_allclose(float(loss_masked), float(loss_ignored), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_masked), np.asarray(grad_ignored), atol=1e-7)
    expected_sum, expected_count, _ = _numpy_reference(logits, labels_as_ignored)
    loss_sum, count = ce_sum(
        jnp.asarray(logits), jnp.asarray(labels), mask=jnp.asarray(mask))
    assert float(count) == expected_count
    np.testing.assert_allclose(float(loss_sum), expected_sum, rtol=1e-5)


def _toy_params():
    """Flax-like nested params: conv kernels (4-D), a dense kernel (2-D), BN, biases."""
    rng = np.random.default_rng(6)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32))

    return {
        "root": {"conv": {"kernel": normal(7, 7, 3, 4), "bias": normal(4)}},
        "block1": {
            "unit1": {
                "conv1": {"kernel": normal(1, 1, 4, 2)},
                "bn1": {"scale": normal(2), "bias": normal(2)},
            },
        },
        "dense": {"kernel": normal(4, 3), "bias": normal(3)},
    }


def test_weight_decay_mask_selects_only_conv_kernels():
    mask = weight_decay_mask(_toy_params())
    expected = {
        "root": {"conv": {"kernel": True, "bias": False}},
        "block1": {"unit1": {"conv1": {"kernel": True},
                             "bn1": {"scale": False, "bias": False}}},
        "dense": {"kernel": False, "bias": False},
    }
    assert mask == expected


def test_l2_weight_decay_value_and_gradient():
    params = _toy_params()
    weight_decay = 1e-3
    conv_kernels = [params["root"]["conv"]["kernel"], params["block1"]["unit1"]["conv1"]["kernel"]]
    expected = weight_decay * 0.5 * sum(float(np.sum(np.asarray(k, np.float64) ** 2))
                                        for k in conv_kernels)
    value = jax.jit(l2_weight_decay)(params, weight_decay)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)

    grads = jax.jit(jax.grad(l2_weight_decay))(params, weight_decay)
    expected_grads = jax.tree_util.tree_map(np.zeros_like, params)
    expected_grads["root"]["conv"]["kernel"] = weight_decay * np.asarray(conv_kernels[0])
    expected_grads["block1"]["unit1"]["conv1"]["kernel"] = weight_decay * np.asarray(
        conv_kernels[1])
    jax.tree_util.tree_map(
        lambda g, e: np.testing.assert_allclose(np.asarray(g), e, rtol=1e-6, atol=0),
        grads, expected_grads)
