"""Seeds in the ablation runners: one run per (cell, seed), and what the tables print.

Every runner (`baselines/run.py`, `output_stride/run.py`, later tables the same way) takes
`--seeds=0,1,2`, trains each of its cells once per seed in `CELL_DIR/seed_<seed>` (each
resuming on its own, so a table can span sessions) and summarises a cell over its seeds
from the evaluations' per-image files (`deeplab_jax/evaluation/intervals.py`):

- the mean over seeds, the standard deviation over seeds and every seed's value;
- the 95% bootstrap interval of that mean over the val images (one resample for all seeds);
- for two cells, the difference of their means with a two-level interval (images paired,
  seeds resampled): an ordering is claimed only when that interval excludes 0.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.evaluation import comparison, intervals, outputs, per_image


def parse_seeds(values: Sequence[str]) -> list[int]:
    """'--seeds=0,1,2' as [0, 1, 2]; refuses repeats and non-integers, naming them."""
    try:
        seeds = [int(value) for value in values]
    except ValueError as error:
        raise ConfigError(f"--seeds={','.join(values)}: seeds are whole numbers, e.g. "
                         f"--seeds=0,1,2 ({error}).") from error
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds={','.join(values)}: give distinct non-negative seeds, e.g. "
                         "--seeds=0,1,2.")
    return seeds


def seed_workdir(cell_dir: str, seed: int) -> str:
    """CELL_DIR/seed_<seed>: the run of one cell from one seed."""
    return os.path.join(cell_dir, f"seed_{seed}")


def per_image_file(workdir: str, record: dict[str, Any]) -> str:
    """The per-image file of evaluation `record` (as `train.train_and_evaluate` returns it)."""
    name = outputs.evaluation_name(record["split"], record["step"],
                                   output_stride=record["output_stride"],
                                   scales=record["scales"], flip=record["flip"],
                                   crf=record.get("crf", False),
                                   crf_downsample=record.get("crf_downsample", 1))
    return os.path.join(workdir, "eval", name + per_image.FILE_SUFFIX)


def _stack(files: Sequence[str]) -> np.ndarray:
    """[S, N, K, K]: the seeds' per-image matrices, after checking they saw the same images."""
    loaded = [per_image.load(file) for file in files]
    for file, other in zip(files[1:], loaded[1:]):
        comparison.check_same_images(loaded[0], other, (files[0], file))
    return np.stack([entry["confusion"] for entry in loaded])


def summarize(files: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """One cell over its seeds: mean, std, per-seed values and the interval of the mean,
    for mIoU and pixel accuracy, and the mean per-class IoU."""
    confusions = _stack(files)
    summary = {name: intervals.seed_mean_interval(confusions, name=name)
               for name in ("miou", "pixel_accuracy")}
    per_class = intervals.scores(confusions.sum(1))["per_class_iou"]  # [S, K]
    with np.errstate(invalid="ignore"):
        mean_per_class = np.nanmean(per_class, axis=0) if len(per_class) else per_class
    return {"seeds": list(seeds), "files": list(files), **summary,
            "per_class_iou": [None if np.isnan(v) else float(v) for v in mean_per_class]}


def difference(files_a: Sequence[str], files_b: Sequence[str], *,
               paired_seeds: bool = False) -> dict[str, Any]:
    """Cell B's mean mIoU over its seeds minus cell A's, with the two-level interval.

    Args:
      files_a, files_b: each cell's per-image files, one per seed (the same images in all).
      paired_seeds: file i of B evaluates the network of file i of A (a CRF row and its
        row): `intervals.rows_difference`.

    Returns:
      {'difference', 'low', 'high', 'separated', 'method'} (`intervals.rows_difference`),
      and 'seeds': how many seeds each cell has (with one, the interval is over the images
      only: the spread between seeds, often larger, is not in it).
    """
    stack_a, stack_b = _stack(files_a), _stack(files_b)
    comparison.check_same_images(per_image.load(files_a[0]), per_image.load(files_b[0]),
                                 (files_a[0], files_b[0]))
    return {**intervals.rows_difference(stack_a, stack_b, paired_seeds=paired_seeds),
            "seeds": [len(files_a), len(files_b)]}


def ranked_differences(cells: dict[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Cells sorted by mean mIoU, and each one's difference from the next below it.

    Args:
      cells: name -> the per-image files of its seeds (same images in every file).

    Returns:
      [{'higher', 'lower', 'difference', 'low', 'high', 'separated', 'seeds'}] for each
      adjacent pair, best first (`difference`: images paired, seeds resampled).
    """
    means = {name: float(np.mean([intervals.scores(per_image.load(file)["confusion"].sum(0))[
        "miou"] for file in files])) for name, files in cells.items()}
    ranked = sorted(cells, key=lambda name: -means[name])
    pairs = []
    for higher, lower in zip(ranked, ranked[1:]):
        result = difference(cells[lower], cells[higher])
        pairs.append({"higher": higher, "lower": lower,
                      **{key: result[key] for key in ("difference", "low", "high",
                                                      "separated", "seeds")}})
    return pairs


def format_summary(summary: dict[str, Any], name: str = "miou", digits: int = 4) -> str:
    """'0.5042 ± 0.0110 (0.4931, 0.5150, 0.5046; 95% CI 0.4801-0.5270)' for a cell."""
    entry = summary[name]
    spread = "" if entry["std"] is None else f" ± {entry['std']:.{digits}f}"
    values = ", ".join(f"{value:.{digits}f}" for value in entry["per_seed"])
    level = 100 * entry["method"]["level"]
    return (f"{entry['mean']:.{digits}f}{spread} ({values}; {level:g}% CI "
            f"{entry['low']:.{digits}f}-{entry['high']:.{digits}f})")


def format_orderings(pairs: Sequence[dict[str, Any]], digits: int = 4) -> list[str]:
    """One Markdown line per adjacent pair: separated by the interval, or within the noise."""
    lines = []
    for pair in pairs:
        verdict = ("**separated**" if pair["separated"] else
                   "within the noise (the interval includes 0)")
        if pair["separated"] and min(pair.get("seeds") or (2,)) < 2:
            # With one seed the interval is over the images alone; retraining from another
            # seed (or on another CPU type) moves a row by more than that at this size.
            verdict = ("separated over the images only: one seed, so the spread between "
                       "seeds is not in the interval (provisional)")
        lines.append(f"- {pair['higher']} - {pair['lower']}: {pair['difference']:+.{digits}f} "
                     f"(95% CI {pair['low']:+.{digits}f} to {pair['high']:+.{digits}f}): "
                     f"{verdict}")
    return lines
