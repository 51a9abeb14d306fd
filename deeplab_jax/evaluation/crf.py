"""The fully connected CRF of DeepLab v1/v2 (Krähenbühl and Koltun 2011), in JAX, on device.

Mean-field inference for the energy E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)
with unaries psi_u = -log P(x_i) from the network's probabilities, the Potts compatibility
mu = [x_i != x_j], and two Gaussian kernels (Krähenbühl and Koltun, Eq. 3):

    k(f_i, f_j) = w_bi  exp(-|p_i - p_j|^2 / 2 s_xy_bi^2 - |I_i - I_j|^2 / 2 s_rgb^2)
                + w_pos exp(-|p_i - p_j|^2 / 2 s_xy_pos^2)

(positions p in pixels, colours I in [0, 255]). One iteration (their Algorithm 1, with Potts,
whose compatibility transform reduces to adding the message up to a constant per pixel):
Q <- softmax(log P + message), `iterations` of them from Q = P, where the message is, per
kernel (`normalization`):
- "symmetric" (default): w n_i^-1/2 sum_j k_ij n_j^-1/2 Q_j with n_i = sum_j k_ij, j = i
  included. This is what the reference code computes (densecrf 3 and pydensecrf:
  `DenseKernel::filter` with NORMALIZE_SYMMETRIC, their default, pydensecrf2 1.1
  pydensecrf/densecrf/src/pairwise.cpp L40-80), and so what DeepLab's published weights
  were chosen with: a message bounded by w, whatever the kernel's reach;
- "none": the paper's Eq. 3 as written, w sum_{j != i} k_ij Q_j, which grows with the number
  of similar pixels within reach (thousands at s_xy = 67) and drowns the unaries at those
  weights. `energy` uses the same kernel as the messages.

How the sums over j run. The smoothness kernel depends on positions only: it is an exact
separable Gaussian filter (truncated at 4 standard deviations, a relative error below 1e-7)
at any setting. The appearance kernel, which depends on colour too, is summed
- `downsample=1` (the default): exactly, over every pixel pair. Where its N x N matrix fits
  `max_cached_kernel_mib` (a 90x120 image: 445 MiB) it is computed and normalised once and
  each iteration is one matrix product; larger images recompute it in row chunks every
  iteration (memory `chunk` x N, time 11 N^2 kernel values);
- `downsample=s > 1`, the fast approximation: over the pixels of a grid with stride s,
  weighted s^2 (a Riemann sum; the cost is about N^2 / s^2). It is not exact where few
  pixels share a colour: on CamVid val at 90x120 with a trained model's unaries, s = 4 (the
  default until 2026-12) gave labels equal to the exact mean field's on 97.6% of the pixels,
  s = 2 on 98.5% (`experiments/crf_agreement` has every measurement).
A permutohedral lattice (Krähenbühl and Koltun's own, Sec. 4) would be linear in N, but its
hash table is data-dependent in size, which a jitted function cannot have; it is an
approximation too (pydensecrf's labels differ from the exact mean field's on about 1% of
CamVid pixels).

Images are processed one at a time (`lax.map` over the batch), so memory is one image's.
Pixels outside `valid` (canvas padding) neither send nor receive messages. Parameters default
to the values DeepLab v2's ResNet-101 is published with for PASCAL VOC (`DEFAULTS`: w_bi 4,
s_xy_bi 67, s_rgb 3, w_pos 3, s_xy_pos 1, 10 iterations), as kazuto1011/deeplab-pytorch
reproduces them (configs/voc12.yaml L52-58 @4219467, passed to pydensecrf in
libs/utils/crf.py L26-38); the authors' release scripts are not in a public repository we
could read. The papers give only the search ranges (DeepLab v2, Sec. 4.1: w2 = 3, s_gamma = 3
by default, w1 in [3, 6], s_alpha in [30, 100], s_beta in [3, 6], 10 iterations). The
values are in pixels of the image the CRF runs on: scale the two spatial standard deviations
with the resolution (a quarter-resolution run: / 4).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

from deeplab_jax.errors import ConfigError

EPSILON = 1e-8  # probabilities are clipped here before the log
NORMALIZATIONS = ("symmetric", "none")


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Kernel weights and standard deviations (pixels, [0, 255] colours), iterations, the
    approximation's grid stride (1: exact)."""

    iterations: int = 10
    bilateral_weight: float = 4.0
    bilateral_xy_std: float = 67.0
    bilateral_rgb_std: float = 3.0
    gaussian_weight: float = 3.0
    gaussian_xy_std: float = 1.0
    downsample: int = 1
    normalization: str = "symmetric"  # or "none" (module docstring)
    chunk: int = 2048  # rows of the kernel computed at once
    max_cached_kernel_mib: int = 1024  # exact: keep the N x N kernel if it fits in this

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"config.eval.crf.normalization={self.normalization!r} is not "
                              f"one of {NORMALIZATIONS}; set one of them (default "
                              f"{NORMALIZATIONS[0]!r}).")


