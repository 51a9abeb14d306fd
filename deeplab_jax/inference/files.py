"""Prediction files: an image, folder or glob in; label, colour and overlay PNGs out.

For each image, `predict_files` writes into the output folder:

- `NAME.png`: the label map as a palette PNG whose pixel values are the class indices
  (`visualize.load_indexed_png` reads them back; viewers show the dataset's colours);
- `NAME_color.png`: the colourised label map;
- `NAME_overlay.png`: the labels blended over the image, with a legend of the classes present.

Images are read with PIL: greyscale, palette, RGBA (alpha dropped) and 16-bit inputs become
RGB uint8, and the EXIF orientation is applied, so predictions line up with what a viewer
shows. Pixels go into the model in [0, 255]; the model normalises them itself.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Iterable, Optional, Sequence

import ml_collections
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from deeplab_jax.data.image_io import ImageReadError, find_images, image_size, load_image
from deeplab_jax.errors import ConfigError, DataError
from deeplab_jax.inference.predictor import Predictor
from deeplab_jax.inference.restore import restore_model
from deeplab_jax.reporting import figures, visualize


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
    font = figures.pil_font(font_size)
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
      ConfigError: an output would overwrite an input; DataError: two inputs would write
        the same output (both ValueErrors).
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
            raise ConfigError(f"--output={output_dir}: writing {output} would overwrite an "
                              "input image; choose another --output folder.")
    clashes = [path for path, count in collections.Counter(outputs).items() if count > 1]
    if clashes:
        inputs_of = [record["input"] for record in records
                     if clashes[0] in (record[kind] for kind in OUTPUT_SUFFIXES)]
        raise DataError(f"The inputs {' and '.join(inputs_of)} would both write the output "
                        f"file {clashes[0]}; rename one of them, or predict them into separate "
                        "--output folders.")
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
