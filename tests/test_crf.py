"""The dense CRF: mean field against a naive numpy reference, the fast approximation's error,
the energy it lowers, padding that takes no part, and the CRF inside evaluation."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import train
from deeplab_jax.evaluation import crf

# The fast path (a stride-2 grid) against the exact sum: the tolerance this file tests.
APPROXIMATION_TOLERANCE = {"mean": 0.01, "max": 0.08}


def _scene(height=12, width=16, classes=3, seed=0):
    """Two regions of different colours; noisy unaries that are right 60-70% of the time."""
    rng = np.random.default_rng(seed)
    images = np.zeros((1, height, width, 3), np.float32)
    images[0, :, width // 2:] = 200.0
    images += rng.normal(0, 4, images.shape)
    truth = np.broadcast_to((np.arange(width) >= width // 2).astype(int), (height, width))
    logits = 1.5 * np.eye(classes)[truth] + rng.normal(0, 1.2, (height, width, classes))
    return jnp.asarray(images), jax.nn.softmax(jnp.asarray(logits)[None], -1), truth


def _numpy_mean_field(probabilities, images, params):
    """Krähenbühl and Koltun's Algorithm 1 with Potts, one pixel pair at a time; each kernel
    normalised as densecrf's NORMALIZE_SYMMETRIC (j = i included), or not at all (j != i)."""
    _, height, width, classes = probabilities.shape
    n = height * width
    positions = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"),
                         -1).reshape(n, 2).astype(np.float64)
    colours = np.asarray(images, np.float64).reshape(n, 3)
    appearance, smoothness = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dp = np.sum((positions[i] - positions[j]) ** 2)
            dc = np.sum((colours[i] - colours[j]) ** 2)
            appearance[i, j] = np.exp(-dp / (2 * params.bilateral_xy_std ** 2)
                                      - dc / (2 * params.bilateral_rgb_std ** 2))
            smoothness[i, j] = np.exp(-dp / (2 * params.gaussian_xy_std ** 2))
    kernel = np.zeros((n, n))
    for weight, k in ((params.bilateral_weight, appearance), (params.gaussian_weight, smoothness)):
        if params.normalization == "symmetric":
            scale = 1 / np.sqrt(k.sum(1))
            kernel += weight * scale[:, None] * k * scale[None, :]
        else:
            kernel += weight * (k - np.eye(n))
    unary = np.log(np.clip(np.asarray(probabilities, np.float64).reshape(n, classes), 1e-8, 1))
    q = np.exp(unary) / np.exp(unary).sum(-1, keepdims=True)
    for _ in range(params.iterations):
        # Potts: the pairwise energy of label l is sum_{l' != l} message_l', which is
        # sum_l' message_l' - message_l: a constant per pixel minus message_l.
        logits = unary + kernel @ q
        q = np.exp(logits - logits.max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
    return q.reshape(height, width, classes)


@pytest.mark.parametrize("cached", [True, False], ids=["kernel_kept", "kernel_in_chunks"])
@pytest.mark.parametrize("normalization", crf.NORMALIZATIONS)
def test_mean_field_equals_the_naive_reference(normalization, cached):
    images, probabilities, _ = _scene()
    params = crf.CRFParams(iterations=5, bilateral_xy_std=6.0, bilateral_rgb_std=10.0,
                           gaussian_xy_std=2.0, normalization=normalization,
                           chunk=50,  # several chunks, one ragged
                           max_cached_kernel_mib=1 if cached else 0)
    assert crf.caches_kernel(12 * 16, params) == cached
    ours = np.asarray(crf.mean_field(probabilities, images, params=params))[0]
    np.testing.assert_allclose(ours, _numpy_mean_field(probabilities, images[0], params),
                               atol=2e-5)


def test_an_unknown_normalization_is_refused_naming_the_config_field():
    with pytest.raises(ValueError, match="config.eval.crf.normalization"):
        crf.CRFParams(normalization="batch")


def test_the_fast_approximation_is_within_its_stated_tolerance():
    images, probabilities, _ = _scene(32, 40)
    exact_params = crf.CRFParams(iterations=3, bilateral_weight=1.0, bilateral_xy_std=10.0,
                                 bilateral_rgb_std=30.0, gaussian_weight=1.0,
                                 gaussian_xy_std=4.0)
    exact = crf.mean_field(probabilities, images, params=exact_params)
    fast = crf.mean_field(probabilities, images,
                          params=crf.CRFParams(**{**exact_params.__dict__, "downsample": 2}))
    error = np.abs(np.asarray(fast) - np.asarray(exact))
    assert error.mean() < APPROXIMATION_TOLERANCE["mean"], error.mean()
    assert error.max() < APPROXIMATION_TOLERANCE["max"], error.max()


def test_mean_field_lowers_the_energy_and_fixes_the_noise():
    images, probabilities, truth = _scene(16, 20)
    params = crf.CRFParams(bilateral_xy_std=20.0, bilateral_rgb_std=10.0)
    before = jnp.argmax(probabilities, -1)
    after = jnp.argmax(crf.mean_field(probabilities, images, params=params), -1)
    energies = crf.energy(jnp.stack([before[0], after[0]]),
                          jnp.concatenate([probabilities] * 2), jnp.concatenate([images] * 2),
                          params)
    assert float(energies[1]) < float(energies[0])
    assert (np.asarray(after[0]) == truth).mean() > (np.asarray(before[0]) == truth).mean()


def test_padding_takes_no_part():
    """A canvas with padding gives the image's pixels exactly what the image alone gives."""
    images, probabilities, _ = _scene(10, 12)
    params = crf.CRFParams(iterations=4, bilateral_xy_std=5.0, bilateral_rgb_std=20.0)
    alone = crf.mean_field(probabilities, images, params=params)
    canvas_images = jnp.pad(images, ((0, 0), (0, 5), (0, 3), (0, 0)), constant_values=90.0)
    canvas_probabilities = jnp.pad(probabilities, ((0, 0), (0, 5), (0, 3), (0, 0)),
                                   constant_values=1 / 3)
    valid = jnp.zeros((1, 15, 15), bool).at[:, :10, :12].set(True)
    padded = crf.mean_field(canvas_probabilities, canvas_images, valid, params)
    np.testing.assert_allclose(np.asarray(padded)[:, :10, :12], np.asarray(alone), atol=1e-5)
    np.testing.assert_allclose(np.asarray(padded)[:, 10:], np.asarray(canvas_probabilities)[:, 10:],
                               atol=1e-6)


@pytest.mark.slow  # trains, then evaluates with the CRF (about 17 s idle)
def test_evaluation_with_the_crf_writes_its_own_results(tmp_path):
    config = tiny.get_config()
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    config.eval.crf.update(enabled=True, iterations=2, bilateral_xy_std=10.0,
                           gaussian_xy_std=1.0)
    results = train.evaluate_checkpoint(config, workdir)
    assert results["crf"] is True
    saved = json.load(open(os.path.join(workdir, "eval", "val_step00000002_os8_crf.json")))
    assert saved["miou"] == results["miou"] and saved["num_images"] == 10
    assert os.path.exists(os.path.join(workdir, "eval", "val_step00000002_os8.json"))


CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")


def _camvid_val(height, width, seed=0):
    """A real road scene (CamVid val, from ../shared) at height x width, with unaries from its
    labels and noise: softmax(2 onehot + 1.5 N(0, 1)), many pixels near a tie."""
    from PIL import Image
    image = Image.open(os.path.join(CAMVID, "val", "0016E5_07959.jpg")).convert("RGB")
    labels = np.asarray(Image.open(os.path.join(CAMVID, "valannot", "0016E5_07959.png")).resize(
        (width, height), Image.NEAREST))
    image = np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)
    rng = np.random.default_rng(seed)
    logits = 2.0 * np.eye(11)[np.minimum(labels, 10)] + 1.5 * rng.normal(size=(*labels.shape, 11))
    return jnp.asarray(image)[None], jax.nn.softmax(jnp.asarray(logits)[None], -1)


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")
def test_on_a_real_image_the_shipped_default_is_the_exact_mean_field():
    """configs/voc.py's CRF against the exact mean field on a CamVid image at 45x60, DeepLab
    v2's parameters scaled to the resolution: >= 99% equal labels (the issue's bar; it is the
    exact path, so all of them), and the kept kernel equals the one recomputed in chunks.
    The grid approximation is not that close on real images: the reason it is not the
    default (experiments/crf_agreement records 83-98% at 90x120 and 180x240)."""
    from configs import voc
    from deeplab_jax.evaluation import evaluate
    images, probabilities = _camvid_val(45, 60)
    block = voc.get_config().eval.crf
    block.update(enabled=True, bilateral_xy_std=67.0 / 8, gaussian_xy_std=1.0 / 8)
    shipped = evaluate.crf_params(ml_collections.ConfigDict({"crf": block}))
    exact = crf.CRFParams(**{**shipped.__dict__, "downsample": 1})
    in_chunks = crf.CRFParams(**{**exact.__dict__, "max_cached_kernel_mib": 0, "chunk": 500})
    reference = np.asarray(crf.mean_field(probabilities, images, params=in_chunks))
    kept = np.asarray(crf.mean_field(probabilities, images, params=exact))
    # The same sums in another order: float32 rounding, amplified where colours are close.
    assert np.abs(kept - reference).mean() < 1e-5 and np.abs(kept - reference).max() < 2e-3
    labels = reference.argmax(-1)
    assert (kept.argmax(-1) == labels).mean() > 0.999
    default = np.asarray(crf.mean_field(probabilities, images, params=shipped))
    assert (default.argmax(-1) == labels).mean() >= 0.99
    grid = crf.CRFParams(**{**exact.__dict__, "downsample": 4})
    approximate = np.asarray(crf.mean_field(probabilities, images, params=grid)).argmax(-1)
    assert 0.5 < (approximate == labels).mean() < 0.99


def test_a_slow_exact_crf_on_cpu_says_so_and_names_the_faster_setting(caplog):
    """Traced only (jax.eval_shape): a 240x320 canvas does not keep its kernel, so the exact
    path would take minutes per image on CPU, and the log says how long and what to set;
    a 90x120 canvas keeps it and says nothing."""
    from deeplab_jax.evaluation import evaluate

    def trace(height, width, downsample):
        params = crf.CRFParams(downsample=downsample)
        probabilities = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        sizes = jnp.asarray([[height, width]], jnp.int32)
        caplog.clear()
        with caplog.at_level("WARNING"):
            jax.eval_shape(lambda p, i: evaluate.refine(p, i, sizes, params), probabilities,
                           images)
        return caplog.text

    assert jax.default_backend() == "cpu"
    text = trace(240, 320, 1)
    assert "minutes per image on CPU" in text and "--config.eval.crf.downsample=2" in text
    assert trace(90, 120, 1) == "" and trace(240, 320, 4) == ""
