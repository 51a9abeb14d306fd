"""Evaluation: padding never counts, image count checked, multi-scale/flip averaging."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax import parallel
from deeplab_jax.evaluation import evaluate, outputs
from deeplab_jax.data import input_pipeline
from deeplab_jax.models.deeplabv3 import DeepLabV3
from random_source import NUM_CLASSES, RandomSource



@pytest.fixture(scope="module")
def model_and_variables():
    model = DeepLabV3(num_classes=NUM_CLASSES, depth=14, width=4, multi_grid=(1,),
                      aspp_channels=8, output_stride=8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    return model, variables


def _run(model, variables, source, **kwargs):
    mesh = parallel.make_mesh()
    step = evaluate.make_eval_step(model, num_classes=NUM_CLASSES, ignore_label=255,
                                   scales=(1.0,), flip=False)
    batches = input_pipeline.eval_batches(source, global_batch_size=8, canvas_size=(16, 16))
    return evaluate.evaluate(step, variables, batches,
                             to_device=functools.partial(parallel.to_global_batch, mesh=mesh),
                             num_classes=NUM_CLASSES, class_names=source.class_names, **kwargs)


def test_confusion_matrix_over_the_split_matches_numpy(model_and_variables):
    model, variables = model_and_variables
    source = RandomSource(11)  # 11 examples, batches of 8: the second batch is 5/8 padding
    results, pictures = _run(model, variables, source, expected_num_images=11,
                             num_visualizations=3)
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for example in source.examples:
        height, width = example["label"].shape
        canvas = np.full((1, 16, 16, 3), 127.5, np.float32)  # mean-pixel padding
        canvas[0, :height, :width] = example["image"]
        logits = model.apply(variables, jnp.asarray(canvas), train=False)
        prediction = np.asarray(jnp.argmax(logits, -1))[0, :height, :width]
        valid = example["label"] != 255
        np.add.at(expected, (example["label"][valid], prediction[valid]), 1)
    assert results["num_images"] == 11
    assert results["num_pixels"] == expected.sum()
    diagonal = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - diagonal
    np.testing.assert_allclose(results["miou"], np.mean(diagonal / union), rtol=1e-9)
    assert pictures["image"].shape == (3, 16, 16, 3)


def test_wrong_image_count_is_an_error(model_and_variables):
    model, variables = model_and_variables
    with pytest.raises(RuntimeError, match="saw 11 images but the split has 12"):
        _run(model, variables, RandomSource(11), expected_num_images=12)


def test_single_scale_without_flip_is_plain_softmax(model_and_variables):
    model, variables = model_and_variables
    images = jax.random.uniform(jax.random.key(3), (2, 17, 21, 3), maxval=255.0)
    probabilities = evaluate.predict_probabilities(model, variables, images)
    expected = jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # about 6 s idle
def test_flip_averaging_is_flip_invariant(model_and_variables):
    model, variables = model_and_variables
    images = jax.random.uniform(jax.random.key(4), (1, 17, 21, 3), maxval=255.0)
    kwargs = dict(scales=(0.75, 1.0, 1.25), flip=True)
    a = evaluate.predict_probabilities(model, variables, images, **kwargs)
    b = evaluate.predict_probabilities(model, variables, images[:, :, ::-1], **kwargs)
    np.testing.assert_allclose(a, b[:, :, ::-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    assert a.shape == (1, 17, 21, NUM_CLASSES)


def test_each_inference_setting_gets_its_own_file(tmp_path):
    names = {outputs.evaluation_name("val", 12, output_stride=os_, scales=scales, flip=flip)
             for os_ in (8, 16) for scales in ((1.0,), (0.5, 1.0, 1.75)) for flip in (0, 1)}
    assert len(names) == 8
    assert outputs.evaluation_name("val", 12, output_stride=16, scales=(1.0,),
                                    flip=False) == "val_step00000012_os16"
    assert outputs.evaluation_name("val", 12, output_stride=8, scales=(0.5, 1.0, 1.75),
                                    flip=True) == "val_step00000012_os8_ms0.5-1-1.75_flip"
    # The exact CRF and its grid approximation are two settings, two files.
    assert [outputs.evaluation_name("val", 12, output_stride=16, scales=(1.0,), flip=False,
                                    crf=True, crf_downsample=grid) for grid in (1, 4)] == [
        "val_step00000012_os16_crf", "val_step00000012_os16_crf_grid4"]
    path = outputs.write_metrics_json(str(tmp_path), "val_step00000012_os16",
                                       {"step": 12, "miou": 0.5})
    assert path == str(tmp_path / "eval" / "val_step00000012_os16.json")
    import json
    assert json.load(open(path)) == {"step": 12, "miou": 0.5}
    assert os.listdir(tmp_path / "eval") == ["val_step00000012_os16.json"]  # no temporary left
