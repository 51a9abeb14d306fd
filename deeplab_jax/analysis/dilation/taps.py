"""The taps of a 3x3 atrous filter that land inside the feature map (DeepLabv3 Sec. 3.3, Fig. 4).

In closed form (`valid_tap_histogram`, `valid_tap_fractions`), by enumeration
(`valid_tap_count_map`) and measured on the package's own ASPP branches
(`measured_tap_validity`); plus the effective kernel size k + (k - 1)(r - 1).
Conventions: offsets and positions are (row, column); a "rate" is the atrous rate; padding is
TF-style SAME at stride 1, as the model's.
"""
from __future__ import annotations

import itertools
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax.models.aspp import ASPP

# --------------------------------------------------------------------------------------
# Effective kernel size and the taps of an atrous filter.


def effective_kernel_size(kernel_size: int, rate: int) -> int:
    """k_eff = k + (k - 1)(r - 1): the span of a k-tap filter with rate r (Sec. 3.1)."""
    if kernel_size < 1 or rate < 1:
        raise ValueError(f"kernel_size={kernel_size} and rate={rate} must be >= 1.")
    return kernel_size + (kernel_size - 1) * (rate - 1)


def tap_offsets(kernel_size: int, rate: int) -> np.ndarray:
    """Offsets of a centred odd k-tap filter's taps along one axis: (j - (k-1)/2) * r."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size={kernel_size} must be odd to have a centre tap.")
    half = (kernel_size - 1) // 2
    return np.arange(-half, half + 1) * rate


def _hw(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


# --------------------------------------------------------------------------------------
# Valid taps of a 3x3 atrous filter on an n x n map with zero (SAME) padding: Fig. 4.


def axis_tap_counts(size: int, rate: int) -> dict[int, int]:
    """Closed form, one axis, 3-tap filter at stride 1 with SAME zero padding.

    Position i sees its centre tap always, tap -r when i >= r and tap +r when i <= n-1-r.
    Hence n3 = max(n - 2r, 0) positions see all 3 taps, n1 = max(min(r, n) - max(n - r, 0),
    0) positions (those with n-r <= i <= r-1; 2r - n of them while r <= n) only the centre
    one, and the rest see 2.

    Returns:
      {taps seen: number of positions} for taps seen in (1, 2, 3).
    """
    if size < 1 or rate < 1:
        raise ValueError(f"size={size} and rate={rate} must be >= 1.")
    three = max(size - 2 * rate, 0)
    one = max(min(rate, size) - max(size - rate, 0), 0)
    return {1: one, 2: size - three - one, 3: three}


def valid_tap_histogram(size: Union[int, Sequence[int]], rate: int) -> dict[int, float]:
    """Closed form: fraction of output positions by number of valid 3x3 taps (1..9).

    A 3x3 filter's taps are the product of one 3-tap filter per axis, so a position sees
    (row taps) x (column taps) valid weights: 1, 2, 3, 4, 6 or 9. Every output position of
    the H x W map (stride 1, SAME zero padding) counts once.
    """
    height, width = _hw(size)
    rows, cols = axis_tap_counts(height, rate), axis_tap_counts(width, rate)
    histogram = {count: 0.0 for count in (1, 2, 3, 4, 6, 9)}
    for (row_taps, row_n), (col_taps, col_n) in itertools.product(rows.items(), cols.items()):
        histogram[row_taps * col_taps] += row_n * col_n / (height * width)
    return histogram


def valid_tap_fractions(size: Union[int, Sequence[int]], rate: int) -> dict[str, float]:
    """The figures of Fig. 4 in closed form.

    Returns:
      all_valid: fraction of positions where all 9 taps land inside the map;
      centre_only: fraction where only the centre tap does (the filter is a 1x1 there);
      four_valid: fraction where 4 taps do (a corner of the map, the map smaller than 2r);
      mean_valid: the fraction of the 9 taps inside the map, averaged over all positions.
    """
    height, width = _hw(size)
    histogram = valid_tap_histogram((height, width), rate)
    # Separable: mean over positions of (row taps)(column taps) / 9, axis by axis.
    mean_rows = sum(t * n for t, n in axis_tap_counts(height, rate).items()) / height
    mean_cols = sum(t * n for t, n in axis_tap_counts(width, rate).items()) / width
    return {
        "all_valid": histogram[9],
        "centre_only": histogram[1],
        "four_valid": histogram[4],
        "mean_valid": mean_rows * mean_cols / 9.0,
    }


def valid_tap_count_map(size: Union[int, Sequence[int]], rate: int,
                        kernel_size: int = 3) -> np.ndarray:
    """By enumeration: [H, W] number of a k x k filter's taps inside the map, per position."""
    height, width = _hw(size)
    offsets = tap_offsets(kernel_size, rate)

    def axis(n):
        positions = np.arange(n)[:, None] + offsets[None, :]
        return ((positions >= 0) & (positions < n)).sum(axis=1)

    return np.outer(axis(height), axis(width))


def measured_tap_validity(size: Union[int, Sequence[int]], rates: Sequence[int]) -> np.ndarray:
    """Measured on the package's ASPP: [len(rates), H, W, 9] 1 where tap t lands inside.

    Each rate is a 3x3 branch of the real `ASPP` module (its own atrous conv and padding),
    applied to an all-ones [1, H, W, 1] map with a one-hot kernel per tap (output channel t
    is tap t = 3 * row + column): the output is 1 exactly where that tap reads the map and 0
    where it reads the zero padding. The branch conv outputs are read with flax's
    `capture_intermediates`, before the branch's BatchNorm.
    """
    height, width = _hw(size)
    rates = [int(rate) for rate in rates]
    if not rates:
        raise ValueError("rates is empty.")
    padded = rates + [rates[-1]] * (-len(rates) % 3)  # ASPP takes exactly three rates.
    ones = jnp.ones((1, height, width, 1), jnp.float32)
    one_hot = jnp.asarray(np.eye(9, dtype=np.float32).reshape(3, 3, 1, 9))
    branches = ("branch1", "branch2", "branch3")
    # The parameter tree does not depend on the rates: initialise once, apply per rate.
    variables = ASPP(atrous_rates=(1, 1, 1), channels=9).init(jax.random.key(0), ones,
                                                             train=False)
    params = dict(variables["params"])
    for name in branches:
        params[name] = {**params[name], "kernel": one_hot}
    variables = {**variables, "params": params}
    out = []
    for start in range(0, len(padded), 3):
        aspp = ASPP(atrous_rates=tuple(padded[start:start + 3]), channels=9)
        _, state = aspp.apply(
            variables, ones, train=False,
            capture_intermediates=lambda module, method: module.name in branches,
            mutable=["intermediates"])
        for name in branches:
            out.append(np.asarray(state["intermediates"][name]["__call__"][0][0]))
    return np.rint(np.stack(out[:len(rates)])).astype(np.int32)
