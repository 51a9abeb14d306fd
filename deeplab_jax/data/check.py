"""Checks a dataset before training on it: every file read once, every problem counted.

    python -m deeplab_jax.data.check --config=configs/custom.py --config.data.folder=DIR \
        [--output=DIR/check] [--splits=train,val]

For each split (default: the config's train and eval splits) it reads every example through
the same code training reads it with (the dataset's reader, then
`input_pipeline.prepare_example`: label values, sizes, the canvas), and reports:

- examples per split; the range of image sizes; pixels per class (and ignored);
- every problem, by kind, with its count and first file: an unreadable file, a label value
  outside the classes, a colour not in the palette, image and label sizes that differ, an
  image without a label or a label without an image, an image larger than the canvas.

It writes OUTPUT/report.json, OUTPUT/examples.png (a few examples: image | labels overlaid)
and OUTPUT/class_frequencies.png, and exits with status 1 when there is any problem.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from deeplab_jax import config_lib, errors
from deeplab_jax.data import custom, datasets, image_io, input_pipeline, labels
from deeplab_jax.data.rescale import RescaledSource
from deeplab_jax.reporting import visualize
from deeplab_jax.reporting.command_line import start_command

# Kind of problem -> what it means for the user; keys are what the report counts.
PROBLEMS = {
    "unreadable": "unreadable file (truncated, empty or not an image)",
    "label_value": "label value outside the classes",
    "label_color": "colour not in the palette",
    "size_mismatch": "image and label sizes differ",
    "unlabelled": "image without a label",
    "orphan": "label without an image",
    "canvas": "image larger than the canvas (config.data.canvas_size)",
    "other": "other error",
}


def classify(error: BaseException) -> str:
    """The PROBLEMS kind of an exception raised while reading or preparing an example."""
    if isinstance(error, labels.LabelColorError):
        return "label_color"
    if isinstance(error, labels.LabelValueError):
        return "label_value"
    if isinstance(error, labels.SizeMismatchError):
        return "size_mismatch"
    if isinstance(error, (image_io.ImageReadError, OSError)):
        return "unreadable"
    if isinstance(error, ValueError) and "canvas" in str(error):
        return "canvas"
    return "other"


def open_split(data_config, split: str) -> tuple[Any, dict[str, list[str]]]:
    """The split's source, and the files that pair with nothing (custom datasets)."""
    if data_config.name != "custom":
        return datasets.get_dataset(data_config, split), {}
    description = custom.Description(custom.require_folder(data_config))
    pairs, unlabelled, orphans = custom.split_pairs(description, split, strict=False)
    source = custom.CustomFolder.from_pairs(description, split, pairs)
    scale = data_config.get("image_scale", 1.0)
    return (source if scale == 1.0 else RescaledSource(source, scale),
            {"unlabelled": unlabelled, "orphan": orphans})


def check_split(data_config, split: str, num_workers: int = 4) -> dict[str, Any]:
    """Reads every example of `split`; returns its statistics and problems."""
    source, unpaired = open_split(data_config, split)
    num_classes = len(source.class_names)
    canvas = tuple(data_config.canvas_size)
    problems: dict[str, dict[str, Any]] = {}

    def note(kind: str, where: str, message: str) -> None:
        entry = problems.setdefault(kind, {"count": 0, "first": where, "message": message})
        entry["count"] += 1

    for kind, files in unpaired.items():
        for path in files:
            note(kind, path, PROBLEMS[kind])

    def read(index: int):
        where = input_pipeline.describe_example(source, index)
        try:
            example = source[index]
        except Exception as error:  # pylint: disable=broad-except
            return index, where, None, error
        try:
            input_pipeline.prepare_example(source, index, example, canvas,
                                           data_config.ignore_label)
        except Exception as error:  # pylint: disable=broad-except
            return index, where, example, error
        return index, where, example, None

    counts = np.zeros(256, np.int64)
    heights, widths, readable = [], [], []
    with concurrent.futures.ThreadPoolExecutor(num_workers) as executor:
        for index, where, example, error in executor.map(read, range(len(source))):
            if error is not None:
                note(classify(error), where, str(error))
            if example is None:
                continue
            heights.append(example["image"].shape[0])
            widths.append(example["image"].shape[1])
            counts += np.bincount(np.asarray(example["label"]).ravel(), minlength=256)[:256]
            if (error is None or classify(error) == "canvas") and len(readable) < 64:
                readable.append(index)  # what examples.png may show
    pixels = counts[:num_classes]
    return {
        "split": split, "examples": len(source) + len(unpaired.get("unlabelled", [])),
        "readable_examples": len(heights),
        "class_names": list(source.class_names),
        "class_pixels": pixels.tolist(),
        "class_frequencies": (pixels / max(pixels.sum(), 1)).tolist(),
        "ignored_pixels": int(counts[data_config.ignore_label]),
        "height_range": [min(heights), max(heights)] if heights else None,
        "width_range": [min(widths), max(widths)] if widths else None,
        "problems": problems, "palette": source.palette, "source": source,
        "shown": readable,
    }


