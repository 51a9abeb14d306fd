"""Figures of an evaluation: confusion matrix, per-class IoU, the worst and best images.

`write_evaluation_report` writes, next to an evaluation's metrics JSON:

- `WORKDIR/eval/NAME_confusion.png`: the confusion matrix normalised per ground-truth row
  (each row: where that class's pixels went), with the class names;
- `WORKDIR/eval/NAME_iou.png`: per-class IoU as bars, the mIoU as a line, each with its
  95% bootstrap interval when the evaluation has one;
- `WORKDIR/eval/NAME_best_worst.png`: the val images with the lowest and the highest
  per-image mIoU (`evaluation/per_image.py`), each as image | ground truth | prediction.

Figures use matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeplab_jax.evaluation.per_image import PerImageStats
from deeplab_jax.reporting import visualize

MIN_TILE = 128  # small val images are enlarged (nearest neighbour) to at least this

def pil_font(size: int) -> ImageFont.ImageFont:
    """PIL's built-in font at `size` pixels (the fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()

def save_figure(figure: Any, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")


def plot_confusion(path: str, confusion: np.ndarray, class_names: Sequence[str]) -> None:
    """The confusion matrix normalised per ground-truth row, as a heat map."""
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    k = len(class_names)
    side = max(4.0, 0.45 * k + 2.0)
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.add_subplot()
    shown = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="fraction of the row")
    axes.set_xticks(range(k), labels=class_names, rotation=60, ha="right")
    axes.set_yticks(range(k), labels=class_names)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title("Confusion matrix (rows normalised)")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if rows[i, 0] > 0:
                    value = normalised[i, j]
                    axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if value > 0.5 else "black")
    save_figure(figure, path)


def plot_iou(path: str, per_class_iou: Sequence[Optional[float]], class_names: Sequence[str],
             miou: Optional[float] = None,
             interval: Optional[dict[str, Any]] = None) -> None:
    """Per-class IoU bars; classes without an IoU (in neither truth nor prediction) say n/a.

    With `interval` (an evaluation's `intervals`, `evaluation/intervals.py`), each bar gets
    its 95% bootstrap interval as an error bar and the mIoU line its interval as a band.
    """
    from matplotlib.figure import Figure

    k = len(class_names)
    values = [np.nan if v is None else float(v) for v in per_class_iou]
    figure = Figure(figsize=(max(5.0, 0.45 * k + 2.0), 4.0))
    axes = figure.add_subplot()
    errors = None
    if interval:
        low = [np.nan if v is None else v for v in interval["per_class_iou"]["low"]]
        high = [np.nan if v is None else v for v in interval["per_class_iou"]["high"]]
        errors = np.nan_to_num(np.clip([np.subtract(values, low), np.subtract(high, values)],
                                       0, None))
    axes.bar(range(k), np.nan_to_num(values), color="tab:blue", yerr=errors,
             error_kw={"ecolor": "0.3", "capsize": 2, "elinewidth": 0.8})
    for i, value in enumerate(values):
        top = (0 if np.isnan(value) else value) + (errors[1][i] if errors is not None else 0)
        axes.text(i, top + 0.01, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center",
                  va="bottom", fontsize=7)
    if miou is not None:
        label = f"mIoU {miou:.3f}"
        if interval:
            bounds = interval["miou"]
            level = 100 * interval["method"]["level"]
            label += f" ({level:g}% CI {bounds['low']:.3f}-{bounds['high']:.3f})"
            axes.axhspan(bounds["low"], bounds["high"], color="tab:red", alpha=0.15, lw=0)
        axes.axhline(miou, color="tab:red", linestyle="--", label=label)
        axes.legend(loc="upper right", fontsize=8)
    axes.set_xticks(range(k), labels=class_names, rotation=60, ha="right")
    axes.set_ylim(0.0, 1.15)
    axes.set_ylabel("IoU")
    axes.set_title("Per-class IoU" + (" (bars: 95% bootstrap intervals over the images)"
                                      if interval else ""))
    save_figure(figure, path)


def best_worst_grid(worst: Sequence[tuple[float, int, dict[str, np.ndarray]]],
                    best: Sequence[tuple[float, int, dict[str, np.ndarray]]],
                    palette: np.ndarray) -> np.ndarray:
    """Two captioned blocks of image | truth | prediction rows: the worst, then the best.

    Returns:
      uint8 [H, W, 3].
    """
    blocks = []
    for title, examples in (("Worst images by mIoU", worst), ("Best images by mIoU", best)):
        if not examples:
            continue
        images = np.stack([example["image"] for _, _, example in examples])
        labels = np.stack([example["label"] for _, _, example in examples])
        predictions = np.stack([example["prediction"] for _, _, example in examples])
        scale = max(1, int(np.ceil(MIN_TILE / max(images.shape[1:3]))))
        if scale > 1:  # nearest neighbour: class maps stay class maps
            images, labels, predictions = (np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
                                           for x in (images, labels, predictions))
        panel = visualize.prediction_panel(images, labels, predictions, palette, gap=4)
        tile_height = images.shape[1]
        captions = [f"#{index}  mIoU {score:.3f}" for score, index, _ in examples]
        blocks.append(_captioned(panel, title + "  (image | truth | prediction)", captions,
                                 tile_height, gap=4))
    if not blocks:
        raise ValueError("best_worst_grid needs at least one example")
    width = max(block.shape[1] for block in blocks)
    spacer = np.full((12, width, 3), 255, np.uint8)
    padded = [np.pad(block, ((0, 0), (0, width - block.shape[1]), (0, 0)),
                     constant_values=255) for block in blocks]
    out = [padded[0]]
    for block in padded[1:]:
        out += [spacer, block]
    return np.concatenate(out)


def _captioned(panel: np.ndarray, title: str, captions: Sequence[str], tile_height: int,
               gap: int) -> np.ndarray:
    """`panel` with a title line above and one caption per row on the left."""
    font = pil_font(13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 8 + max(measure.textbbox((0, 0), caption, font=font)[2] for caption in captions)
    title_width = measure.textbbox((0, 0), title, font=font)[2]
    top = 22
    canvas = Image.new("RGB", (max(left + panel.shape[1], title_width + 8),
                               top + panel.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(panel), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for row, caption in enumerate(captions):
        draw.text((4, top + row * (tile_height + gap) + tile_height // 2 - 7), caption,
                  fill=(0, 0, 0), font=font)
    return np.asarray(canvas, np.uint8)


def report_paths(workdir: str, name: str) -> dict[str, str]:
    return {kind: os.path.join(workdir, "eval", f"{name}_{kind}.png")
            for kind in ("confusion", "iou", "best_worst")}


def write_evaluation_report(workdir: str, name: str, results: dict[str, Any],
                            stats: PerImageStats, class_names: Sequence[str],
                            palette: np.ndarray) -> dict[str, str]:
    """Writes the three report PNGs of evaluation `name`; returns their paths (those written).

    Args:
      results: the evaluation's metrics (`per_class_iou`, `miou`).
      stats: filled by `evaluate.evaluate(..., per_image=stats)`.
    """
    paths = report_paths(workdir, name)
    written = {}
    if stats.confusion is not None:
        plot_confusion(paths["confusion"], stats.confusion, class_names)
        written["confusion"] = paths["confusion"]
    plot_iou(paths["iou"], results["per_class_iou"], class_names, results.get("miou"),
             results.get("intervals"))
    written["iou"] = paths["iou"]
    if stats.worst or stats.best:
        visualize.save_png(paths["best_worst"],
                           best_worst_grid(stats.worst, stats.best, palette))
        written["best_worst"] = paths["best_worst"]
    return written
