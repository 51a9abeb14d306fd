"""Evaluation: one dataset-level confusion matrix, optional multi-scale and flip inference.

The confusion matrix is summed on device over the whole split and fetched once. Padding
rows of the last batch (`valid` False) and ignore pixels (255) never count, and the number of
images seen is checked against the split size, so every image counts exactly once.
Evaluation may use another output stride than training: the parameter tree is the same.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax import metrics
from deeplab_jax.models.deeplab import MEAN_PIXEL
from deeplab_jax.models.resize import resize_bilinear

PyTree = Any


def predict_probabilities(model: nn.Module, variables: PyTree, images: jax.Array, *,
                          scales: Sequence[float] = (1.0,), flip: bool = False) -> jax.Array:
    """Class probabilities averaged over input scales and left-right flips (Sec. 4.3).

    Args:
      images: [B, H, W, 3] pixels in [0, 255].
      scales: input scales; each scaled input is resized (bilinear, aligned corners) to
        round(H * s) x round(W * s), and its probabilities back to H x W.
      flip: also average the mirrored input's (mirrored back) probabilities.

    Returns:
      float32 [B, H, W, K].
    """
    height, width = images.shape[1:3]
    total = 0.0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = resize_bilinear(images.astype(jnp.float32), size)
        views = [(scaled, False)] + ([(scaled[:, :, ::-1], True)] if flip else [])
        for view, flipped in views:
            probabilities = jax.nn.softmax(model.apply(variables, view, train=False), axis=-1)
            if flipped:
                probabilities = probabilities[:, :, ::-1]
            total = total + resize_bilinear(probabilities, (height, width))
    return total / (len(scales) * (2 if flip else 1))


def pad_with_mean_pixel(images: jax.Array, sizes: jax.Array) -> jax.Array:
    """Sets canvas padding to the mean pixel, 127.5 (0 after normalisation), as the official
    evaluation pads; the model sees it near the border of images smaller than the canvas.

    Args:
      images: [B, H, W, 3]; sizes: int32 [B, 2], the true (h, w) at the top-left.

    Returns:
      float32 [B, H, W, 3].
    """
    rows = jnp.arange(images.shape[1])[None, :, None] < sizes[:, 0, None, None]
    cols = jnp.arange(images.shape[2])[None, None, :] < sizes[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], images.astype(jnp.float32), MEAN_PIXEL)


def eval_step(variables: PyTree, batch: dict[str, jax.Array], *, model: nn.Module,
              num_classes: int, ignore_label: int, scales: Sequence[float],
              flip: bool) -> dict[str, jax.Array]:
    """Confusion matrix of one global batch.

    Args:
      batch: 'image' uint8 [B, H, W, 3], 'label' uint8 [B, H, W], 'size' int32 [B, 2] (each
        example's true size on the canvas), 'valid' bool [B].

    Returns:
      'confusion' int32 [K, K] (rows: ground truth), 'num_images' int32 (valid rows),
      'prediction' int32 [B, H, W], 'per_image_confusion' int32 [B, K, K] (zero for
      padding rows; their sum over B is 'confusion').
    """
    images = pad_with_mean_pixel(batch["image"], batch["size"])
    probabilities = predict_probabilities(model, variables, images, scales=scales, flip=flip)
    prediction = jnp.argmax(probabilities, axis=-1).astype(jnp.int32)
    labels = batch["label"].astype(jnp.int32)
    mask = jnp.broadcast_to(batch["valid"][:, None, None], labels.shape)
    confusion = metrics.confusion_matrix(labels, prediction, num_classes,
                                         ignore_label=ignore_label, mask=mask)
    per_image_confusion = jax.vmap(functools.partial(
        metrics.confusion_matrix, num_classes=num_classes, ignore_label=ignore_label))(
            labels, prediction, mask=mask)
    return {"confusion": confusion, "num_images": jnp.sum(batch["valid"].astype(jnp.int32)),
            "prediction": prediction, "per_image_confusion": per_image_confusion}


def make_eval_step(model: nn.Module, *, num_classes: int, ignore_label: int,
                   scales: Sequence[float], flip: bool) -> Any:
    return jax.jit(functools.partial(eval_step, model=model, num_classes=num_classes,
                                     ignore_label=ignore_label, scales=tuple(scales), flip=flip))


def evaluate(step_fn: Any, variables: PyTree, batches: Iterable[dict[str, jax.Array]], *,
             num_classes: int, expected_num_images: int, class_names: Sequence[str],
             num_visualizations: int = 0,
             per_image: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Runs `step_fn` over the split and turns the summed confusion matrix into metrics.

    With `per_image` (a `reports.PerImageStats`), each valid row of this process also gets
    its own mIoU, the running best and worst examples are kept (with the prediction outside
    the image's true size set to 255) and `per_image.confusion` is set to the split's matrix.

    Returns:
      (metrics dict as in `metrics.metrics_from_confusion_matrix` plus 'num_images', and the
      first `num_visualizations` examples: 'image', 'label', 'prediction' numpy arrays).
    """
    confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
    num_images = jnp.zeros((), jnp.int32)
    shown: dict[str, list[np.ndarray]] = {"image": [], "label": [], "prediction": []}
    pending = None  # Per-image statistics lag one batch: the device runs ahead meanwhile.
    for batch in batches:
        outputs = step_fn(variables, batch)
        confusion = confusion + outputs["confusion"]
        num_images = num_images + outputs["num_images"]
        if len(shown["image"]) < num_visualizations:
            # Only this process's rows are addressable; that is enough for pictures.
            valid = np.asarray(_local_rows(batch["valid"]))
            for key, array in (("image", batch["image"]), ("label", batch["label"]),
                               ("prediction", outputs["prediction"])):
                shown[key].extend(np.asarray(_local_rows(array))[valid])
        if per_image is not None:
            if pending is not None:
                _add_per_image(per_image, *pending)
            pending = (batch, outputs)
    if pending is not None:
        _add_per_image(per_image, *pending)
    num_images = int(num_images)
    if num_images != expected_num_images:
        raise RuntimeError(
            f"Evaluation saw {num_images} images but the split has {expected_num_images}; "
            "the input pipeline dropped or repeated examples.")
    results = metrics.metrics_from_confusion_matrix(np.asarray(confusion), class_names)
    if per_image is not None:
        per_image.confusion = np.asarray(confusion)
    results["num_images"] = num_images
    pictures = {key: np.stack(value[:num_visualizations]) for key, value in shown.items()
                if value}
    return results, pictures


def _add_per_image(per_image: Any, batch: dict[str, jax.Array],
                   outputs: dict[str, jax.Array]) -> None:
    """Feeds this process's valid rows of one batch to `per_image` (a PerImageStats)."""
    rows = np.flatnonzero(np.asarray(_local_rows(batch["valid"])))

    def fetch(selected):
        picked = rows[np.asarray(selected)]
        image, label = (np.asarray(_local_rows(batch[key]))[picked] for key in ("image", "label"))
        prediction = np.asarray(_local_rows(outputs["prediction"]))[picked]
        sizes = np.asarray(_local_rows(batch["size"]))[picked]
        inside = ((np.arange(prediction.shape[1])[None, :, None] < sizes[:, 0, None, None])
                  & (np.arange(prediction.shape[2])[None, None, :] < sizes[:, 1, None, None]))
        return {"image": image, "label": label,
                "prediction": np.where(inside, prediction, 255).astype(np.int32)}

    per_image.add_batch(np.asarray(_local_rows(outputs["per_image_confusion"]))[rows], fetch)


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in order."""
    if isinstance(array, np.ndarray) or array.is_fully_addressable:
        return np.asarray(array)
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])


def evaluation_name(split: str, step: int, *, output_stride: int, scales: Sequence[float],
                    flip: bool) -> str:
    """`{split}_step{step:08d}_os{stride}[_ms{scales}][_flip]`: one name per setting, so an
    evaluation at another stride or with multi-scale inference never overwrites another."""
    name = f"{split}_step{step:08d}_os{output_stride}"
    if tuple(scales) != (1.0,):
        name += "_ms" + "-".join(f"{scale:g}" for scale in scales)
    return name + ("_flip" if flip else "")


def write_json(path: str, record: Any) -> str:
    """Writes `record` to `path` atomically (the metrics here, train.py's timing record)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(record, file, indent=2)
    os.replace(temporary, path)  # Never leave a half-written file under the final name.
    return path


def write_metrics_json(workdir: str, name: str, record: dict[str, Any]) -> str:
    """Writes WORKDIR/eval/NAME.json atomically; returns the path."""
    return write_json(os.path.join(workdir, "eval", f"{name}.json"), record)
