"""Per-class loss weights: explicit in the config, or SegNet's median-frequency balancing.

`config.optim.class_weighting`:
- "none": every class weighs 1 (the plain mean cross-entropy of every other model here);
- "median_frequency": w_c = median(f) / f_c with f_c the pixels of class c divided by the
  pixels of the training images where c is present (Eigen and Fergus 2015, used by SegNet,
  Badrinarayanan et al. 2017, Sec. 4: "median frequency balancing"), computed from the
  training split's labels when a run starts, and saved in WORKDIR/class_weights.json so a
  resumed run uses the very same weights without reading the labels again;
- "explicit": `config.optim.class_weights`, one per class.

SegNet's published weights for CamVid (alexgkendall/SegNet-Tutorial,
Models/segnet_train.prototxt L1538-1548, `class_weighting`) are the check: computed on
CamVid's train split with void counted as a twelfth class in the median (as SegNet's
numbers imply), 9 of the 11 agree within 6.5%; SignSymbol and Bicyclist do not, and we could
not find the computation behind those two (`tests/test_encoder_decoders.py`). The median
here is over the dataset's classes only, ignored pixels left out.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.evaluation.outputs import write_json

CHOICES = ("none", "median_frequency", "explicit")
FILE = "class_weights.json"
# SegNet-Tutorial's class_weighting for CamVid's 11 classes (Sky ... Bicyclist).
SEGNET_CAMVID_WEIGHTS = (0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418,
                         0.6823, 6.2478, 7.3614)


def class_frequencies(source: Any, num_classes: int, num_workers: int = 4
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, pixels of the images where each class is present).

    Ignored pixels (any value >= num_classes, e.g. 255) count in neither.
    """
    def count(index):
        label = np.asarray(source[index]["label"])
        return np.bincount(label.ravel(), minlength=256)[:num_classes], label.size

    pixels = np.zeros(num_classes, np.int64)
    present_in = np.zeros(num_classes, np.int64)
    with concurrent.futures.ThreadPoolExecutor(num_workers) as executor:
        for counts, size in executor.map(count, range(len(source))):
            pixels += counts
            present_in += np.where(counts > 0, size, 0)
    return pixels, present_in


def median_frequency_weights(pixels: Sequence[int], present_in: Sequence[int]) -> np.ndarray:
    """w_c = median(f) / f_c, f_c = pixels_c / present_in_c; classes never seen weigh 0."""
    pixels, present_in = np.asarray(pixels, np.float64), np.asarray(present_in, np.float64)
    seen = pixels > 0
    frequency = np.divide(pixels, present_in, out=np.zeros_like(pixels), where=seen)
    return np.where(seen, np.median(frequency[seen]) / np.where(seen, frequency, 1.0), 0.0)


def resolve(optim_config: Any, workdir: str, train_source: Any, num_classes: int
            ) -> Optional[tuple[float, ...]]:
    """The loss weights `config.optim` asks for (None for "none"), cached in the workdir.

    Raises:
      ConfigError: an unknown weighting, or explicit weights of the wrong length or sign.
    """
    choice = optim_config.get("class_weighting", "none")
    if choice not in CHOICES:
        raise ConfigError(f"config.optim.class_weighting={choice!r} is not one of {CHOICES}; "
                          "set one of them.")
    if choice == "none":
        return None
    if choice == "explicit":
        weights = tuple(float(w) for w in optim_config.class_weights or ())
        if len(weights) != num_classes or min(weights) < 0:
            raise ConfigError(f"config.optim.class_weights={optim_config.class_weights}: give "
                              f"{num_classes} non-negative weights, one per class (or set "
                              "config.optim.class_weighting='median_frequency' to derive "
                              "them).")
        return weights
    path = os.path.join(workdir, FILE)
    if os.path.exists(path):
        with open(path) as file:
            saved = json.load(file)
        if len(saved["weights"]) == num_classes:
            return tuple(saved["weights"])
    pixels, present_in = class_frequencies(train_source, num_classes)
    weights = median_frequency_weights(pixels, present_in)
    record = {"weighting": choice, "weights": weights.tolist(), "class_pixels":
              pixels.tolist(), "pixels_of_images_with_the_class": present_in.tolist()}
    if jax.process_index() == 0:
        write_json(path, record)
    logging.info("Median-frequency class weights from %d training images: %s (saved to %s).",
                 len(train_source), np.round(weights, 4).tolist(), path)
    return tuple(weights.tolist())