DEFAULTS = CRFParams()


def _features(images: jax.Array, params: CRFParams) -> tuple[jax.Array, jax.Array]:
    """[B, N, 5] bilateral and [B, N, 2] positional features, scaled by their std."""
    batch, height, width = images.shape[:3]
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                              jnp.arange(width, dtype=jnp.float32), indexing="ij")
    positions = jnp.stack([rows, cols], axis=-1).reshape(1, height * width, 2)
    positions = jnp.broadcast_to(positions, (batch, height * width, 2))
    colours = images.astype(jnp.float32).reshape(batch, height * width, 3)
    bilateral = jnp.concatenate([positions / params.bilateral_xy_std,
                                 colours / params.bilateral_rgb_std], axis=-1)
    # Centred: the kernel depends on differences only, and |f|^2 + |g|^2 - 2 f.g (`_kernel`)
    # loses less to cancellation in float32 on features near 0.
    bilateral = bilateral - jnp.mean(bilateral, axis=1, keepdims=True)
    return bilateral, positions / params.gaussian_xy_std


def _kernel(rows: jax.Array, cols: jax.Array) -> jax.Array:
    """exp(-|f_i - f_j|^2 / 2): [n, d] x [m, d] -> [n, m]."""
    distances = (jnp.sum(rows * rows, -1)[:, None] + jnp.sum(cols * cols, -1)[None, :]
                 - 2.0 * rows @ cols.T)
    return jnp.exp(-0.5 * jnp.maximum(distances, 0.0))


