"""What an evaluation leaves in the workdir: metrics JSON, pictures, TensorBoard scalars.

For evaluation NAME (`evaluation_name`: split, step and inference setting):

- `WORKDIR/eval/NAME.json`: every metric (`metrics.metrics_from_confusion_matrix`), the
  95% bootstrap intervals of mIoU, pixel accuracy and per-class IoU over the images
  (`intervals.interval`), the image count, step, split, output stride, scales, flip and
  seconds taken;
- `WORKDIR/eval/NAME_per_image.npz`: every image's confusion matrix, its name and label
  digest (`write_per_image`): what `python -m deeplab_jax.compare` pairs;
- `WORKDIR/predictions/NAME.png`: image | ground truth | prediction for the first val
  images (also to TensorBoard);
- `WORKDIR/eval/NAME_{confusion,iou,best_worst}.png` (`reporting/figures.py`);
- TensorBoard scalars `eval/miou`, `eval/pixel_accuracy`, `eval/mean_accuracy`, `eval/fwiou`.

Files are written by process 0 only, each atomically (a temporary name, then a rename).
"""
from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from deeplab_jax.evaluation import intervals
from deeplab_jax.evaluation.per_image import FILE_SUFFIX, PerImageStats
from deeplab_jax.reporting import figures, visualize
from deeplab_jax.reporting.writer import MetricWriter

SCALARS = ("miou", "pixel_accuracy", "mean_accuracy", "fwiou")


def evaluation_name(split: str, step: int, *, output_stride: int, scales: Sequence[float],
                    flip: bool, crf: bool = False, crf_downsample: int = 1) -> str:
    """`{split}_step{step:08d}_os{stride}[_ms{scales}][_flip][_crf[_grid{s}]]`: one name per
    setting, so an evaluation at another stride, with multi-scale inference or with the CRF
    (exact, or its approximation on a grid of stride s) never overwrites another."""
    name = f"{split}_step{step:08d}_os{output_stride}"
    if tuple(scales) != (1.0,):
        name += "_ms" + "-".join(f"{scale:g}" for scale in scales)
    crf_name = "_crf" + (f"_grid{crf_downsample}" if crf_downsample > 1 else "")
    return name + ("_flip" if flip else "") + (crf_name if crf else "")


def write_atomically(path: str, data: bytes) -> str:
    """Writes `data` to `path` under a temporary name, then renames it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)  # Never leave a half-written file under the final name.
    return path


def write_json(path: str, record: Any) -> str:
    """Writes `record` to `path` atomically (metrics here, `timing.json` in training)."""
    return write_atomically(path, json.dumps(record, indent=2).encode())


def write_per_image(workdir: str, name: str, stats: PerImageStats, *,
                    class_names: Sequence[str], image_ids: Optional[Sequence[str]],
                    record: dict[str, Any]) -> str:
    """Writes WORKDIR/eval/NAME_per_image.npz atomically: the split's per-image matrices.

    The file holds `confusion` int32 [N, K, K] (dataset order; rows: ground truth),
    `label_digest` [N] (`per_image.label_digest`), `image_id` [N] (the source's names, ''
    where it has none), `class_names` [K] and `record` (the evaluation's settings, JSON).
    Strings are stored as NumPy text arrays: no pickled objects (`per_image.load`).
    """
    confusions = np.asarray(stats.confusions, np.int32)
    arrays = {"confusion": confusions,
              "label_digest": np.asarray(stats.digests, dtype="U16"),
              "image_id": np.asarray(list(image_ids) if image_ids is not None
                                     else [""] * len(confusions), dtype=str),
              "class_names": np.asarray(list(class_names), dtype=str),
              "record": np.asarray(json.dumps(record))}
    for key in ("label_digest", "image_id"):
        if len(arrays[key]) != len(confusions):
            raise ValueError(f"{name}: {len(confusions)} per-image matrices but "
                             f"{len(arrays[key])} entries of {key}.")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_atomically(
        os.path.join(workdir, "eval", f"{name}{FILE_SUFFIX}"), buffer.getvalue())


def write_metrics_json(workdir: str, name: str, record: dict[str, Any]) -> str:
    """Writes WORKDIR/eval/NAME.json atomically; returns the path."""
    return write_json(os.path.join(workdir, "eval", f"{name}.json"), record)


def write_evaluation(workdir: str, writer: MetricWriter, *, name: str,
                     record: dict[str, Any], pictures: dict[str, np.ndarray],
                     per_image: PerImageStats, class_names: Sequence[str],
                     palette: np.ndarray, image_ids: Optional[Sequence[str]] = None) -> None:
    """Writes evaluation `name`'s files (module docstring) and its TensorBoard scalars.

    Args:
      record: the metrics plus 'step', 'split', the inference settings and, when computed,
        'intervals' (`intervals.interval`).
      pictures: 'image', 'label', 'prediction' of the first val images (may be empty).
      image_ids: the eval source's name of each image, in dataset order (or None).
    """
    step = record["step"]
    bounds = record.get("intervals", {}).get("miou")
    writer.write_scalars(step, {f"eval/{key}": record[key] for key in SCALARS} | (
        {"eval/miou_low": bounds["low"], "eval/miou_high": bounds["high"]} if bounds else {}))
    if jax.process_index() != 0:
        return
    path = write_metrics_json(workdir, name, record)
    if len(per_image.confusions):
        settings = {key: record[key] for key in ("step", "split", "output_stride", "scales",
                                                 "flip", "crf", "crf_downsample") if key in record}
        write_per_image(workdir, name, per_image, class_names=class_names,
                        image_ids=image_ids, record=settings)
    logging.info("Evaluation on %s (%d images) at step %d: mIoU %s, pixel accuracy %s, "
                 "written to %s", record["split"], record["num_images"], step,
                 intervals.format_interval(record, "miou"),
                 intervals.format_interval(record, "pixel_accuracy"), path)
    if pictures:
        panel = visualize.prediction_panel(pictures["image"], pictures["label"],
                                           pictures["prediction"], palette)
        visualize.save_png(os.path.join(workdir, "predictions", f"{name}.png"), panel)
        writer.write_images(step, {"eval/image_truth_prediction": panel})
    try:  # Pictures are a reader's aid: never lose a training run over one.
        figures.write_evaluation_report(workdir, name, record, per_image, class_names, palette)
    except Exception:  # pylint: disable=broad-except
        logging.exception("Could not write the evaluation report of %s.", name)
