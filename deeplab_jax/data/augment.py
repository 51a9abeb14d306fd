"""On-device DeepLabv3 training augmentation: random scale, pad, crop, flip.

This module owns the training-time geometric augmentation of DeepLabv3
(Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image
Segmentation", Sec. 4: "randomly scale the input images (from 0.5 to 2.0)
and randomly left-right flip"), following the official TF implementation
`research/deeplab/input_preprocess.py`:

1. scale ~ uniform over {min, min + step, ..., max} (`get_random_scale`),
2. resize to int(size * scale) with align_corners=True, bilinear for the
   image and nearest neighbour for the label (`randomly_scale_image_and_label`),
3. pad bottom/right to at least the crop size with the mean pixel / the
   ignore label (`pad_to_bounding_box`),
4. random crop of `crop_size` (`preprocess_utils.random_crop`),
5. random left-right flip with probability 0.5 (`flip_dim`).

The official code runs these steps one after another with data-dependent
shapes. Here they are fused into ONE inverse warp with static shapes so the
whole thing can run inside a jitted training step: each example arrives on a
fixed canvas [Hc, Wc] with its true size (h, w) stored at the top-left, and
for every output pixel we compute where it comes from in the original.
The host-side `pad_to_canvas` puts examples onto such a canvas.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deeplab_jax import errors


def sample_scale(rng: jax.Array, min_scale: float, max_scale: float,
                 step: float) -> jax.Array:
    """Draws one random scale factor, as the official `get_random_scale`.

    Args:
      rng: PRNG key.
      min_scale, max_scale: range of scales (inclusive).
      step: spacing of the discrete scale set; 0 means continuous uniform.

    Returns:
      float32 scalar in [min_scale, max_scale]; with step > 0 it lies in
      {min_scale, min_scale + step, ..., max_scale}, each equally likely.
    """
    if min_scale > max_scale:
        # From config.data (training/step.py): the user's to fix.
        raise errors.ConfigError(
            f"config.data.min_scale={min_scale} > config.data.max_scale={max_scale}: set "
            "min_scale <= max_scale, e.g. --config.data.min_scale=0.5 "
            "--config.data.max_scale=2.0 (equal values: no random scaling).")
    if min_scale == max_scale:
        return jnp.asarray(min_scale, jnp.float32)
    if step == 0:
        return jax.random.uniform(rng, (), jnp.float32, min_scale, max_scale)
    # Official: num_steps = int((max - min) / step + 1), then a shuffled
    # lin_space; taking the first element of a shuffle = uniform choice.
    num_steps = int((max_scale - min_scale) / step + 1)
    scales = jnp.linspace(min_scale, max_scale, num_steps, dtype=jnp.float32)
    return scales[jax.random.randint(rng, (), 0, num_steps)]


def _source_coords(pos: jax.Array, in_size: jax.Array,
                   out_size: jax.Array) -> jax.Array:
    """Align-corners source coordinate: pos * (in - 1) / (out - 1).

    Args:
      pos: int32 [n] positions in the resized image.
      in_size, out_size: int32 scalars (original / resized length).

    Returns:
      float32 [n] continuous coordinates in the original image.
    """
    # TF's align_corners scale is (in - 1) / (out - 1); out == 1 maps to 0.
    ratio = jnp.where(
        out_size > 1,
        (in_size - 1).astype(jnp.float32)
        / jnp.maximum(out_size - 1, 1).astype(jnp.float32),
        0.0)
    return pos.astype(jnp.float32) * ratio


def random_scale_crop_flip(
    rng: jax.Array, image: jax.Array, label: jax.Array, size: jax.Array, *,
    crop_size: tuple[int, int], min_scale: float = 0.5, max_scale: float = 2.0,
    scale_step: float = 0.25, flip: bool = True, pad_pixel: float = 127.5,
    ignore_label: int = 255,
) -> tuple[jax.Array, jax.Array]:
    """Augments one example with a single fused scale/pad/crop/flip warp.

    Args:
      rng: PRNG key for this example.
      image: uint8 or float [Hc, Wc, 3] canvas; the example is image[:h, :w].
      label: integer [Hc, Wc] canvas; the example is label[:h, :w].
      size: int32 [2] true size (h, w), 1 <= h <= Hc, 1 <= w <= Wc.
      crop_size: static (crop_h, crop_w) of the output.
      min_scale, max_scale, scale_step: see `sample_scale`.
      flip: whether to randomly left-right flip (probability 0.5).
      pad_pixel: image value where the crop extends past the scaled image
        (the official code pads with the dataset mean pixel).
      ignore_label: label value for those padded pixels.

    Returns:
      image float32 [crop_h, crop_w, 3], label int32 [crop_h, crop_w].
    """
    crop_h, crop_w = crop_size
    k_scale, k_y, k_x, k_flip = jax.random.split(rng, 4)
    h = size[0].astype(jnp.int32)
    w = size[1].astype(jnp.int32)

    # Official: new_dim = tf.cast(float(dim) * scale, tf.int32), i.e. the
    # scaled size is truncated. Guard against 0 for tiny inputs.
    scale = sample_scale(k_scale, min_scale, max_scale, scale_step)
    h_s = jnp.maximum((h.astype(jnp.float32) * scale).astype(jnp.int32), 1)
    w_s = jnp.maximum((w.astype(jnp.float32) * scale).astype(jnp.int32), 1)

    # After padding to at least the crop size, the crop offset is uniform
    # over all valid positions (official `random_crop`).
    oy = jax.random.randint(k_y, (), 0, jnp.maximum(h_s, crop_h) - crop_h + 1)
    ox = jax.random.randint(k_x, (), 0, jnp.maximum(w_s, crop_w) - crop_w + 1)
    do_flip = jax.random.bernoulli(k_flip) if flip else jnp.asarray(False)

    # Position of every output pixel in the scaled, padded image. The flip is
    # applied last in the official pipeline, so it mirrors the crop window.
    cols = jnp.arange(crop_w, dtype=jnp.int32)
    py = oy + jnp.arange(crop_h, dtype=jnp.int32)                  # [ch]
    px = ox + jnp.where(do_flip, crop_w - 1 - cols, cols)          # [cw]
    inside = (py < h_s)[:, None] & (px < w_s)[None, :]             # [ch, cw]

    sy = _source_coords(py, h, h_s)                                # [ch]
    sx = _source_coords(px, w, w_s)                                # [cw]

    # Bilinear image sample. Clamping to the true size (not the canvas)
    # guarantees canvas padding is never read.
    img = image.astype(jnp.float32)
    y0f, x0f = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0f)[:, None, None], (sx - x0f)[None, :, None]
    y0 = jnp.clip(y0f.astype(jnp.int32), 0, h - 1)
    x0 = jnp.clip(x0f.astype(jnp.int32), 0, w - 1)
    y1 = jnp.minimum(y0 + 1, h - 1)
    x1 = jnp.minimum(x0 + 1, w - 1)

    def gather(ys: jax.Array, xs: jax.Array) -> jax.Array:
        return img[ys[:, None], xs[None, :]]                       # [ch, cw, 3]

    top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
    out_image = top * (1.0 - wy) + bottom * wy
    out_image = jnp.where(inside[..., None], out_image,
                          jnp.asarray(pad_pixel, jnp.float32))

    # Nearest-neighbour label: round half away from zero (coords are >= 0).
    ny = jnp.clip(jnp.floor(sy + 0.5).astype(jnp.int32), 0, h - 1)
    nx = jnp.clip(jnp.floor(sx + 0.5).astype(jnp.int32), 0, w - 1)
    out_label = label.astype(jnp.int32)[ny[:, None], nx[None, :]]
    out_label = jnp.where(inside, out_label, jnp.int32(ignore_label))
    return out_image, out_label


def augment_batch(rng: jax.Array, images: jax.Array, labels: jax.Array,
                  sizes: jax.Array, **kwargs) -> tuple[jax.Array, jax.Array]:
    """`random_scale_crop_flip` over a batch, independent draws per example.

    Args:
      rng: PRNG key; split into one key per example.
      images: uint8 or float [B, Hc, Wc, 3] canvases.
      labels: integer [B, Hc, Wc] canvases.
      sizes: int32 [B, 2] true (h, w) of each example.
      **kwargs: static keyword arguments of `random_scale_crop_flip`
        (crop_size is required).

    Returns:
      images float32 [B, crop_h, crop_w, 3], labels int32 [B, crop_h, crop_w].
    """
    keys = jax.random.split(rng, images.shape[0])
    fn = lambda k, im, lb, sz: random_scale_crop_flip(k, im, lb, sz, **kwargs)
    return jax.vmap(fn)(keys, images, labels, sizes)


def pad_to_canvas(image: np.ndarray, label: np.ndarray,
                  canvas_hw: tuple[int, int], *, fill_pixel: int = 0,
                  ignore_label: int = 255,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host side: places one example at the top-left of a fixed canvas.

    The canvas padding is never sampled by `random_scale_crop_flip`, so its
    fill values only matter for readability (hence a uint8 0 for the image).

    Args:
      image: uint8 [h, w, 3] image.
      label: integer [h, w] label, values 0..255 (kept as uint8).
      canvas_hw: (Hc, Wc) canvas size.
      fill_pixel: image value of the canvas padding.
      ignore_label: label value of the canvas padding.

    Returns:
      image uint8 [Hc, Wc, 3], label uint8 [Hc, Wc], size int32 [2] = (h, w).

    Raises:
      ValueError: image and label sizes differ, the example is empty or does not fit, or
        a dtype or value would not survive the uint8 canvas unchanged (never a silent cast).
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image shape {image.shape}: expected [height, width, 3] RGB")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype {image.dtype}: expected uint8 pixels 0..255")
    if label.ndim != 2:
        raise ValueError(f"label shape {label.shape}: expected [height, width]")
    if label.dtype.kind not in "ui":
        raise ValueError(f"label dtype {label.dtype}: expected integer class indices")
    if label.dtype != np.uint8 and label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values {label.min()}..{label.max()} do not fit uint8 "
                         "(class indices and the ignore label 255)")
    h, w = image.shape[:2]
    hc, wc = canvas_hw
    if label.shape[:2] != (h, w):
        raise ValueError(f"image size {(h, w)} != label size "
                         f"{tuple(label.shape[:2])}")
    if h < 1 or w < 1:
        raise ValueError(f"empty example of size {(h, w)}")
    if h > hc or w > wc:
        raise errors.ConfigError(
            f"example size {(h, w)} does not fit in canvas {(hc, wc)}: set "
            f"--config.data.canvas_size='({max(h, hc)}, {max(w, wc)})' or larger (python -m "
            "deeplab_jax.data.check suggests one for the whole dataset), or shrink the data "
            "(config.data.image_scale)")
    image_c = np.full((hc, wc, image.shape[2]), fill_pixel, np.uint8)
    label_c = np.full((hc, wc), ignore_label, np.uint8)
    image_c[:h, :w] = image
    label_c[:h, :w] = label
    return image_c, label_c, np.array([h, w], np.int32)
