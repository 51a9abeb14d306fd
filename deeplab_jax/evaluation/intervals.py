"""How sure a figure is: bootstrap intervals over images, paired tests, seeds.

mIoU is a dataset-level metric (one confusion matrix summed over the split, then reduced),
not a mean of per-image scores, so its uncertainty is taken the way it is computed: resample
the images with replacement, sum *their* confusion matrices, reduce (Efron's percentile
bootstrap; the same procedure as Koehn 2004 for corpus-level BLEU). Every function is pure
NumPy on per-image matrices [N, K, K] and vectorised: a resample is a row of image counts,
so R resampled matrices are one [R, N] x [N, K*K] product (VOC val, 1449 images x 21
classes, 1000 resamples: well under a second on one core).

- `interval`: the evaluation's own 95% interval for mIoU and pixel accuracy;
- `paired_difference`: B - A on the same images, its paired-bootstrap interval (each
  resample draws the same images for both) and a two-sided p-value by paired approximate
  randomisation (Noreen 1989; Riezler and Maxwell 2005): under "A and B are the same
  system", swapping A's and B's prediction of any image changes nothing, so the p-value is
  the share of random swaps whose |difference| reaches the observed one. A run against
  itself gives a zero-width interval and p = 1.
- `seed_mean_interval`, `rows_difference`: tables with several training seeds per row. The
  mean over seeds gets an interval over the images (the same resample for every seed); two
  rows' difference of seed means gets a two-level bootstrap that resamples the images
  (paired) and, independently for each row, the seeds, so it carries both sources of noise.
  With 3 seeds the seed level is coarse (a resample of 3 underestimates the spread by about
  a factor sqrt(2/3)); the tables also print the per-seed values.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

LEVEL = 0.95
NUM_RESAMPLES = 1000
CHUNK = 100  # resamples per matrix product: bounds memory at CHUNK x K x K float64


def resample_counts(num_images: int, num_resamples: int, seed: int) -> np.ndarray:
    """int64 [R, N]: how often each image is drawn in each of R resamples of N images."""
    if num_images < 1:
        raise ValueError("A bootstrap needs at least one image.")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images),
                           size=num_resamples)


def _flat(confusions: np.ndarray) -> np.ndarray:
    confusions = np.asarray(confusions)
    if confusions.ndim != 3 or confusions.shape[1] != confusions.shape[2]:
        raise ValueError(f"per-image confusion matrices must be [N, K, K], got "
                         f"{confusions.shape}.")
    return confusions.reshape(len(confusions), -1).astype(np.float64)


def _weighted_sums(weights: np.ndarray, flat: np.ndarray, num_classes: int
                   ) -> Iterator[np.ndarray]:
    """[r, K, K] chunks of weights @ flat (weights [R, N], flat [N, K*K])."""
    for start in range(0, len(weights), CHUNK):
        yield (weights[start:start + CHUNK].astype(np.float64) @ flat).reshape(
            -1, num_classes, num_classes)


def scores(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """mIoU, pixel accuracy and per-class IoU of each of a stack of matrices.

    The conventions of `metrics.metrics_from_confusion_matrix` (a class in neither truth nor
    prediction is left out of the mean), vectorised over the leading axis.

    Args:
      confusions: [..., K, K] (rows: ground truth).

    Returns:
      'miou' [...], 'pixel_accuracy' [...], 'per_class_iou' [..., K] (NaN where undefined).
    """
    confusions = np.asarray(confusions, np.float64)
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    union = confusions.sum(-1) + confusions.sum(-2) - tp
    iou = np.divide(tp, union, out=np.full(tp.shape, np.nan), where=union > 0)
    present = union > 0
    count = present.sum(-1)
    miou = np.divide(np.where(present, iou, 0.0).sum(-1), count,
                     out=np.full(count.shape, np.nan), where=count > 0)
    total = confusions.sum((-2, -1))
    accuracy = np.divide(tp.sum(-1), total, out=np.full(total.shape, np.nan),
                         where=total > 0)
    return {"miou": miou, "pixel_accuracy": accuracy, "per_class_iou": iou}


def _bounds(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):
        return (np.nanpercentile(samples, tail, axis=0),
                np.nanpercentile(samples, 100 - tail, axis=0))


def _summary(value: float, samples: np.ndarray, level: float) -> dict[str, float]:
    low, high = _bounds(samples, level)
    return {"value": float(value), "low": float(low), "high": float(high),
            "std": float(np.nanstd(samples))}


def _method(num_resamples: int, seed: int, level: float, **extra: Any) -> dict[str, Any]:
    return {"level": level, "resamples": num_resamples, "seed": seed, **extra}


def interval(confusions: np.ndarray, *, num_resamples: int = NUM_RESAMPLES, seed: int = 0,
             level: float = LEVEL) -> dict[str, Any]:
    """Percentile-bootstrap interval of an evaluation's mIoU, pixel accuracy and class IoUs.

    Args:
      confusions: [N, K, K] per-image confusion matrices of the evaluation.

    Returns:
      {'miou': {'value', 'low', 'high', 'std'}, 'pixel_accuracy': {...},
      'per_class_iou': {'low': [K], 'high': [K]} (None where undefined), 'method': {...}};
      'value' is the metric of the whole split, 'std' the bootstrap standard error.
    """
    flat = _flat(confusions)
    num_classes = np.asarray(confusions).shape[1]
    counts = resample_counts(len(flat), num_resamples, seed)
    chunks = [scores(chunk) for chunk in _weighted_sums(counts, flat, num_classes)]
    samples = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    observed = scores(flat.sum(0).reshape(num_classes, num_classes))
    class_low, class_high = _bounds(samples["per_class_iou"], level)
    return {name: _summary(observed[name], samples[name], level)
            for name in ("miou", "pixel_accuracy")} | {
        "per_class_iou": {"low": _plain(class_low), "high": _plain(class_high)},
        "method": _method(num_resamples, seed, level, over="images",
                          num_images=len(flat))}


def paired_difference(confusions_a: np.ndarray, confusions_b: np.ndarray, *,
                      num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> dict[str, Any]:
    """B - A on the same images: the difference, its paired-bootstrap interval, a p-value.

    Args:
      confusions_a, confusions_b: [N, K, K] of two evaluations of the same N images, in
        the same order (`comparison.check_same_images` checks that).

    Returns:
      {'miou': {'a', 'b', 'difference', 'low', 'high', 'p_value'}, 'pixel_accuracy': {...},
      'per_class_iou': {'a', 'b', 'difference', 'low', 'high', 'p_value'} (lists of K; None
      where undefined), 'method': {...}}. The p-value is two-sided, from `num_resamples`
      random swaps, (1 + #{|swapped difference| >= |observed|}) / (1 + R): it is never 0.
    """
    flat_a, flat_b = _flat(confusions_a), _flat(confusions_b)
    if flat_a.shape != flat_b.shape:
        raise ValueError(f"the evaluations differ in shape: {np.shape(confusions_a)} and "
                         f"{np.shape(confusions_b)}.")
    num_images, num_classes = len(flat_a), np.asarray(confusions_a).shape[1]
    total_a, total_b = flat_a.sum(0), flat_b.sum(0)
    score_a = scores(total_a.reshape(num_classes, num_classes))
    score_b = scores(total_b.reshape(num_classes, num_classes))
    counts = resample_counts(num_images, num_resamples, seed)
    boot_a = [scores(chunk) for chunk in _weighted_sums(counts, flat_a, num_classes)]
    boot_b = [scores(chunk) for chunk in _weighted_sums(counts, flat_b, num_classes)]
    # Approximate randomisation: swapping image i moves (B_i - A_i) from B's sum to A's.
    swaps = np.random.default_rng([seed, 1]).integers(0, 2, (num_resamples, num_images))
    moved = list(_weighted_sums(swaps, flat_b - flat_a, num_classes))
    swapped_a = [scores(total_a.reshape(num_classes, num_classes) + m) for m in moved]
    swapped_b = [scores(total_b.reshape(num_classes, num_classes) - m) for m in moved]
    results = {}
    for name in ("miou", "pixel_accuracy", "per_class_iou"):
        observed = score_b[name] - score_a[name]
        difference = np.concatenate([b[name] - a[name] for a, b in zip(boot_a, boot_b)])
        low, high = _bounds(difference, level)
        null = np.concatenate([b[name] - a[name] for a, b in zip(swapped_a, swapped_b)])
        with np.errstate(invalid="ignore"):
            # A tolerance: float sums of the same counts in another order must tie exactly.
            reached = np.abs(null) >= np.abs(observed) - 1e-12
        p_value = (1 + np.sum(reached & ~np.isnan(null), axis=0)) / (1 + num_resamples)
        p_value = np.where(np.isnan(observed), np.nan, p_value)
        results[name] = {"a": score_a[name], "b": score_b[name], "difference": observed,
                         "low": low, "high": high, "p_value": p_value}
        results[name] = {key: _plain(value) for key, value in results[name].items()}
    results["method"] = _method(num_resamples, seed, level, over="images", paired=True,
                                num_images=num_images,
                                p_value="paired approximate randomisation, two-sided")
    return results


def _plain(value: np.ndarray) -> Any:
    """A float (or list of floats) for JSON, None for NaN."""
    value = np.asarray(value, np.float64)
    if value.ndim == 0:
        return None if np.isnan(value) else float(value)
    return [None if np.isnan(v) else float(v) for v in value]


def _seed_scores(confusions: np.ndarray, counts: np.ndarray, name: str) -> np.ndarray:
    """[S, R]: metric `name` of each seed's evaluation under each image resample."""
    confusions = np.asarray(confusions)
    if confusions.ndim != 4:
        raise ValueError(f"per-seed confusion matrices must be [S, N, K, K], got "
                         f"{confusions.shape}.")
    num_classes = confusions.shape[-1]
    return np.stack([np.concatenate([scores(chunk)[name] for chunk in
                                     _weighted_sums(counts, _flat(seed), num_classes)])
                     for seed in confusions])


def seed_mean_interval(confusions: np.ndarray, *, name: str = "miou",
                       num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> dict[str, Any]:
    """One table row trained from S seeds: the mean over seeds, the std over seeds, each
    seed's value, and the interval of the mean over the images (one resample for all seeds).

    Args:
      confusions: [S, N, K, K], each seed's per-image matrices on the same N images.
    """
    confusions = np.asarray(confusions)
    per_seed = np.array([scores(c.sum(0))[name] for c in confusions])
    counts = resample_counts(confusions.shape[1], num_resamples, seed)
    low, high = _bounds(_seed_scores(confusions, counts, name).mean(0), level)
    return {"mean": float(per_seed.mean()),
            "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
            "per_seed": per_seed.tolist(), "low": float(low), "high": float(high),
            "method": _method(num_resamples, seed, level, over="images", seeds=len(per_seed),
                              num_images=confusions.shape[1])}


def rows_difference(confusions_a: np.ndarray, confusions_b: np.ndarray, *,
                    name: str = "miou", num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                    level: float = LEVEL, paired_seeds: bool = False) -> dict[str, Any]:
    """Row B's seed mean minus row A's, with a two-level bootstrap interval (module docstring).

    Args:
      confusions_a: [Sa, N, K, K]; confusions_b: [Sb, N, K, K], on the same N images.
      paired_seeds: seed s of B is seed s of A evaluated otherwise (the same checkpoints with
        and without the CRF, or at another eval stride): the seeds are resampled together,
        so the spread between networks, which both rows share, cancels as the images' does.
        Needs Sa == Sb, in the same seed order.

    Returns:
      {'difference', 'low', 'high', 'separated' (the interval excludes 0), 'method'}.
    """
    confusions_a, confusions_b = np.asarray(confusions_a), np.asarray(confusions_b)
    if confusions_a.shape[1:] != confusions_b.shape[1:]:
        raise ValueError(f"the rows were evaluated on different images or classes: "
                         f"{confusions_a.shape[1:]} and {confusions_b.shape[1:]}.")
    counts = resample_counts(confusions_a.shape[1], num_resamples, seed)
    scores_a = _seed_scores(confusions_a, counts, name)  # [Sa, R]
    scores_b = _seed_scores(confusions_b, counts, name)
    rng = np.random.default_rng([seed, 2])
    columns = np.arange(num_resamples)
    picks_a = rng.integers(0, len(scores_a), (len(scores_a), num_resamples))
    if paired_seeds:
        if len(scores_a) != len(scores_b):
            raise ValueError(f"paired seeds need as many seeds in both rows: {len(scores_a)} "
                             f"and {len(scores_b)}.")
        picks_b = picks_a
    else:
        picks_b = rng.integers(0, len(scores_b), (len(scores_b), num_resamples))
    difference = (scores_b[picks_b, columns].mean(0) - scores_a[picks_a, columns].mean(0))
    observed = (np.mean([scores(c.sum(0))[name] for c in confusions_b])
                - np.mean([scores(c.sum(0))[name] for c in confusions_a]))
    low, high = _bounds(difference, level)
    return {"difference": float(observed), "low": float(low), "high": float(high),
            "separated": bool(low > 0 or high < 0),
            "method": _method(num_resamples, seed, level,
                              over="images and seeds" + (" (paired)" if paired_seeds else ""),
                              seeds=[len(scores_a), len(scores_b)])}


def format_interval(record: dict[str, Any], name: str, digits: int = 4) -> str:
    """'0.4745 (95% CI 0.4521-0.4968)': metric `name` of an evaluation record and, when the
    record has one, its interval (`record['intervals']`)."""
    text = f"{record[name]:.{digits}f}"
    bounds = (record.get("intervals") or {}).get(name)
    if not bounds:
        return text
    level = record["intervals"]["method"]["level"]
    return (text + f" ({100 * level:g}% CI {bounds['low']:.{digits}f}-"
            f"{bounds['high']:.{digits}f})")
