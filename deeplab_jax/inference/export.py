"""A portable export of a trained model: `jax.export`, preprocessing inside, weights baked in.

    python -m deeplab_jax.export --config=configs/synthetic.py --workdir=RUN_DIR \
        --output=model.jaxexport [--height=513 --width=513] [--step=N]

(the command line is `deeplab_jax/export.py`) writes `model.jaxexport`, a serialized `jax.export.Exported` (StableHLO), and
`model.jaxexport.json`, its description: class names, palette, input size and convention.

The exported function takes **uint8 [batch, H, W, 3] RGB pixels in [0, 255]**, as read from
an image file, and returns **uint8 [batch, H, W] class indices**. Normalisation happens inside
(the model maps [0, 255] to [-1, 1] itself): do not scale, normalise or mean-subtract the
pixels, the classic cause of all-background ("black") masks. The batch size is symbolic
(any batch works); the height and width are fixed at export time (default: the config's
`data.canvas_size`), because the model's resizing is built for static sizes. For other
sizes, resize or pad the image yourself, or use `python -m deeplab_jax.predict`, which
predicts any size at full resolution. The config's `eval` settings (output stride,
multi-scale and flip averaging) are part of the exported computation.

The variables are constants of the serialized module, so loading needs only JAX:

    from deeplab_jax.inference.export import load_exported
    model = load_exported("model.jaxexport")
    labels = model(image)  # uint8 [H, W, 3] -> uint8 [H, W]; or [N, H, W, 3] -> [N, H, W]

or, without this package:
`jax.export.deserialize(bytearray(open(path, 'rb').read())).call(images)`.
By default the module is lowered for CPU and CUDA GPUs (`--platforms`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deeplab_jax.errors import ConfigError, DataError
from deeplab_jax.evaluation import crf, evaluate
from deeplab_jax.inference.restore import RestoredModel, restore_model

PyTree = Any
DEFAULT_PLATFORMS = ("cpu", "cuda")
INPUT_CONVENTION = (
    "RGB pixels as uint8 in [0, 255], NHWC, exactly as decoded from an image file; no scaling, "
    "normalisation or mean subtraction (the model normalises inside)")


def sidecar_path(path: str) -> str:
    return path + ".json"


def _class_map(images: jax.Array, *, model: Any, variables: PyTree,
               scales: tuple[float, ...], flip: bool, crf_params: Any = None) -> jax.Array:
    """uint8 [B, H, W, 3] pixels -> uint8 [B, H, W] class indices."""
    images = images.astype(jnp.float32)
    probabilities = evaluate.predict_probabilities(model, variables, images, scales=scales,
                                                   flip=flip)
    if crf_params is not None:  # the whole frame is the image: every pixel valid
        probabilities = crf.mean_field(probabilities, images, None, crf_params)
    return jnp.argmax(probabilities, axis=-1).astype(jnp.uint8)


def export_restored(restored: RestoredModel, *, height: int, width: int,
                    platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS,
                    ) -> tuple[jax.export.Exported, dict[str, Any]]:
    """Exports `restored` for uint8 [batch, height, width, 3] inputs.

    Returns:
      (the `Exported`, the JSON-serialisable description written next to it).
    """
    if height < 1 or width < 1:
        raise ConfigError(f"The export size {height}x{width} (--height={height}, --width={width}) "
                          "must be positive: give both >= 1, or leave them out for "
                          "config.data.canvas_size.")
    if restored.num_classes > 255:
        raise ValueError("A uint8 class map holds at most 255 classes.")
    config = restored.config
    scales, flip = tuple(float(s) for s in config.eval.scales), bool(config.eval.flip)
    # Host (numpy) values are closed over: they become constants of the exported module.
    variables = jax.device_get(restored.variables)
    crf_params = evaluate.crf_params(config.eval)
    function = functools.partial(_class_map, model=restored.model, variables=variables,
                                 scales=scales, flip=flip, crf_params=crf_params)
    shape = jax.export.symbolic_shape(f"batch, {height}, {width}, 3")
    exported = jax.export.export(
        jax.jit(function), platforms=tuple(platforms) if platforms else None)(
            jax.ShapeDtypeStruct(shape, jnp.uint8))
    num_classes = restored.num_classes
    info = {
        "format": "jax.export (StableHLO), load with jax.export.deserialize or "
                  "deeplab_jax.export.load_exported",
        "input": {"shape": ["batch", height, width, 3], "dtype": "uint8", "layout": "NHWC",
                  "channels": "RGB", "range": [0, 255], "convention": INPUT_CONVENTION},
        "output": {"shape": ["batch", height, width], "dtype": "uint8",
                   "meaning": "class index per pixel, into class_names and palette"},
        "class_names": list(restored.class_names),
        "num_classes": num_classes,
        "palette": np.asarray(restored.palette[:num_classes]).astype(int).tolist(),
        "model": {"architecture": config.model.architecture, "depth": config.model.depth,
                  "output_stride": config.eval.output_stride, "scales": list(scales),
                  "flip": flip, "crf": crf_params is not None},
        "dataset": config.data.name,
        "checkpoint_step": restored.step,
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
    }
    return exported, info


def save_exported(path: str, exported: jax.export.Exported, info: dict[str, Any]) -> str:
    """Writes PATH (the serialized module) and PATH.json (its description); returns PATH."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    for target, data, mode in ((path, exported.serialize(), "wb"),
                               (sidecar_path(path), json.dumps(info, indent=2), "w")):
        temporary = target + ".tmp"
        with open(temporary, mode) as file:
            file.write(data)
        os.replace(temporary, target)
    return path


