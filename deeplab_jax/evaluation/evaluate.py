"""Evaluation: one dataset-level confusion matrix, optional multi-scale and flip inference.

The confusion matrix is summed on device over the whole split and fetched once. Padding
rows of the last batch (`valid` False) and ignore pixels (255) never count, and the number of
images seen is checked against the split size, so every image counts exactly once.
Evaluation may use another output stride than training: the parameter tree is the same.

What crosses between host and device: each batch goes to the device once; what comes back
is the split's confusion matrix (once, at the end) and, for the few images that enter the
pictures or the best/worst report, their predictions. Images and labels for those pictures
come from the host batch that was sent, never back from the device. A log line with the
ETA appears every 30 s, for evaluations that take minutes (multi-scale + flip on VOC).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Iterable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from deeplab_jax.evaluation import crf, metrics
from deeplab_jax.evaluation.per_image import PerImageStats, label_digest
from deeplab_jax.models.segmenter import MEAN_PIXEL
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.reporting.eta import ProgressLog

# The exact CRF's kernel values per second on 2 AMD EPYC Zen 4 cores, JAX 0.10.2, from
# experiments/crf_agreement (360x480: 11 x 172800^2 values in 1701 s, the cores shared with a
# training run; 180x240: 1.1e8/s, shared with two): only for the estimate `refine` logs.
CPU_KERNEL_VALUES_PER_S = 2e8

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


def inside(sizes: jax.Array, height: int, width: int) -> jax.Array:
    """bool [B, H, W]: the pixels of each example's true size (top-left) on the canvas."""
    rows = jnp.arange(height)[None, :, None] < sizes[:, 0, None, None]
    cols = jnp.arange(width)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def refine(probabilities: jax.Array, images: jax.Array, sizes: jax.Array,
           crf_params: Optional[crf.CRFParams]) -> jax.Array:
    """The dense CRF after the network, when asked (`evaluation/crf.py`); else unchanged."""
    if crf_params is None:
        return probabilities
    height, width = images.shape[1:3]
    if crf_params.downsample == 1 and not crf.caches_kernel(height * width, crf_params) \
            and jax.default_backend() == "cpu":  # logged once per compilation, not per batch
        logging.warning(
            "The exact dense CRF recomputes its %dx%d appearance kernel in every iteration on "
            "this %dx%d canvas: about %.0f minutes per image on CPU (measured: 28 minutes at "
            "360x480 on 2 Zen 4 cores). --config.eval.crf.downsample=2 takes about 5 minutes "
            "there and agreed with the exact labels on 99.3-99.7%% of a CamVid image's pixels at "
            "360x480 (downsample=4: 1 minute, 98.4-99.3%%; fewer at smaller sizes; "
            "experiments/crf_agreement).", height * width, height * width, height,
            width, crf.exact_kernel_values(height * width, crf_params) / CPU_KERNEL_VALUES_PER_S
            / 60)
    valid = inside(sizes, height, width)
    return crf.mean_field(probabilities, images, valid, crf_params)


def crf_params(eval_config: Any) -> Optional[crf.CRFParams]:
    """`config.eval.crf` as CRFParams, or None when it is off (or absent)."""
    block = eval_config.get("crf")
    if not block or not block.enabled:
        return None
    return crf.CRFParams(**{key: value for key, value in block.items() if key != "enabled"})


def pad_with_mean_pixel(images: jax.Array, sizes: jax.Array) -> jax.Array:
    """Sets canvas padding to the mean pixel, 127.5 (0 after normalisation), as the official
    evaluation pads; the model sees it near the border of images smaller than the canvas.

    Args:
      images: [B, H, W, 3]; sizes: int32 [B, 2], the true (h, w) at the top-left.

    Returns:
      float32 [B, H, W, 3].
    """
    return jnp.where(inside(sizes, *images.shape[1:3])[..., None], images.astype(jnp.float32),
                     MEAN_PIXEL)


