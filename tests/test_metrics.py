"""Tests for deeplab_jax.metrics: confusion matrix vs NumPy, and hand-computed metrics."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from deeplab_jax.evaluation.metrics import confusion_matrix, metrics_from_confusion_matrix

IGNORE = 255
NUM_CLASSES = 5
# Eager JAX compiles op by op (slow on CPU); most tests go through one jitted function.
jit_confusion_matrix = jax.jit(confusion_matrix, static_argnames=("num_classes", "ignore_label"))


def _reference_confusion(labels, predictions, num_classes, ignore_label, mask=None):
    """Per-pixel NumPy reference, independent of the flat-index trick."""
    valid = labels != ignore_label
    if mask is not None:
        valid &= mask
    expected = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(expected, (labels[valid], predictions[valid]), 1)
    return expected


def _random_batch(seed: int, shape=(8, 6, 7)):
    """Labels with ignored pixels, a mask, and junk (out-of-range) predictions where invalid."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, shape).astype(np.int32)
    labels[rng.random(shape) < 0.2] = IGNORE
    predictions = rng.integers(0, NUM_CLASSES, shape).astype(np.int32)
    mask = rng.random(shape) > 0.15
    invalid = (labels == IGNORE) | ~mask
    # Values that would index out of the K*K buffer or alias other cells if counted.
    predictions[invalid] = rng.choice([-7, 99, 1000, 3], size=int(invalid.sum()))
    return labels, predictions, mask


def test_confusion_matrix_matches_numpy_reference():
    labels, predictions, mask = _random_batch(0)
    expected = _reference_confusion(labels, predictions, NUM_CLASSES, IGNORE, mask)
    assert expected.sum() > 0
    got = confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), NUM_CLASSES,
                           mask=jnp.asarray(mask))
    assert got.dtype == jnp.int32 and got.shape == (NUM_CLASSES, NUM_CLASSES)
    np.testing.assert_array_equal(np.asarray(got), expected)

    # Without a mask only ignore_label filters (out-of-range predictions are only at
    # ignored pixels here, so restore in-range ones where the mask alone was False).
    predictions_no_mask = np.where(labels == IGNORE, predictions, predictions % NUM_CLASSES)
    expected_no_mask = _reference_confusion(labels, predictions_no_mask, NUM_CLASSES, IGNORE)
    got_no_mask = confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions_no_mask),
                                   NUM_CLASSES)
    np.testing.assert_array_equal(np.asarray(got_no_mask), expected_no_mask)


def test_confusion_matrix_jit_on_sharded_batch():
    labels, predictions, mask = _random_batch(1)
    expected = _reference_confusion(labels, predictions, NUM_CLASSES, IGNORE, mask)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    args = [jax.device_put(x, sharding) for x in (labels, predictions, mask)]
    got = jit_confusion_matrix(args[0], args[1], num_classes=NUM_CLASSES, mask=args[2])
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_custom_ignore_label():
    labels = np.array([[0, 1, 2, 1]])
    predictions = np.array([[0, 1, 1, 2]])
    got = jit_confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), num_classes=3,
                               ignore_label=1)
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # Pixel 0.
    expected[2, 1] = 1  # Pixel 2; pixels 1 and 3 have label 1 = ignored.
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_all_ignored_pixels_with_out_of_range_predictions_count_nothing():
    # With K = 300, an ignored pixel's raw flat index 255 * 300 + p is inside the buffer, so
    # this fails unless ignored pixels get weight 0 (not merely an out-of-range index).
    num_classes = 300
    labels = jnp.full((2, 3, 3), IGNORE, jnp.int32)
    predictions = jnp.asarray(np.array([-5, 0, 7, 299, 1000, 3, 2, 1, 0] * 2).reshape(2, 3, 3))
    got = jit_confusion_matrix(labels, predictions, num_classes=num_classes)
    assert int(np.asarray(got).sum()) == 0


