"""Predictions of a trained model on any image, folder or glob, at the image's own resolution.

    python -m deeplab_jax.predict --config=configs/synthetic.py --workdir=RUN_DIR \
        --input=photos/ --output=/tmp/predictions [--step=N] [--config.eval.flip=True]

`--input` is one image, a folder (its images, not recursive) or a glob pattern
('photos/**/*.jpg'). For each image the command writes into `--output`:

- `NAME.png`: the label map as a palette PNG whose pixel values are the class indices
  (`visualize.load_indexed_png` reads them back; viewers show the dataset's colours);
- `NAME_color.png`: the colourised label map;
- `NAME_overlay.png`: the labels blended over the image, with a legend of the classes present.

Images are read with PIL: greyscale, palette, RGBA (alpha dropped) and 16-bit inputs become
RGB uint8, and the EXIF orientation is applied, so predictions line up with what a viewer
shows. Each image is predicted at its original size: it is padded with the mean pixel
(127.5, zero after the model's normalisation, as the official evaluation pads) to the next
size of the form 32k + 1 (the aligned-corners convention of the training crops), predicted,
and cropped back. Padding to a few bucketed sizes bounds recompilation: one compilation per
bucket, and images of one bucket are predicted in batches. `config.eval` applies (output
stride, multi-scale and flip averaging, through `evaluate.predict_probabilities`).

Pixels go into the model in [0, 255]; the model normalises them itself.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
from typing import Any, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from deeplab_jax import checkpoint, cli, config_lib, evaluate, reports, visualize
from deeplab_jax import train_step as train_step_lib
from deeplab_jax.data import datasets
from deeplab_jax.data.image_io import ImageReadError, find_images, image_size, load_image
from deeplab_jax.models import get_model

PyTree = Any
DEFAULT_BUCKET = 32  # images are padded to 32k + 1 pixels a side

# ---------------------------------------------------------------------------------------------
# Restoring a trained model.

@dataclasses.dataclass
class RestoredModel:
    """A checkpoint's model at the evaluation output stride, with what describes its classes."""

    model: Any  # flax module: [B, H, W, 3] pixels in [0, 255] -> float32 logits
    variables: PyTree  # {'params', 'batch_stats'}
    config: ml_collections.ConfigDict  # resolved
    step: int
    class_names: tuple[str, ...]
    palette: np.ndarray  # uint8 [256, 3]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def restore_model(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None) -> RestoredModel:
    """Restores the checkpoint at `step` (default: the latest) of `workdir` onto one device.

    Nothing is trained or initialised: the train state's structure comes from
    `jax.eval_shape`, and no dataset is generated or loaded (`datasets.dataset_info`).

    Raises:
      FileNotFoundError: `workdir` holds no (complete) checkpoint.
      ValueError: `step` is not one of its checkpoints, or the checkpoint does not fit the
        config's model.
    """
    config = config_lib.resolve_config(config)
    directory = checkpoint.checkpoint_dir(os.path.expanduser(workdir))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No checkpoint in {directory}: train first, or point --workdir at the folder of a "
            "trained run.")
    info = datasets.dataset_info(config.data)
    num_classes = info["num_classes"]
    optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
    abstract = jax.eval_shape(
        functools.partial(train_step_lib.create_train_state,
                          model=get_model(config.model, num_classes), optimizer=optimizer,
                          image_shape=tuple(config.data.crop_size)),
        jax.random.key(0))
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
    manager = checkpoint.create_manager(os.path.expanduser(workdir), read_only=True)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"No complete checkpoint in {directory}.")
        if step is not None and step not in steps:
            raise ValueError(f"No checkpoint at step {step} in {directory}; there are steps "
                             f"{steps}.")
        state, restored_step = checkpoint.restore(manager, abstract, step)
    finally:
        manager.close()
    model = get_model(config_lib.eval_model_config(config), num_classes)
    return RestoredModel(model=model,
                         variables={"params": state.params, "batch_stats": state.batch_stats},
                         config=config, step=int(restored_step),
                         class_names=tuple(info["class_names"]), palette=info["palette"])


# ---------------------------------------------------------------------------------------------
# Predicting.

