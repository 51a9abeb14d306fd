"""Semantic-segmentation evaluation metrics.

This module owns two things:
- `confusion_matrix`: a jittable, sharding-friendly [K, K] confusion matrix of one batch. It is
  the only thing computed on device; summing these matrices over batches (and hosts) gives the
  confusion matrix of the whole evaluation set.
- `metrics_from_confusion_matrix`: host-side NumPy reduction of an accumulated matrix into pixel
  accuracy, mean accuracy, mIoU, fwIoU and per-class scores, as plain JSON-serialisable values.

The conventions follow `tf.metrics.mean_iou`, which the official DeepLab evaluation
(tensorflow/models research/deeplab/eval.py) uses for the mIoU numbers of the DeepLabv3 paper.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_IGNORE_LABEL = 255  # PASCAL VOC / Cityscapes-trainId "void" label.


def confusion_matrix(
    labels: jax.Array,
    predictions: jax.Array,
    num_classes: int,
    *,
    ignore_label: int = DEFAULT_IGNORE_LABEL,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Counts (ground truth, prediction) pairs over the valid pixels.

    A pixel is valid when its label differs from `ignore_label` and `mask` (if given) is True
    there. Invalid pixels contribute nothing, whatever their label or prediction value (either
    may be out of range). Precondition, not checkable under `jit`: at valid pixels, labels and
    predictions lie in [0, num_classes); otherwise a pixel lands in a wrong cell or is dropped.

    Counts are int32, so one matrix, including one accumulated over many batches, must hold
    fewer than 2**31 pixels (~1000 Cityscapes images of 1024x2048). Accumulate in int64 on the
    host (e.g. `np.asarray(cm, np.int64)` per batch) for larger evaluations.

    Args:
      labels: int [B, H, W] (any shape) ground-truth class ids.
      predictions: int array with the shape of `labels`, predicted class ids.
      num_classes: K, the number of classes.
      ignore_label: label of pixels to skip.
      mask: optional bool array with the shape of `labels`; False pixels are skipped (e.g.
        padding added to batch images of different sizes).

    Returns:
      int32 [K, K]; entry [i, j] counts pixels of ground-truth class i predicted as class j
      (rows = ground truth, columns = prediction).
    """
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must have the same shape.")
    if mask is not None and mask.shape != labels.shape:
        raise ValueError(f"mask {mask.shape} must have the shape of labels {labels.shape}.")

    labels = labels.astype(jnp.int32).reshape(-1)
    predictions = predictions.astype(jnp.int32).reshape(-1)
    valid = labels != ignore_label
    if mask is not None:
        valid = valid & mask.reshape(-1).astype(bool)

    # Invalid pixels go to cell 0 with weight 0: their label (e.g. 255) or prediction could
    # otherwise index outside the K*K buffer (or alias another cell).
    flat_index = jnp.where(valid, labels * num_classes + predictions, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32)
    counts = counts.at[flat_index].add(valid.astype(jnp.int32), mode="drop")
    return counts.reshape(num_classes, num_classes)


def _none_where_nan(values: np.ndarray) -> list[float | None]:
    """Converts a float vector to a list of Python floats, undefined (NaN) entries as None."""
    return [None if np.isnan(v) else float(v) for v in values]


def metrics_from_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Reduces an accumulated confusion matrix to segmentation metrics.

    With TP_c = C[c, c], GT_c = row sum of c, PRED_c = column sum of c and N = sum of C:
    - pixel_accuracy = sum_c TP_c / N.
    - per_class_accuracy_c = TP_c / GT_c; None when GT_c = 0.
    - mean_accuracy: mean of per_class_accuracy over classes with GT_c > 0.
    - per_class_iou_c = TP_c / (GT_c + PRED_c - TP_c) = TP / (TP + FP + FN); None when the union
      is 0, i.e. the class is in neither ground truth nor prediction.
    - miou: mean of per_class_iou over classes with a non-zero union. As in tf.metrics.mean_iou,
      a class absent from the ground truth but predicted has IoU 0 and *does* count (false
      positives are penalised); only classes with zero union are excluded.
    - fwiou = sum_c freq_c * IoU_c with freq_c = GT_c / N; classes with freq_c = 0 contribute
      nothing (their IoU is 0 or undefined).

    Args:
      confusion: [K, K] array-like, rows = ground truth, columns = prediction; e.g. the sum of
        `confusion_matrix` over the evaluation set. Cast to int64.
      class_names: optional K class names; adds `per_class_iou_by_name`.

    Returns:
      Plain Python values: `pixel_accuracy`, `mean_accuracy`, `miou`, `fwiou` (float),
      `per_class_iou`, `per_class_accuracy` (length-K lists, None where undefined),
      `num_pixels` (int) and, with `class_names`, `per_class_iou_by_name` ({name: float|None}).

    Raises:
      ValueError: if the matrix is not square, has negative counts, holds no pixel (evaluating
        nothing is a bug, never a silent 0), or `class_names` has the wrong length.
    """
    confusion = np.asarray(confusion).astype(np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be [K, K], got shape {confusion.shape}.")
    if (confusion < 0).any():
        raise ValueError("confusion has negative counts (int32 overflow while accumulating?).")
    num_classes = confusion.shape[0]
    num_pixels = int(confusion.sum())
    if num_pixels == 0:
        raise ValueError(
            "Empty confusion matrix: no valid pixel was evaluated (all ignored or masked?), "
            "so the metrics are undefined.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"Got {len(class_names)} class names for {num_classes} classes.")

    true_positives = np.diag(confusion).astype(np.float64)
    gt_pixels = confusion.sum(axis=1).astype(np.float64)
    pred_pixels = confusion.sum(axis=0).astype(np.float64)
    union = gt_pixels + pred_pixels - true_positives
    in_gt = gt_pixels > 0
    has_union = union > 0

    # `where=` skips 0/0 (no warning); skipped entries keep the NaN of `out` = undefined.
    accuracy = np.divide(true_positives, gt_pixels, out=np.full(num_classes, np.nan), where=in_gt)
    iou = np.divide(true_positives, union, out=np.full(num_classes, np.nan), where=has_union)
    frequency = gt_pixels / num_pixels

    # num_pixels > 0 guarantees at least one class with GT_c > 0 (so also a non-zero union),
    # hence no mean below is over an empty set.
    results: dict[str, Any] = {
        "pixel_accuracy": float(true_positives.sum() / num_pixels),
        "mean_accuracy": float(accuracy[in_gt].mean()),
        "miou": float(iou[has_union].mean()),
        "fwiou": float((frequency[in_gt] * iou[in_gt]).sum()),
        "per_class_iou": _none_where_nan(iou),
        "per_class_accuracy": _none_where_nan(accuracy),
        "num_pixels": num_pixels,
    }
    if class_names is not None:
        results["per_class_iou_by_name"] = dict(zip(class_names, results["per_class_iou"]))
    return results