def test_summing_batches_equals_concatenation():
    batches = [_random_batch(seed, shape=(2, 5, 4)) for seed in range(3)]
    total = sum(
        np.asarray(jit_confusion_matrix(jnp.asarray(l), jnp.asarray(p), num_classes=NUM_CLASSES,
                                        mask=jnp.asarray(m)), np.int64)
        for l, p, m in batches)
    labels, predictions, mask = (np.concatenate(parts) for parts in zip(*batches))
    whole = jit_confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions),
                                 num_classes=NUM_CLASSES, mask=jnp.asarray(mask))
    np.testing.assert_array_equal(total, np.asarray(whole))


def test_hand_built_metrics():
    # K = 4. Eight valid pixels: GT = 0 x5, 1 x3.
    #   GT 0 predicted as 0, 0, 0, 0, 2    GT 1 predicted as 1, 0, 0
    # plus one ignored pixel (label 255, prediction 99) and one masked pixel (label 3,
    # prediction 3) that must not make class 3 present.
    labels = np.array([[[0, 0, 0, 0, 0], [1, 1, 1, IGNORE, 3]]])
    predictions = np.array([[[0, 0, 0, 0, 2], [1, 0, 0, 99, 3]]])
    mask = np.ones_like(labels, bool)
    mask[0, 1, 4] = False
    cm = np.asarray(jit_confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions),
                                         num_classes=4, mask=jnp.asarray(mask)))
    expected_cm = np.array([[4, 0, 1, 0],
                            [2, 1, 0, 0],
                            [0, 0, 0, 0],
                            [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected_cm)

    m = metrics_from_confusion_matrix(cm, class_names=["bg", "cat", "dog", "car"])
    # TP = (4, 1, 0, 0); GT rows = (5, 3, 0, 0); predicted columns = (6, 1, 1, 0).
    # Unions: 5 + 6 - 4 = 7; 3 + 1 - 1 = 3; 0 + 1 - 0 = 1 (predicted only); 0 (excluded).
    iou = [4 / 7, 1 / 3, 0.0, None]
    assert m["num_pixels"] == 8
    assert m["pixel_accuracy"] == pytest.approx((4 + 1) / 8)
    assert m["per_class_accuracy"][:2] == pytest.approx([4 / 5, 1 / 3])
    assert m["per_class_accuracy"][2:] == [None, None]
    assert m["mean_accuracy"] == pytest.approx((4 / 5 + 1 / 3) / 2)
    assert m["per_class_iou"][:3] == pytest.approx(iou[:3])
    assert m["per_class_iou"][3] is None
    # Class 2 (IoU 0) counts in the mean, class 3 does not: 19/63, not 0.452 or 0.226.
    assert m["miou"] == pytest.approx((4 / 7 + 1 / 3 + 0.0) / 3)
    assert m["fwiou"] == pytest.approx(5 / 8 * 4 / 7 + 3 / 8 * 1 / 3)
    assert m["per_class_iou_by_name"]["dog"] == 0.0
    assert m["per_class_iou_by_name"]["car"] is None
    json.dumps(m)  # Plain Python values only.
    assert all(type(v) in (float, int, list, dict) for v in m.values())


def test_perfect_prediction_and_jax_input():
    cm = jnp.asarray(np.diag([3, 0, 2]).astype(np.int32))
    m = metrics_from_confusion_matrix(cm)
    assert m["miou"] == 1.0 and m["pixel_accuracy"] == 1.0 and m["fwiou"] == 1.0
    assert m["per_class_iou"] == [1.0, None, 1.0]
    assert "per_class_iou_by_name" not in m


def test_empty_confusion_matrix_raises():
    with pytest.raises(ValueError, match="[Ee]mpty"):
        metrics_from_confusion_matrix(np.zeros((3, 3), np.int32))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        metrics_from_confusion_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError):
        metrics_from_confusion_matrix(np.ones((2, 2)), class_names=["a"])
    with pytest.raises(ValueError):
        confusion_matrix(jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 2), jnp.int32), 2)
