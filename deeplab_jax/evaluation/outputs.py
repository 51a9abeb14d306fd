"""What an evaluation leaves in the workdir: metrics JSON, pictures, TensorBoard scalars.

For evaluation NAME (`evaluation_name`: split, step and inference setting):

- `WORKDIR/eval/NAME.json`: every metric (`metrics.metrics_from_confusion_matrix`), the
  image count, step, split, output stride, scales, flip and seconds taken;
- `WORKDIR/predictions/NAME.png`: image | ground truth | prediction for the first val
  images (also to TensorBoard);
- `WORKDIR/eval/NAME_{confusion,iou,best_worst}.png` (`reporting/figures.py`);
- TensorBoard scalars `eval/miou`, `eval/pixel_accuracy`, `eval/mean_accuracy`, `eval/fwiou`.

Files are written by process 0 only, each atomically (a temporary name, then a rename).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np

from deeplab_jax.evaluation.per_image import PerImageStats
from deeplab_jax.reporting import figures, visualize
from deeplab_jax.reporting.writer import MetricWriter

SCALARS = ("miou", "pixel_accuracy", "mean_accuracy", "fwiou")


def evaluation_name(split: str, step: int, *, output_stride: int, scales: Sequence[float],
                    flip: bool, crf: bool = False) -> str:
    """`{split}_step{step:08d}_os{stride}[_ms{scales}][_flip][_crf]`: one name per setting,
    so an evaluation at another stride, with multi-scale inference or with the CRF never
    overwrites another."""
    name = f"{split}_step{step:08d}_os{output_stride}"
    if tuple(scales) != (1.0,):
        name += "_ms" + "-".join(f"{scale:g}" for scale in scales)
    return name + ("_flip" if flip else "") + ("_crf" if crf else "")


def write_json(path: str, record: Any) -> str:
    """Writes `record` to `path` atomically (metrics here, `timing.json` in training)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(record, file, indent=2)
    os.replace(temporary, path)  # Never leave a half-written file under the final name.
    return path


def write_metrics_json(workdir: str, name: str, record: dict[str, Any]) -> str:
    """Writes WORKDIR/eval/NAME.json atomically; returns the path."""
    return write_json(os.path.join(workdir, "eval", f"{name}.json"), record)


def write_evaluation(workdir: str, writer: MetricWriter, *, name: str,
                     record: dict[str, Any], pictures: dict[str, np.ndarray],
                     per_image: PerImageStats, class_names: Sequence[str],
                     palette: np.ndarray) -> None:
    """Writes evaluation `name`'s files (module docstring) and its TensorBoard scalars.

    Args:
      record: the metrics plus 'step', 'split' and the inference settings.
      pictures: 'image', 'label', 'prediction' of the first val images (may be empty).
    """
    step = record["step"]
    writer.write_scalars(step, {f"eval/{key}": record[key] for key in SCALARS})
    if jax.process_index() != 0:
        return
    path = write_metrics_json(workdir, name, record)
    logging.info("Evaluation on %s (%d images) at step %d: mIoU %.4f, written to %s",
                 record["split"], record["num_images"], step, record["miou"], path)
    if pictures:
        panel = visualize.prediction_panel(pictures["image"], pictures["label"],
                                           pictures["prediction"], palette)
        visualize.save_png(os.path.join(workdir, "predictions", f"{name}.png"), panel)
        writer.write_images(step, {"eval/image_truth_prediction": panel})
    try:  # Pictures are a reader's aid: never lose a training run over one.
        figures.write_evaluation_report(workdir, name, record, per_image, class_names, palette)
    except Exception:  # pylint: disable=broad-except
        logging.exception("Could not write the evaluation report of %s.", name)
