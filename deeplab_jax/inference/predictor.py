"""Class maps of images of any size and aspect ratio, at their own resolution.

Each image is padded with the mean pixel (127.5, zero after the model's normalisation, as
the official evaluation pads) to the next size of the form 32k + 1 (the aligned-corners
convention of the training crops; k * OS + 1 for output strides above 32), predicted, and
cropped back. Padding to a few bucketed
sizes bounds recompilation: one compilation per bucket, and images of one bucket are
predicted in batches. `config.eval` applies (output stride, multi-scale and flip averaging,
through `evaluate.predict_probabilities`).
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.evaluation import evaluate
from deeplab_jax.inference.restore import RestoredModel

PyTree = Any
DEFAULT_BUCKET = 32  # images are padded to 32k + 1 pixels a side


def bucket_size(size: int, multiple: int = DEFAULT_BUCKET) -> int:
    """The smallest k * multiple + 1 >= size (k >= 1): the padded side of an image."""
    return max(1, -(-(size - 1) // multiple)) * multiple + 1


def _labels(variables: PyTree, images: jax.Array, sizes: jax.Array, *, model: Any,
            scales: tuple[float, ...], flip: bool, crf_params: Any = None) -> jax.Array:
    """uint8 [B, H, W] class maps of a padded batch (padding set to the mean pixel)."""
    padded = evaluate.pad_with_mean_pixel(images, sizes)
    probabilities = evaluate.predict_probabilities(model, variables, padded, scales=scales,
                                                   flip=flip)
    probabilities = evaluate.refine(probabilities, padded, sizes, crf_params)
    return jnp.argmax(probabilities, axis=-1).astype(jnp.uint8)


class Predictor:
    """Class maps of images of any size and aspect ratio, at their original resolution."""

    def __init__(self, model: Any, variables: PyTree, *, scales: Sequence[float] = (1.0,),
                 flip: bool = False, batch_size: int = 4, bucket: int = DEFAULT_BUCKET,
                 crf_params: Any = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} (--batch_size of deeplab_jax.predict) "
                              "must be >= 1: the images predicted together; set 1 or more "
                              "(default 4).")
        if bucket < 1:
            raise ValueError(f"bucket={bucket} must be >= 1.")
        if getattr(model, "num_classes", 0) > 255:
            raise ValueError("Indexed PNG label maps hold at most 255 classes.")
        self.variables = variables
        self.batch_size = batch_size
        self.bucket = bucket
        self._fn = jax.jit(functools.partial(_labels, model=model, scales=tuple(scales),
                                             flip=bool(flip), crf_params=crf_params))

    @classmethod
    def from_restored(cls, restored: RestoredModel, **kwargs) -> "Predictor":
        """A predictor with the restored config's eval settings (scales, flip, CRF); images
        are padded to k * OS + 1 when the output stride is above 32 (the cascade's 64-256)."""
        kwargs.setdefault("bucket", max(DEFAULT_BUCKET, restored.config.eval.output_stride))
        return cls(restored.model, restored.variables, scales=restored.config.eval.scales,
                   flip=restored.config.eval.flip,
                   crf_params=evaluate.crf_params(restored.config.eval), **kwargs)

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        return bucket_size(height, self.bucket), bucket_size(width, self.bucket)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class maps of images that share one padded shape, at most `batch_size` of them.

        The batch is filled up to `batch_size` so that a short last batch does not compile
        again.
        """
        shapes = {self.padded_shape(*image.shape[:2]) for image in images}
        if len(shapes) != 1 or not 0 < len(images) <= self.batch_size:
            raise ValueError(f"predict_batch takes 1..{self.batch_size} images of one padded "
                             f"shape, got {len(images)} of shapes {sorted(shapes)}.")
        height, width = shapes.pop()
        batch = np.zeros((self.batch_size, height, width, 3), np.uint8)
        sizes = np.zeros((self.batch_size, 2), np.int32)  # (0, 0): all mean pixel
        for row, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"images must be uint8 [H, W, 3] in [0, 255], got "
                                 f"{image.dtype} {image.shape}.")
            batch[row, :image.shape[0], :image.shape[1]] = image
            sizes[row] = image.shape[:2]
        labels = np.asarray(self._fn(self.variables, batch, sizes))
        return [labels[row, :image.shape[0], :image.shape[1]]
                for row, image in enumerate(images)]

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 [h, w] class maps of uint8 [h, w, 3] images of any sizes, in order."""
        results: list[Optional[np.ndarray]] = [None] * len(images)
        for indices in self.batches([image.shape[:2] for image in images]):
            for index, labels in zip(indices, self.predict_batch([images[i] for i in indices])):
                results[index] = labels
        return results  # type: ignore[return-value]

    def batches(self, sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Indices grouped by padded shape, in chunks of at most `batch_size`."""
        groups: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
        for index, (height, width) in enumerate(sizes):
            groups[self.padded_shape(height, width)].append(index)
        return [indices[start:start + self.batch_size] for indices in groups.values()
                for start in range(0, len(indices), self.batch_size)]
