"""Property tests for deeplab_jax.data.augment (on-device scale/crop/flip)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax.data.augment import (augment_batch, pad_to_canvas,
                                      random_scale_crop_flip, sample_scale)

H, W = 16, 20          # true example size
CANVAS = (24, 28)      # fixed canvas, larger than the example
CANVAS_LABEL = 7       # label of canvas padding: must never be sampled
CANVAS_PIXEL = 201     # colour of canvas padding


def _jit(fn, **kwargs):
    """jit with static keyword arguments (eager op-by-op dispatch is slow)."""
    return jax.jit(functools.partial(fn, **kwargs))


def _blocks(block: int = 4, seed: int = 0):
    """Piecewise-constant example: colour = table[label], blocks `block` wide.

    Returns image uint8 [H, W, 3], label uint8 [H, W], table float [256, 3].
    """
    r = np.random.default_rng(seed)
    nby, nbx = -(-H // block), -(-W // block)
    # Distinct labels per block, avoiding CANVAS_LABEL and 255.
    ids = np.array([v for v in range(1, 60) if v != CANVAS_LABEL])
    block_labels = r.permutation(ids)[:nby * nbx].reshape(nby, nbx)
    yy, xx = np.meshgrid(np.arange(H) // block, np.arange(W) // block,
                         indexing="ij")
    label = block_labels[yy, xx].astype(np.uint8)
    table = r.integers(0, 200, (256, 3)).astype(np.float64)
    image = table[label].astype(np.uint8)
    return image, label, table


def _canvas(image, label):
    im, lb, size = pad_to_canvas(image, label, CANVAS,
                                 fill_pixel=CANVAS_PIXEL,
                                 ignore_label=CANVAS_LABEL)
    return jnp.asarray(im), jnp.asarray(lb), jnp.asarray(size)


def _batch(image, label, n):
    im, lb, size = _canvas(image, label)
    rep = lambda a: jnp.broadcast_to(a, (n,) + a.shape)
    return rep(im), rep(lb), rep(size)


def test_identity():
    image, label, _ = _blocks()
    image = np.random.default_rng(1).integers(0, 256, image.shape, np.uint8)
    im, lb, size = _canvas(image, label)
    out_im, out_lb = _jit(random_scale_crop_flip, crop_size=(H, W),
                          min_scale=1.0, max_scale=1.0, flip=False)(
        jax.random.PRNGKey(0), im, lb, size)
    assert out_im.dtype == jnp.float32 and out_lb.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out_im), image.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(out_lb), label.astype(np.int32))


def test_image_label_alignment_random_scales_and_flips():
    image, label, table = _blocks()
    n = 16
    ims, lbs, sizes = _batch(image, label, n)
    aug = _jit(augment_batch, crop_size=(24, 24))
    checked = 0
    for seed in range(8):
        out_im, out_lb = map(np.asarray, aug(jax.random.PRNGKey(seed),
                                             ims, lbs, sizes))
        assert not (out_lb == CANVAS_LABEL).any()
        for b in range(n):
            lb = out_lb[b]
            # Interior pixels whose whole 3x3 neighbourhood has one real label.
            centre = lb[1:-1, 1:-1]
            same = np.ones_like(centre, bool)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    same &= lb[1 + dy:lb.shape[0] - 1 + dy,
                               1 + dx:lb.shape[1] - 1 + dx] == centre
            same &= centre != 255
            got = out_im[b, 1:-1, 1:-1][same]
            want = table[centre[same]]
            np.testing.assert_allclose(got, want, atol=1e-4)
            checked += same.sum()
    assert checked > 1000


def test_flip_happens_and_mirrors():
    image, label, _ = _blocks()
    ims, lbs, sizes = _batch(image, label, 32)
    aug = _jit(augment_batch, crop_size=(H, W), min_scale=1.0, max_scale=1.0)
    out_im, out_lb = map(np.asarray, aug(jax.random.PRNGKey(3), ims, lbs,
                                         sizes))
    flipped = []
    for im, lb in zip(out_im, out_lb):
        if np.array_equal(lb, label) and np.array_equal(im, image):
            flipped.append(False)
        elif (np.array_equal(lb, label[:, ::-1])
              and np.array_equal(im, image[:, ::-1])):
            flipped.append(True)
        else:
            pytest.fail("output is neither the input nor its mirror")
    assert any(flipped) and not all(flipped)


def test_padding_and_canvas_never_sampled():
    r = np.random.default_rng(2)
    image = r.integers(0, 100, (10, 12, 3), np.uint8)
    label = r.integers(0, 5, (10, 12), np.uint8)
    im, lb, size = pad_to_canvas(image, label, (16, 16), fill_pixel=255,
                                 ignore_label=CANVAS_LABEL)
    out_im, out_lb = map(np.asarray, _jit(
        random_scale_crop_flip, crop_size=(20, 20), min_scale=1.0,
        max_scale=1.0, flip=False, pad_pixel=127.5)(
            jax.random.PRNGKey(0), im, lb, size))
    np.testing.assert_array_equal(out_lb[:10, :12], label)
    np.testing.assert_array_equal(out_im[:10, :12], image)
    pad = np.ones((20, 20), bool)
    pad[:10, :12] = False
    assert (out_lb[pad] == 255).all()
    assert (out_im[pad] == 127.5).all()

    # Random scales and flips: canvas padding (label 7, colour 255 while the
    # example's colours are < 100) never leaks into the output.
    n = 32
    rep = lambda a: jnp.broadcast_to(jnp.asarray(a), (n,) + a.shape)
    out_im, out_lb = map(np.asarray, _jit(augment_batch, crop_size=(20, 20))(
        jax.random.PRNGKey(1), rep(im), rep(lb), rep(size)))
    assert not (out_lb == CANVAS_LABEL).any()
    assert ((out_im < 100) | (out_im == 127.5)).all()

    # Not even with zero weight: an inf in a float canvas would turn into NaN.
    im_f = np.asarray(im, np.float32)
    im_f[10:] = np.inf
    im_f[:, 12:] = np.inf
    out_im, _ = _jit(augment_batch, crop_size=(20, 20))(
        jax.random.PRNGKey(1), rep(im_f), rep(lb), rep(size))
    assert np.isfinite(np.asarray(out_im)).all()
    assert (out_lb == 255).any() and (out_lb < 5).any()


def test_scale_two_matches_numpy_nearest_align_corners():
    r = np.random.default_rng(4)
    label = r.integers(0, 21, (H, W), np.uint8)
    image = r.integers(0, 256, (H, W, 3), np.uint8)
    im, lb, size = _canvas(image, label)
    _, out_lb = _jit(random_scale_crop_flip, crop_size=(2 * H, 2 * W),
                     min_scale=2.0, max_scale=2.0, flip=False)(
        jax.random.PRNGKey(0), im, lb, size)
    # Independent reference: src = i * (in - 1) / (out - 1), round half up.
    ys = np.floor(np.arange(2 * H) * (H - 1) / (2 * H - 1) + 0.5).astype(int)
    xs = np.floor(np.arange(2 * W) * (W - 1) / (2 * W - 1) + 0.5).astype(int)
    np.testing.assert_array_equal(np.asarray(out_lb), label[np.ix_(ys, xs)])


def test_determinism_independence_and_jit():
    image, label, _ = _blocks()
    ims, lbs, sizes = _batch(image, label, 4)
    kw = dict(crop_size=(12, 12))
    aug = _jit(augment_batch, **kw)
    rng = jax.random.PRNGKey(5)
    a_im, a_lb = aug(rng, ims, lbs, sizes)
    b_im, b_lb = aug(rng, ims, lbs, sizes)
    e_im, e_lb = augment_batch(rng, ims, lbs, sizes, **kw)
    np.testing.assert_array_equal(np.asarray(a_im), np.asarray(b_im))
    np.testing.assert_array_equal(np.asarray(a_lb), np.asarray(b_lb))
    np.testing.assert_allclose(np.asarray(a_im), np.asarray(e_im), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(a_lb), np.asarray(e_lb))
    assert a_im.shape == (4, 12, 12, 3) and a_lb.shape == (4, 12, 12)

    # Identical inputs in one batch still get different crops.
    differ = 0
    for seed in range(10):
        _, lb = aug(jax.random.PRNGKey(seed), ims, lbs, sizes)
        lb = np.asarray(lb)
        differ += not np.array_equal(lb[0], lb[1])
    assert differ >= 8
    c_im, _ = aug(jax.random.PRNGKey(6), ims, lbs, sizes)
    assert not np.array_equal(np.asarray(a_im), np.asarray(c_im))


def test_sample_scale_support():
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    draws = np.asarray(jax.vmap(
        lambda k: sample_scale(k, 0.5, 2.0, 0.25))(keys))
    support = np.arange(0.5, 2.0 + 1e-6, 0.25)
    assert np.isin(draws, support).all()
    assert set(np.unique(draws)) == set(support)
    counts = np.array([(draws == s).sum() for s in support])
    assert counts.min() > 2000 / 7 * 0.7    # roughly uniform

    cont = np.asarray(jax.vmap(lambda k: sample_scale(k, 0.5, 2.0, 0.0))(keys))
    assert (cont >= 0.5).all() and (cont <= 2.0).all()
    assert len(np.unique(cont)) > 1000
    assert float(sample_scale(keys[0], 1.0, 1.0, 0.25)) == 1.0


def test_pad_to_canvas_errors():
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(8, 16\)"):
        pad_to_canvas(image, np.zeros((10, 12), np.uint8), (8, 16))
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(10, 11\)"):
        pad_to_canvas(image, np.zeros((10, 11), np.uint8), (16, 16))
    im, lb, size = pad_to_canvas(image, np.ones((10, 12), np.uint8), (16, 16))
    assert im.shape == (16, 16, 3) and im.dtype == np.uint8
    assert lb.shape == (16, 16) and (lb[10:] == 255).all()
    np.testing.assert_array_equal(size, [10, 12])
    assert size.dtype == np.int32