def bucket_size(size: int, multiple: int = DEFAULT_BUCKET) -> int:
    """The smallest k * multiple + 1 >= size (k >= 1): the padded side of an image."""
    return max(1, -(-(size - 1) // multiple)) * multiple + 1


def _labels(variables: PyTree, images: jax.Array, sizes: jax.Array, *, model: Any,
            scales: tuple[float, ...], flip: bool) -> jax.Array:
    """uint8 [B, H, W] class maps of a padded batch (padding set to the mean pixel)."""
    padded = evaluate.pad_with_mean_pixel(images, sizes)
    probabilities = evaluate.predict_probabilities(model, variables, padded, scales=scales,
                                                   flip=flip)
    return jnp.argmax(probabilities, axis=-1).astype(jnp.uint8)


class Predictor:
    """Class maps of images of any size and aspect ratio, at their original resolution."""

    def __init__(self, model: Any, variables: PyTree, *, scales: Sequence[float] = (1.0,),
                 flip: bool = False, batch_size: int = 4, bucket: int = DEFAULT_BUCKET):
        if batch_size < 1 or bucket < 1:
            raise ValueError(f"batch_size={batch_size} and bucket={bucket} must be >= 1.")
        if getattr(model, "num_classes", 0) > 255:
            raise ValueError("Indexed PNG label maps hold at most 255 classes.")
        self.variables = variables
        self.batch_size = batch_size
        self.bucket = bucket
        self._fn = jax.jit(functools.partial(_labels, model=model, scales=tuple(scales),
                                             flip=bool(flip)))

    @classmethod
    def from_restored(cls, restored: RestoredModel, **kwargs) -> "Predictor":
        """A predictor with the restored config's eval settings (scales, flip)."""
        return cls(restored.model, restored.variables, scales=restored.config.eval.scales,
                   flip=restored.config.eval.flip, **kwargs)

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


# ---------------------------------------------------------------------------------------------
# Pictures and files.

def add_legend(image: np.ndarray, class_ids: Iterable[int], class_names: Sequence[str],
               palette: np.ndarray, *, font_size: Optional[int] = None) -> np.ndarray:
    """`image` with a legend on its right: a colour swatch and the name of each class.

    Args:
      image: uint8 [H, W, 3].
      class_ids: the classes to list (e.g. those present in a prediction).
      class_names: names by class index.
      palette: uint8 [256, 3].

    Returns:
      uint8 [max(H, legend height), W + legend width, 3], white where nothing is drawn.
    """
    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    class_ids = sorted({int(i) for i in class_ids})
    if not class_ids:
        return image
    if font_size is None:
        font_size = int(np.clip(round(max(height, width) / 30), 11, 28))
    font = reports.pil_font(font_size)
    margin, gap = max(4, font_size // 2), max(3, font_size // 3)
    names = [class_names[i] if i < len(class_names) else f"class {i}" for i in class_ids]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), name, font=font) for name in names]
    line = max(font_size, max(box[3] for box in boxes)) + gap
    legend_width = 2 * margin + font_size + gap + max(box[2] for box in boxes)
    legend_height = 2 * margin + len(class_ids) * line - gap
    canvas = Image.new("RGB", (width + legend_width, max(height, legend_height)),
                       (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (class_id, name) in enumerate(zip(class_ids, names)):
        top, left = margin + row * line, width + margin
        color = tuple(int(c) for c in palette[class_id])
        draw.rectangle([left, top, left + font_size - 1, top + font_size - 1], fill=color,
                       outline=(0, 0, 0))
        draw.text((left + font_size + gap, top), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def output_names(paths: Sequence[str]) -> list[str]:
    """One distinct output name per input: its stem, plus the extension (and a counter)
    where stems clash (a.jpg, a.png -> a_jpg, a_png)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    counts = collections.Counter(stems)
    names, used = [], set()
    for path, stem in zip(paths, stems):
        name = stem
        if counts[stem] > 1:
            name = f"{stem}_{os.path.splitext(path)[1].lstrip('.').lower() or 'file'}"
        base, number = name, 1
        while name in used:
            name, number = f"{base}_{number}", number + 1
        used.add(name)
        names.append(name)
    return names


OUTPUT_SUFFIXES = {"label": ".png", "color": "_color.png", "overlay": "_overlay.png"}


def write_prediction(output_dir: str, name: str, image: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], palette: np.ndarray) -> dict[str, str]:
    """Writes NAME.png (indexed), NAME_color.png and NAME_overlay.png; returns their paths."""
    paths = {kind: os.path.join(output_dir, name + suffix)
             for kind, suffix in OUTPUT_SUFFIXES.items()}
    visualize.save_indexed_png(paths["label"], labels, palette)
    visualize.save_png(paths["color"], visualize.colorize(labels, palette))
    blended = visualize.overlay(image, labels, palette, alpha=0.5, ignore_label=None)
    visualize.save_png(paths["overlay"],
                       add_legend(blended, np.unique(labels), class_names, palette))
    return paths


def predict_files(predictor: Predictor, paths: Sequence[str], output_dir: str, *,
                  class_names: Sequence[str], palette: np.ndarray,
                  progress: bool = True) -> list[dict[str, str]]:
    """Predicts every file of `paths` and writes its three PNGs into `output_dir`.

    Image sizes are read from the headers first, so an unreadable file is reported before
    anything is computed; images are then loaded one batch at a time.

    Returns:
      Per input, in order: {'input', 'name', 'label', 'color', 'overlay'} paths.

    Raises:
      ImageReadError: naming an unreadable file.
      ValueError: an output would overwrite an input or another output.
    """
    paths = list(paths)
    names = output_names(paths)
    records = [{"input": path, "name": name,
                **{kind: os.path.join(output_dir, name + suffix)
                   for kind, suffix in OUTPUT_SUFFIXES.items()}}
               for path, name in zip(paths, names)]
    inputs = {os.path.realpath(path) for path in paths}
    outputs = [record[kind] for record in records for kind in OUTPUT_SUFFIXES]
    for output in outputs:
        if os.path.realpath(output) in inputs:
            raise ValueError(f"Writing {output} would overwrite an input image; choose another "
                             "--output folder.")
    clashes = [path for path, count in collections.Counter(outputs).items() if count > 1]
    if clashes:
        raise ValueError(f"Two inputs would write the same output file {clashes[0]}; rename "
                         "one of them.")
    sizes = [image_size(path) for path in paths]
    os.makedirs(output_dir, exist_ok=True)
    with tqdm(total=len(paths), desc="predict", unit="image", disable=not progress) as bar:
        for indices in predictor.batches(sizes):
            images = [load_image(paths[i]) for i in indices]
            for i, image in zip(indices, images):
                if image.shape[:2] != sizes[i]:
                    raise ImageReadError(f"{paths[i]}: decoded size {image.shape[:2]} differs "
                                         f"from its header's {sizes[i]}.")
            for i, image, labels in zip(indices, images, predictor.predict_batch(images)):
                write_prediction(output_dir, names[i], image, labels, class_names, palette)
                bar.update(1)
    return records


def predict(config: ml_collections.ConfigDict, workdir: str, input_pattern: str,
            output_dir: str, *, step: Optional[int] = None, batch_size: int = 4,
            progress: bool = True) -> list[dict[str, str]]:
    """The command: restore `workdir`'s checkpoint, predict `input_pattern`, write the PNGs."""
    paths = find_images(input_pattern)  # Before the restore: a wrong --input fails fast.
    restored = restore_model(config, workdir, step)
    logging.info("Restored the checkpoint at step %d of %s; predicting %d image(s) at output "
                 "stride %d, scales %s, flip %s.", restored.step, workdir, len(paths),
                 restored.config.eval.output_stride, tuple(restored.config.eval.scales),
                 restored.config.eval.flip)
    predictor = Predictor.from_restored(restored, batch_size=batch_size)
    records = predict_files(predictor, paths, output_dir, class_names=restored.class_names,
                            palette=restored.palette, progress=progress)
    logging.info("Wrote the predictions of %d image(s) to %s.", len(records), output_dir)
    return records


def _define_flags() -> None:
    """The command's flags; defined only when run as a command (importing defines none)."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Path to the run's config file.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The trained run's folder (its checkpoints/).")
    flags.DEFINE_string("input", None, "An image, a folder of images or a glob pattern.")
    flags.DEFINE_string("output", None, "Folder for NAME.png, NAME_color.png, "
                        "NAME_overlay.png.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_integer("batch_size", 4, "Images of one padded size predicted together.")
    flags.mark_flags_as_required(["config", "workdir", "input", "output"])


def main(argv: Sequence[str]) -> None:
    from absl import flags

    cli.start(argv)
    FLAGS = flags.FLAGS
    predict(FLAGS.config, FLAGS.workdir, FLAGS.input, FLAGS.output, step=FLAGS.step,
            batch_size=FLAGS.batch_size)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