def eval_step(variables: PyTree, batch: dict[str, jax.Array], *, model: nn.Module,
              num_classes: int, ignore_label: int, scales: Sequence[float],
              flip: bool, crf_params: Optional[crf.CRFParams] = None) -> dict[str, jax.Array]:
    """Confusion matrices of one global batch (the dense CRF after the network if asked).

    Args:
      batch: 'image' uint8 [B, H, W, 3], 'label' uint8 [B, H, W], 'size' int32 [B, 2] (each
        example's true size on the canvas), 'valid' bool [B].

    Returns:
      'per_image_confusion' int32 [B, K, K] (rows: ground truth; zero for padding rows),
      'confusion' int32 [K, K] (their sum), 'num_images' int32 (valid rows), 'prediction'
      int32 [B, H, W].
    """
    images = pad_with_mean_pixel(batch["image"], batch["size"])
    probabilities = predict_probabilities(model, variables, images, scales=scales, flip=flip)
    probabilities = refine(probabilities, images, batch["size"], crf_params)
    prediction = jnp.argmax(probabilities, axis=-1).astype(jnp.int32)
    labels = batch["label"].astype(jnp.int32)
    mask = jnp.broadcast_to(batch["valid"][:, None, None], labels.shape)
    per_image_confusion = jax.vmap(functools.partial(
        metrics.confusion_matrix, num_classes=num_classes, ignore_label=ignore_label))(
            labels, prediction, mask=mask)
    return {"per_image_confusion": per_image_confusion,
            "confusion": jnp.sum(per_image_confusion, axis=0),
            "num_images": jnp.sum(batch["valid"].astype(jnp.int32)),
            "prediction": prediction}


def make_eval_step(model: nn.Module, *, num_classes: int, ignore_label: int,
                   scales: Sequence[float], flip: bool,
                   crf_params: Optional[crf.CRFParams] = None) -> Any:
    return jax.jit(functools.partial(eval_step, model=model, num_classes=num_classes,
                                     ignore_label=ignore_label, scales=tuple(scales), flip=flip,
                                     crf_params=crf_params))