def _appearance_sums(bilateral, x, params: CRFParams, shape) -> jax.Array:
    """sum_j k_bilateral(f_i, f_j) x_j for every pixel i (j = i included): [N, d], [N, C]."""
    step = params.downsample
    if step == 1:  # exact: every pair
        return _dense_rows(bilateral, bilateral, x, params.chunk)
    # Over the pixels of the stride-s grid (at the cells' centres), each standing for s^2.
    rows = jnp.arange(step // 2, shape[0], step)
    cols = jnp.arange(step // 2, shape[1], step)
    grid = (rows[:, None] * shape[1] + cols[None, :]).reshape(-1)
    return float(step * step) * _dense_rows(bilateral, bilateral[grid], x[grid], params.chunk)


def _smoothness_sums(positional, x, params: CRFParams, shape) -> jax.Array:
    """sum_j k_gaussian(p_i, p_j) x_j (j = i included): a separable filter, exact."""
    del positional  # the kernel depends on positions only, which the filter knows
    return _gaussian_filter(x.reshape(*shape, -1), params.gaussian_xy_std).reshape(x.shape)


def exact_kernel_values(num_pixels: int, params: CRFParams) -> int:
    """Appearance-kernel values the exact path computes per image when it does not keep the
    kernel: N^2 for the normalisation and N^2 per iteration."""
    return (params.iterations + 1) * num_pixels ** 2


def caches_kernel(num_pixels: int, params: CRFParams) -> bool:
    """Whether the exact appearance kernel of an image of `num_pixels` is kept (float32)."""
    return (params.downsample == 1
            and 4 * num_pixels ** 2 <= params.max_cached_kernel_mib * 2 ** 20)


def _scales(bilateral, positional, valid, params: CRFParams, shape,
            cached: Optional[jax.Array] = None):
    """Per kernel, n_i^-1/2 with n_i = sum_j k(f_i, f_j) over valid j (symmetric
    normalisation; 0 on padding), or None for the un-normalised sum."""
    if params.normalization == "none":
        return None
    ones = valid[:, None]
    appearance = (cached @ ones if cached is not None
                  else _appearance_sums(bilateral, ones, params, shape))
    smoothness = _smoothness_sums(positional, ones, params, shape)
    return tuple(ones * jax.lax.rsqrt(sums + 1e-20) for sums in (appearance, smoothness))


def _message(bilateral, positional, q, valid, scales, params: CRFParams,
             shape: tuple[int, int], cached: Optional[jax.Array] = None) -> jax.Array:
    """The pairwise message for one image: [N, d] features, [N, K] Q, [N] valid; `cached`:
    the exact appearance kernel [N, N] (or None: summed as `params.downsample` says)."""
    q = q * valid[:, None]
    if cached is not None:
        appearance = cached @ (q if scales is None else q * scales[0])
    else:
        appearance = _appearance_sums(bilateral, q if scales is None else q * scales[0],
                                      params, shape)
    smoothness = _smoothness_sums(positional, q if scales is None else q * scales[1],
                                  params, shape)
    if scales is None:  # the paper's sum over j != i: k(f_i, f_i) = 1 removed
        message = (params.bilateral_weight * (appearance - q)
                   + params.gaussian_weight * (smoothness - q))
    else:  # densecrf's NORMALIZE_SYMMETRIC: n_i^-1/2 sum_j k_ij n_j^-1/2 Q_j, j = i included
        message = (params.bilateral_weight * scales[0] * appearance
                   + params.gaussian_weight * scales[1] * smoothness)
    return message * valid[:, None]


def _dense_rows(rows_features, cols_features, cols_q, chunk) -> jax.Array:
    """sum_j exp(-|f_i - g_j|^2 / 2) q_j for every row i, `chunk` rows at a time."""
    total = rows_features.shape[0]
    padded = -(-total // chunk) * chunk
    features = jnp.pad(rows_features, ((0, padded - total), (0, 0)))

    def rows_message(start):
        block = jax.lax.dynamic_slice_in_dim(features, start, chunk)
        return _kernel(block, cols_features) @ cols_q

    message = jax.lax.map(rows_message, jnp.arange(0, padded, chunk))
    return message.reshape(padded, -1)[:total]


def _gaussian_filter(x: jax.Array, std: float) -> jax.Array:
    """sum_j exp(-|p_i - p_j|^2 / 2 std^2) x_j over an [H, W, K] map, zeros outside it:
    separable, truncated at 4 std."""
    radius = max(1, int(math.ceil(4.0 * std)))
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    taps = jnp.exp(-0.5 * (offsets / std) ** 2)
    for axis in (0, 1):
        padded = jnp.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(3)])
        x = sum(taps[k] * jax.lax.slice_in_dim(padded, k, k + x.shape[axis], axis=axis)
                for k in range(2 * radius + 1))
    return x


def mean_field(probabilities: jax.Array, images: jax.Array,
               valid: Optional[jax.Array] = None, params: CRFParams = DEFAULTS) -> jax.Array:
    """Mean-field marginals of the dense CRF (module docstring).

    Args:
      probabilities: float [B, H, W, K], the network's softmax.
      images: [B, H, W, 3] pixels in [0, 255] (the ones the network saw).
      valid: bool [B, H, W], False for padding (default: all valid).
      params: the kernels and iterations.

    Returns:
      float32 [B, H, W, K]: Q after `params.iterations` updates (Q = P where not valid).
    """
    batch, height, width, classes = probabilities.shape
    if valid is None:
        valid = jnp.ones((batch, height, width), bool)
    params = dataclasses.replace(params, chunk=max(1, min(params.chunk, height * width)))
    bilateral, positional = _features(images, params)
    unary = jnp.log(jnp.clip(probabilities.astype(jnp.float32), EPSILON, 1.0)).reshape(
        batch, height * width, classes)
    mask = valid.reshape(batch, height * width).astype(jnp.float32)
    shape = (height, width)
    cache = caches_kernel(height * width, params)

    def one_image(inputs):
        bilateral, positional, unary, mask = inputs
        # The exact appearance kernel once, where it fits: each iteration is one product.
        cached = _kernel(bilateral, bilateral) if cache else None
        scales = _scales(bilateral, positional, mask, params, shape, cached)

        def update(q, _):
            message = _message(bilateral, positional, q, mask, scales, params, shape, cached)
            return jax.nn.softmax(unary + message, axis=-1), None

        q, _ = jax.lax.scan(update, jax.nn.softmax(unary, axis=-1), None,
                            length=params.iterations)
        return jnp.where(mask[:, None] > 0, q, jax.nn.softmax(unary, axis=-1))

    q = jax.lax.map(one_image, (bilateral, positional, unary, mask))
    return q.reshape(batch, height, width, classes)


def energy(labels: jax.Array, probabilities: jax.Array, images: jax.Array,
           params: CRFParams = DEFAULTS) -> jax.Array:
    """E(x) of labelings [B, H, W] (module docstring), every pair counted once; exact (N^2)."""
    batch, height, width, classes = probabilities.shape
    bilateral, positional = _features(images, params)
    unary = -jnp.log(jnp.clip(probabilities.astype(jnp.float32), EPSILON, 1.0)).reshape(
        batch, -1, classes)
    flat = labels.reshape(batch, -1)

    def normalised(kernel):  # as mean_field's messages see it (NORMALIZE_SYMMETRIC)
        if params.normalization == "none":
            return kernel
        scale = jax.lax.rsqrt(jnp.sum(kernel, axis=1) + 1e-20)
        return scale[:, None] * kernel * scale[None, :]

    def one(b, p, u, x):
        kernel = (params.bilateral_weight * normalised(_kernel(b, b))
                  + params.gaussian_weight * normalised(_kernel(p, p)))
        differ = (x[:, None] != x[None, :]).astype(jnp.float32)
        pairwise = 0.5 * jnp.sum(kernel * differ)  # i != j only: the diagonal has x_i = x_j
        return jnp.sum(jnp.take_along_axis(u, x[:, None], axis=1)) + pairwise

    return jax.vmap(one)(bilateral, positional, unary, flat)