def suggested_canvas(reports: Sequence[dict[str, Any]]) -> Optional[tuple[int, int]]:
    """The smallest 32k+1 canvas holding every image (aligned corners at strides 8-32)."""
    sides = [(r["height_range"][1], r["width_range"][1]) for r in reports if r["height_range"]]
    if not sides:
        return None
    height, width = (max(side) for side in zip(*sides))
    return tuple(-(-(s - 1) // 32) * 32 + 1 for s in (height, width))


def write_pictures(reports: Sequence[dict[str, Any]], output: str, num_examples: int = 6
                   ) -> list[str]:
    """examples.png (image | labels overlaid) and class_frequencies.png."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    from deeplab_jax.reporting.figures import save_figure  # pylint: disable=import-outside-toplevel

    paths = []
    first = next((r for r in reports if r["shown"]), None)
    if first is not None:
        rows = []
        for index in first["shown"][:num_examples]:
            example = first["source"][index]
            overlay = visualize.overlay(example["image"], example["label"], first["palette"])
            row = np.concatenate([example["image"], np.full_like(example["image"][:, :4], 255),
                                  overlay], axis=1)
            rows.append(row)
        width = max(row.shape[1] for row in rows)
        rows = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0)), constant_values=255)
                for row in rows]
        paths.append(os.path.join(output, "examples.png"))
        visualize.save_png(paths[-1], np.concatenate(rows))
    figure = Figure(figsize=(max(6.0, 0.45 * len(reports[0]["class_names"]) + 2), 4))
    axes = figure.add_subplot()
    names = reports[0]["class_names"]
    bar = 0.8 / len(reports)
    for offset, report in enumerate(reports):
        axes.bar(np.arange(len(names)) + (offset - (len(reports) - 1) / 2) * bar,
                 report["class_frequencies"], bar, label=report["split"])
    axes.set_xticks(range(len(names)), labels=names, rotation=60, ha="right")
    axes.set_ylabel("fraction of labelled pixels")
    axes.set_yscale("log")
    axes.legend()
    axes.set_title("Class frequencies")
    paths.append(os.path.join(output, "class_frequencies.png"))
    save_figure(figure, paths[-1])
    return paths


def summary(reports: Sequence[dict[str, Any]], canvas: tuple[int, int]) -> str:
    lines = []
    for report in reports:
        lines.append(f"{report['split']}: {report['examples']} examples, image heights "
                     f"{report['height_range']}, widths {report['width_range']}")
        total = max(sum(report["class_pixels"]), 1)
        lines.append("  pixels per class: " + ", ".join(
            f"{name} {count / total:.2%}" for name, count in
            zip(report["class_names"], report["class_pixels"]))
            + f"; ignored {report['ignored_pixels']}")
        for kind, problem in report["problems"].items():
            lines.append(f"  PROBLEM {PROBLEMS[kind]}: {problem['count']} (first: "
                         f"{problem['first']}): {problem['message'][:300]}")
    suggestion = suggested_canvas(reports)
    if suggestion and (suggestion[0] > canvas[0] or suggestion[1] > canvas[1]):
        lines.append(f"The largest image does not fit config.data.canvas_size={canvas}: use "
                     f"--config.data.canvas_size='{suggestion}' (and a crop_size within it).")
    return "\n".join(lines)


def check(config, splits: Sequence[str], output: Optional[str]) -> dict[str, Any]:
    """Checks `splits` of `config.data`; writes the report and pictures to `output`."""
    reports = [check_split(config.data, split) for split in splits]
    canvas = tuple(config.data.canvas_size)
    text = summary(reports, canvas)
    print(text)
    result = {"dataset": config.data.name, "folder": config.data.get("folder"),
              "ok": not any(report["problems"] for report in reports),
              "suggested_canvas": suggested_canvas(reports),
              "splits": [{key: value for key, value in report.items()
                          if key not in ("palette", "source", "shown")} for report in reports]}
    if output:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "report.json"), "w") as file:
            json.dump(result, file, indent=2)
        result["pictures"] = write_pictures(reports, output)
        print(f"Wrote {output}/report.json and {', '.join(result['pictures'])}.")
    return result


def main(argv: Sequence[str]) -> None:
    start_command(argv)
    FLAGS = flags.FLAGS
    config = config_lib.config_from_flag(FLAGS["config"])
    splits = FLAGS.splits or list(dict.fromkeys([config.data.train_split,
                                                 config.data.eval_split]))
    result = check(config, splits, FLAGS.output)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "The config whose config.data to check.",
                                    lock_config=True)
    flags.DEFINE_string("output", None, "Folder for report.json and the pictures.")
    flags.DEFINE_list("splits", None, "Splits to check (default: the train and eval splits).")
    flags.mark_flags_as_required(["config"])
    errors.run_app(main, "python -m deeplab_jax.data.check")