def evaluate(step_fn: Any, variables: PyTree, host_batches: Iterable[dict[str, np.ndarray]], *,
             to_device: Callable[[dict[str, np.ndarray]], dict[str, jax.Array]],
             num_classes: int, expected_num_images: int, class_names: Sequence[str],
             num_visualizations: int = 0, per_image: Optional[PerImageStats] = None,
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Runs `step_fn` over the split and turns the summed confusion matrix into metrics.

    Args:
      host_batches: this process's rows of each global batch (`input_pipeline.eval_batches`).
      to_device: host batch -> global batch (`parallel.to_global_batch`).
      per_image: if given, each valid row of this process also gets its own mIoU, the
        running best and worst examples are kept (with the prediction outside the image's
        true size set to 255), `per_image.confusion` is set to the split's matrix, and
        `per_image.confusions`, `.positions` and `.digests` to every image's matrix,
        dataset position and label digest, gathered from all processes in dataset order.

    Returns:
      (metrics dict as in `metrics.metrics_from_confusion_matrix` plus 'num_images', and the
      first `num_visualizations` examples: 'image', 'label', 'prediction' numpy arrays).
    """
    confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
    num_images = jnp.zeros((), jnp.int32)
    shown: dict[str, list[np.ndarray]] = {"image": [], "label": [], "prediction": []}
    progress = ProgressLog("evaluation", expected_num_images, "images")
    pending = None  # Per-image statistics lag one batch: the device runs ahead meanwhile.
    rows_seen = 0  # this process's rows, padding included: the same on every process
    for host_batch in host_batches:
        outputs = step_fn(variables, to_device(
            {key: value for key, value in host_batch.items() if key != "index"}))
        rows_seen += len(host_batch["valid"])
        confusion = confusion + outputs["confusion"]
        num_images = num_images + outputs["num_images"]
        valid = np.asarray(host_batch["valid"])
        if len(shown["image"]) < num_visualizations:
            # Only this process's rows are addressable; that is enough for pictures.
            shown["image"].extend(host_batch["image"][valid])
            shown["label"].extend(host_batch["label"][valid])
            shown["prediction"].extend(_local_rows(outputs["prediction"])[valid])
        if per_image is not None:
            if pending is not None:
                _add_per_image(per_image, *pending)
            pending = (host_batch, outputs)
        progress.update(int(valid.sum()) * jax.process_count())
    if pending is not None:
        _add_per_image(per_image, *pending)
        _gather_per_image(per_image, rows_seen, num_classes)
    num_images = int(num_images)
    if num_images != expected_num_images:
        raise RuntimeError(
            f"Evaluation saw {num_images} images but the split has {expected_num_images}; "
            "the input pipeline dropped or repeated examples.")
    results = metrics.metrics_from_confusion_matrix(np.asarray(confusion), class_names)
    if per_image is not None:
        per_image.confusion = np.asarray(confusion)
        if not np.array_equal(per_image.positions, np.arange(num_images)):
            raise RuntimeError("The per-image results do not cover the split's positions "
                               "0..N-1 once each; the input pipeline reordered examples.")
    results["num_images"] = num_images
    pictures = {key: np.stack(value[:num_visualizations]) for key, value in shown.items()
                if value}
    return results, pictures


def _add_per_image(per_image: PerImageStats, host_batch: dict[str, np.ndarray],
                   outputs: dict[str, jax.Array]) -> None:
    """Feeds this process's valid rows of one batch to `per_image`."""
    rows = np.flatnonzero(np.asarray(host_batch["valid"]))

    def fetch(selected):
        picked = rows[np.asarray(selected)]
        prediction = _local_rows(outputs["prediction"])[picked]
        sizes = host_batch["size"][picked]
        inside = ((np.arange(prediction.shape[1])[None, :, None] < sizes[:, 0, None, None])
                  & (np.arange(prediction.shape[2])[None, None, :] < sizes[:, 1, None, None]))
        return {"image": host_batch["image"][picked], "label": host_batch["label"][picked],
                "prediction": np.where(inside, prediction, 255).astype(np.int32)}

    sizes = host_batch["size"][rows]
    digests = [label_digest(host_batch["label"][row, :height, :width])
               for row, (height, width) in zip(rows, sizes)]
    positions = host_batch["index"][rows] if "index" in host_batch else None
    per_image.add_batch(_local_rows(outputs["per_image_confusion"])[rows], fetch,
                        positions=positions, digests=digests)


def _gather_per_image(per_image: PerImageStats, rows_per_process: int,
                      num_classes: int) -> None:
    """Every process's per-image matrices, positions and digests, in dataset order.

    Each process pads its lists to `rows_per_process` (position -1), the same length on
    every process, so one all-gather brings them together; a single process only sorts.
    """
    confusions = np.asarray(per_image.confusions, np.int32).reshape(-1, num_classes,
                                                                    num_classes)
    positions = np.asarray(per_image.positions, np.int64)
    if len(positions) != len(confusions):
        if jax.process_count() > 1:
            raise ValueError("Per-image results over several processes need the batches' "
                             "'index' (input_pipeline.eval_batches yields it).")
        positions = np.arange(len(confusions))  # one process: the order the rows came in
    digests = np.asarray([np.frombuffer(bytes.fromhex(d), "<u4") for d in per_image.digests],
                         np.uint32).reshape(-1, 2)
    if jax.process_count() > 1:
        padding = rows_per_process - len(confusions)
        confusions = np.pad(confusions, ((0, padding), (0, 0), (0, 0)))
        positions = np.pad(positions.astype(np.int32), (0, padding), constant_values=-1)
        digests = np.pad(digests, ((0, padding), (0, 0)))
        gathered = multihost_utils.process_allgather(
            {"confusions": confusions, "positions": positions, "digests": digests})
        kept = np.asarray(gathered["positions"]).reshape(-1) >= 0
        confusions, positions, digests = (np.asarray(gathered[key]).reshape(
            -1, *gathered[key].shape[2:])[kept] for key in ("confusions", "positions",
                                                             "digests"))
    order = np.argsort(positions, kind="stable")
    per_image.confusions = confusions[order]
    per_image.positions = positions[order]
    per_image.digests = np.asarray([row.astype("<u4").tobytes().hex() for row in digests],
                                   dtype="U16")[order] if len(digests) else np.asarray(
                                       [], "U16")


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in order."""
    if isinstance(array, np.ndarray) or array.is_fully_addressable:
        return np.asarray(array)
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])
