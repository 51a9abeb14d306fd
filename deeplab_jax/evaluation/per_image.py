"""Per-image results of an evaluation: each image's confusion matrix and mIoU, the worst
and best images, and the file that keeps the matrices for intervals and paired tests.

Per-image mIoU follows the dataset-level convention (`metrics.metrics_from_confusion_matrix`)
on one image's confusion matrix: the mean IoU over the classes present in its ground truth or
its prediction. `PerImageStats` collects it during `evaluate.evaluate` and keeps only the
running best and worst few examples as pictures. It also keeps every image's [K, K] matrix
(small: VOC val's 1449 x 21 x 21 int32 are 2.6 MB), with the image's dataset position and a
digest of its label map, which `evaluate.evaluate` gathers from every process into dataset
order. `outputs.write_per_image` writes them as `eval/NAME_per_image.npz` beside the metrics
JSON and `load` reads them back; `evaluation/intervals.py` resamples them and
`deeplab_jax.compare` pairs two of them.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Optional, Sequence

import numpy as np

from deeplab_jax.errors import DataError

FILE_SUFFIX = "_per_image.npz"

NUM_BEST_WORST = 4  # examples shown in each half of the best/worst grid


def per_image_miou(confusions: np.ndarray) -> np.ndarray:
    """mIoU of each image's confusion matrix.

    Args:
      confusions: [N, K, K] (rows: ground truth).

    Returns:
      float64 [N]; NaN for an image without any valid pixel.
    """
    confusions = np.asarray(confusions, np.float64)
    tp = np.diagonal(confusions, axis1=1, axis2=2)
    union = confusions.sum(axis=2) + confusions.sum(axis=1) - tp
    has_union = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=has_union)
    count = has_union.sum(axis=1)
    return np.divide(iou.sum(axis=1), count, out=np.full(len(confusions), np.nan),
                     where=count > 0)


def select_best_worst(scores: Sequence[float], n: int) -> tuple[list[int], list[int]]:
    """The positions of the `n` lowest and the `n` highest scores, NaN left out.

    Returns:
      (worst: lowest first, best: highest first); ties go to the earlier position.
    """
    scores = np.asarray(scores, np.float64)
    positions = np.flatnonzero(~np.isnan(scores))
    if n <= 0 or not len(positions):
        return [], []
    # lexsort: last key is primary; stable in position for equal scores.
    worst = positions[np.lexsort((positions, scores[positions]))][:n]
    best = positions[np.lexsort((positions, -scores[positions]))][:n]
    return worst.tolist(), best.tolist()


class PerImageStats:
    """Per-image mIoU of every evaluated image of this process, the running worst and best.

    `evaluate.evaluate(..., per_image=stats)` calls `add_batch` once per batch and sets
    `confusion` (the split's [K, K] matrix) at the end. Images are numbered in the order this
    process sees its valid rows.
    """

    def __init__(self, num_examples: int = NUM_BEST_WORST):
        self.num_examples = num_examples
        self.miou: list[float] = []
        self.confusion: Optional[np.ndarray] = None
        # This process's images as added; after `evaluate.evaluate`, every process's images
        # in dataset order (`set_split`).
        self.confusions: list[np.ndarray] | np.ndarray = []
        self.positions: list[int] | np.ndarray = []
        self.digests: list[str] | np.ndarray = []
        # Each kept example: (score, index, {'image', 'label', 'prediction'}).
        self._worst: list[tuple[float, int, dict[str, np.ndarray]]] = []
        self._best: list[tuple[float, int, dict[str, np.ndarray]]] = []

    def add_batch(self, confusions: np.ndarray,
                  fetch: Callable[[Sequence[int]], dict[str, np.ndarray]],
                  positions: Optional[Sequence[int]] = None,
                  digests: Optional[Sequence[str]] = None) -> None:
        """Adds one batch.

        Args:
          confusions: [n, K, K], one per valid row of this process, in order.
          fetch: rows -> {'image', 'label', 'prediction'} arrays of those rows; called only
            for rows that enter the best or worst, so most batches fetch no pictures.
          positions: the rows' dataset positions; digests: `label_digest` of their labels.
        """
        self.confusions.extend(np.asarray(confusions, np.int32))
        if positions is not None:
            self.positions.extend(int(p) for p in positions)
        if digests is not None:
            self.digests.extend(digests)
        scores = per_image_miou(confusions)
        start = len(self.miou)
        self.miou.extend(scores.tolist())
        kept = {index: (score, example) for score, index, example in self._worst + self._best}
        candidates = [(score, index) for index, (score, _) in kept.items()] + [
            (float(score), start + row) for row, score in enumerate(scores)]
        worst, best = select_best_worst([score for score, _ in candidates], self.num_examples)
        new_rows = sorted({candidates[i][1] - start for i in worst + best
                           if candidates[i][1] >= start})
        pictures = {index: example for index, (_, example) in kept.items()}
        if new_rows:
            arrays = fetch(new_rows)
            pictures.update({start + row: {key: value[k] for key, value in arrays.items()}
                             for k, row in enumerate(new_rows)})
        self._worst = [(*candidates[i], pictures[candidates[i][1]]) for i in worst]
        self._best = [(*candidates[i], pictures[candidates[i][1]]) for i in best]

    @property
    def worst(self) -> list[tuple[float, int, dict[str, np.ndarray]]]:
        """(mIoU, image number, {'image', 'label', 'prediction'}), lowest mIoU first."""
        return list(self._worst)

    @property
    def best(self) -> list[tuple[float, int, dict[str, np.ndarray]]]:
        """(mIoU, image number, {'image', 'label', 'prediction'}), highest mIoU first."""
        return list(self._best)


def label_digest(label: np.ndarray) -> str:
    """16 hex digits identifying a label map (its shape and values): two evaluations saw the
    same image only if its digests agree, whatever the source it was read from."""
    label = np.ascontiguousarray(label, np.uint8)
    return hashlib.blake2b(repr(label.shape).encode() + label.tobytes(),
                           digest_size=8).hexdigest()


def load(path: str) -> dict[str, Any]:
    """A file of `outputs.write_per_image`: {'confusion', 'label_digest', 'image_id', 'class_names', 'record'}."""
    with np.load(path, allow_pickle=False) as data:
        loaded = {key: data[key] for key in data.files}
    missing = {"confusion", "label_digest", "image_id", "class_names", "record"} - set(loaded)
    if missing:
        raise DataError(f"{path} is not a per-image evaluation file (no {sorted(missing)}); "
                        "evaluations written before per-image files existed have none: "
                        "evaluate the checkpoint again (--mode=eval) to write it.")
    loaded["record"] = json.loads(str(loaded["record"]))
    loaded["class_names"] = [str(name) for name in loaded["class_names"]]
    return loaded
