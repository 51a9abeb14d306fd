"""The comparison's files: results.json, results.md (the table) and predictions.png."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from deeplab_jax.data import datasets
from deeplab_jax.inference.predictor import Predictor
from deeplab_jax.inference.restore import restore_model
from deeplab_jax.reporting import figures, machine, visualize
from deeplab_jax.reporting.eta import format_duration
from experiments import seeds as seeds_lib
from experiments.results_files import write_results


def _mean(entry: dict[str, Any]) -> str:
    """'0.5042 ± 0.0110' of a `seeds.summarize` entry (no ± with one seed)."""
    return f"{entry['mean']:.4f}" + ("" if entry["std"] is None else f" ± {entry['std']:.4f}")


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    seeds = results.get("seeds", [0])
    lines = [f"# Baselines on one backbone: CamVid val, setting `{results['setting']}`", "",
             f"Command: `{results['command']}`  ", f"Commit: `{results['commit']}`  ",
             f"Machine: {machine.summary(results['machine'])}  ",
             f"Seeds: {', '.join(map(str, seeds))}; runs done: {len(results['cells'])}  ",
             f"Training wall time, summed over the runs' `timing.json` (each on the machine "
             f"it trained on, sometimes shared with other jobs): "
             f"{format_duration(sum(row.get('train_wall_seconds') or 0 for row in rows))}; "
             f"this command: {format_duration(results.get('wall_seconds', 0))} (a rerun only "
             "re-evaluates and re-profiles finished runs)", "",
             "Shared by every row: " + ", ".join(
                 f"`{key}={value}`" for key, value in results["shared"].items())
             + " (and everything else of `configs/camvid.py`: augmentation, schedule); each "
             "seed sets the parameters' initialisation, the data order and the augmentation.",
             "", "val mIoU: the mean over seeds ± their standard deviation, each seed's "
             "value, and the 95% bootstrap interval of the mean over the "
             f"{rows[0]['miou']['method']['num_images'] if rows else 'val'} val images "
             "(`experiments/seeds.py`).", "",
             "| model | val mIoU (mean ± std) | per seed | 95% CI of the mean | pixel acc. | "
             "params (M) | forward GFLOP / image | train step (ms) | XLA memory (MiB) | its "
             "own settings |", "| --- " * 10 + "|"]
    for row in rows:
        memory = row["memory_bytes"]
        miou = row["miou"]
        lines.append(
            f"| {row['name']} | **{_mean(miou)}** | "
            f"{', '.join(f'{value:.4f}' for value in miou['per_seed'])} | "
            f"{miou['low']:.4f}-{miou['high']:.4f} | {row['pixel_accuracy']['mean']:.4f} | "
            f"{row['params'] / 1e6:.2f} | {row['forward_gflops_per_image']:.3f} | "
            f"{row['step_ms']:.1f} | {'n/a' if memory is None else f'{memory / 2**20:.0f}'} | "
            f"{row['settings']} ({row['why']}) |")
    if results.get("orderings"):
        lines += ["", "Adjacent rows by mean mIoU: the difference of the means and its 95% "
                  "interval over images (paired) and seeds (resampled per row). Only a "
                  "separated pair is an ordering this table supports.", ""]
        lines += seeds_lib.format_orderings(results["orderings"])
    if results.get("crf_rows"):
        lines += ["", "With the dense CRF after the network (DeepLab v1/v2), evaluating the same "
                  "checkpoints:", "", "| model | val mIoU (mean ± std) | without the CRF | "
                  "change (95% CI) | CRF ms / image | its settings |", "| --- " * 6 + "|"]
        for row in results["crf_rows"]:
            change = row["change"]
            lines.append(f"| {row['name']} | **{_mean(row['miou'])}** | "
                         f"{row['miou_without']:.4f} | {change['difference']:+.4f} "
                         f"({change['low']:+.4f} to {change['high']:+.4f}) | "
                         f"{row['crf_ms_per_image']:.1f} | {row['settings']} |")
    if results.get("diverged"):  # under the protocol's schedule: a result, not a crash
        lines += [""] + [f"- **Diverged**: {entry['name']} (seed {entry['seed']}): "
                         f"{entry['message']}." for entry in results["diverged"]]
    if results.get("not_trained"):  # --only_trained: the cells still to train
        lines += ["", "- **Not yet trained** (this table leaves them out): " + ", ".join(
            f"{entry['name']} (seed {entry['seed']})" for entry in results["not_trained"])
            + "."]
    class_names = results["class_names"]
    lines += ["", "Per-class IoU, mean over seeds:", "",
              "| model | " + " | ".join(class_names) + " |",
              "| --- " * (len(class_names) + 1) + "|"]
    for row in rows + results.get("crf_rows", []):
        lines.append(f"| {row['name']} | " + " | ".join(
            "n/a" if value is None else f"{value:.3f}" for value in row["per_class_iou"])
            + " |")
    lines += ["", "Train step: median of timed steps of the compiled training step on one "
              "device, on a batch already in memory (`analysis/step_profile.py`); the wall "
              "times come from each run's `timing.json`. Forward GFLOP: every convolution tap "
              "and matmul of one image at the crop size (`analysis/model_flops.py`). XLA "
              "memory: the compiled step's buffers at the batch size.", ""]
    return "\n".join(lines)


def write(results: dict[str, Any], output_dir: str) -> None:
    write_results(output_dir, results, markdown(results))


def write_predictions(results: dict[str, Any], configs: dict[str, Any], output_dir: str,
                      num_pictures: int) -> str:
    """predictions.png: val images spread evenly over the split (CamVid's neighbours are
    consecutive video frames, nearly alike), truth, then every model's prediction."""
    first = configs[results["rows"][0]["name"]]
    source = datasets.get_dataset(first.data, first.data.eval_split)
    count = max(1, min(num_pictures, len(source)))
    examples = [source[index * len(source) // count] for index in range(count)]
    palette = source.palette
    columns = [("image", [example["image"] for example in examples]),
               ("truth", [visualize.colorize(example["label"], palette) for example in examples])]
    for row in results["rows"]:  # each row's first seed
        restored = restore_model(configs[row["name"]], row["workdir"])
        labels = Predictor.from_restored(restored).predict([e["image"] for e in examples])
        columns.append((f"{row['name']} ({row['miou']['per_seed'][0]:.3f})",
                        [visualize.colorize(label, palette) for label in labels]))
    path = os.path.join(output_dir, "predictions.png")
    visualize.save_png(path, _grid(columns))
    return path


def _grid(columns: list[tuple[str, list[np.ndarray]]], gap: int = 4, title: int = 18
          ) -> np.ndarray:
    """Columns of equally sized tiles under their titles, on white."""
    height, width = columns[0][1][0].shape[:2]
    scale = max(1, int(np.ceil(160 / width)))  # small tiles enlarged, nearest neighbour
    height, width = height * scale, width * scale
    rows = len(columns[0][1])
    canvas = Image.new("RGB", (len(columns) * (width + gap), title + rows * (height + gap)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = figures.pil_font(11)
    for index, (name, tiles) in enumerate(columns):
        left = index * (width + gap)
        draw.text((left + 2, 3), name[:28], fill=(0, 0, 0), font=font)
        for row, tile in enumerate(tiles):
            tile = np.repeat(np.repeat(np.asarray(tile, np.uint8), scale, 0), scale, 1)
            canvas.paste(Image.fromarray(tile), (left, title + row * (height + gap)))
    return np.asarray(canvas)