def export(config: ml_collections.ConfigDict, workdir: str, output: str, *,
           step: Optional[int] = None, height: Optional[int] = None,
           width: Optional[int] = None,
           platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS) -> dict[str, Any]:
    """The command: restore `workdir`'s checkpoint, export it to `output`; returns the info."""
    restored = restore_model(config, workdir, step)
    default_height, default_width = restored.config.data.canvas_size
    height, width = height or default_height, width or default_width
    exported, info = export_restored(restored, height=height, width=width,
                                     platforms=platforms)
    save_exported(output, exported, info)
    logging.info("Exported the checkpoint at step %d for uint8 [batch, %d, %d, 3] inputs on %s "
                 "to %s (%.1f MB) and %s.", restored.step, height, width,
                 ", ".join(exported.platforms), output, os.path.getsize(output) / 1e6,
                 sidecar_path(output))
    return info


class ExportedModel:
    """A deserialized export as a callable: uint8 images -> uint8 class maps (numpy)."""

    def __init__(self, exported: jax.export.Exported, info: Optional[dict[str, Any]] = None):
        self.exported = exported
        self.info = info or {}
        self.height, self.width = (int(d) for d in exported.in_avals[0].shape[1:3])
        self.class_names = tuple(self.info.get("class_names", ()))
        self.palette = np.asarray(self.info.get("palette", np.zeros((0, 3))), np.uint8)
        self._call = jax.jit(exported.call)

    def __call__(self, images: Any) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [H, W], or uint8 [N, H, W, 3] -> uint8 [N, H, W].

        Raises:
          TypeError: the pixels are not uint8 (already normalised floats, typically).
          DataError (a ValueError): the size differs from the exported one.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(
                f"The exported model takes uint8 pixels in [0, 255], got {images.dtype}: pass "
                "the decoded image as it is; it normalises inside.")
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, 3):
            raise DataError(
                f"The exported model takes [N, {self.height}, {self.width}, 3] (or "
                f"[{self.height}, {self.width}, 3]) images, got {images.shape}; resize or pad "
                "the image, export at its size (--height, --width), or use "
                "deeplab_jax.predict, which predicts any size.")
        labels = np.asarray(self._call(batch))
        return labels[0] if single else labels


def load_exported(path: str) -> ExportedModel:
    """Loads PATH (and its PATH.json description, when present) as a callable model."""
    with open(path, "rb") as file:
        exported = jax.export.deserialize(bytearray(file.read()))
    info = None
    if os.path.exists(sidecar_path(path)):
        with open(sidecar_path(path)) as file:
            info = json.load(file)
    return ExportedModel(exported, info)
