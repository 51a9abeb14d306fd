"""Using a trained model: predict any image, folder or glob at full resolution; the export."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from deeplab_jax import train
from deeplab_jax.evaluation import evaluate
from deeplab_jax.inference import export, files, restore
from deeplab_jax.inference import predictor as predictor_lib
from deeplab_jax.data import palettes
from deeplab_jax.reporting import visualize
from deeplab_jax.data import datasets, image_io, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
    config = tiny.get_config()
    # lr 0: the checkpoint keeps its random initialisation, whose class maps vary from pixel
    # to pixel (two training steps at the tiny config's lr predict background everywhere,
    # which any wrong prediction code would match).
    config.optim.base_learning_rate = 0.0
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("predict") / "run")
    train.train_and_evaluate(_config(), workdir)
    restored = restore.restore_model(_config(), workdir)
    return workdir, restored


def _image(height, width, index=0):
    image, _ = synthetic.generate_example(7, index, size=max(height, width))
    return np.ascontiguousarray(image[:height, :width])


def _direct(restored, image, padded_shape, scales=(1.0,), flip=False):
    """The documented computation, spelled out: mean-pixel canvas, model, argmax, crop.

    Returns the class map and the gap between the two highest probabilities per pixel.
    """
    canvas = np.full((1, *padded_shape, 3), 127.5, np.float32)
    canvas[0, :image.shape[0], :image.shape[1]] = image
    probabilities = evaluate.predict_probabilities(restored.model, restored.variables,
                                                   jnp.asarray(canvas), scales=scales,
                                                   flip=flip)
    probabilities = np.asarray(probabilities)[0, :image.shape[0], :image.shape[1]]
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    return probabilities.argmax(-1), top2[..., 1] - top2[..., 0]


def _assert_same_labels(actual, expected, gap):
    """Equal, except possibly at near-ties, where float rounding may pick the other class."""
    assert actual.shape == expected.shape
    differ = actual != expected
    assert differ.mean() < 0.01, f"{differ.sum()} of {differ.size} pixels differ"
    assert np.all(gap[differ] < 1e-4), "pixels differ where the model is not near a tie"


def test_files_predicted_at_their_own_size_equal_the_model_on_the_image(run, tmp_path):
    workdir, restored = run
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgb = _image(37, 53)
    Image.fromarray(rgb).convert("L").save(inputs / "gray.png")  # 37 x 53, greyscale
    rgba = np.concatenate([_image(20, 31, 1), np.full((20, 31, 1), 9, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(inputs / "rgba.png")  # 20 x 31, alpha dropped
    records = files.predict(_config(), workdir, str(inputs), str(tmp_path / "out"),
                              progress=False)
    assert [r["name"] for r in records] == ["gray", "rgba"]

    gray = np.asarray(Image.open(inputs / "gray.png"))
    cases = {"gray": (np.repeat(gray[..., None], 3, -1), (65, 65)),
             "rgba": (rgba[..., :3], (33, 33))}
    for name, (image, padded_shape) in cases.items():
        np.testing.assert_array_equal(image_io.load_image(str(inputs / f"{name}.png")), image)
        labels = visualize.load_indexed_png(str(tmp_path / "out" / f"{name}.png"))
        assert labels.shape == image.shape[:2]
        expected, gap = _direct(restored, image, padded_shape)
        assert len(np.unique(expected)) > 1  # a class map that can tell code apart
        _assert_same_labels(labels, expected, gap)
        color = np.asarray(Image.open(tmp_path / "out" / f"{name}_color.png").convert("RGB"))
        np.testing.assert_array_equal(color, restored.palette[labels])
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{name}_overlay.png"))
        assert overlay.shape[0] >= image.shape[0] and overlay.shape[1] > image.shape[1]


def test_padding_is_the_mean_pixel_not_zero(run):
    _, restored = run
    image = _image(20, 31, 2)
    labels = predictor_lib.Predictor.from_restored(restored).predict([image])[0]
    canvas = np.zeros((1, 33, 33, 3), np.uint8)
    canvas[0, :20, :31] = image
    zero_padded = np.asarray(jnp.argmax(restored.model.apply(
        restored.variables, jnp.asarray(canvas), train=False), -1))[0, :20, :31]
    expected, gap = _direct(restored, image, (33, 33))
    _assert_same_labels(labels, expected, gap)
    assert np.any(zero_padded != expected)  # the test could tell the two paddings apart


@pytest.mark.slow  # about 5 s idle
def test_multi_scale_and_flip_go_through_predict_probabilities(run):
    _, restored = run
    image = _image(37, 53, 3)
    predictor = predictor_lib.Predictor(restored.model, restored.variables, scales=(0.5, 1.0),
                                  flip=True)
    expected, gap = _direct(restored, image, (65, 65), scales=(0.5, 1.0), flip=True)
    _assert_same_labels(predictor.predict([image])[0], expected, gap)


def test_one_compilation_per_padded_size_and_batches_keep_the_order(run):
    _, restored = run
    predictor = predictor_lib.Predictor.from_restored(restored, batch_size=2)
    images = [_image(20, 31, 4), _image(37, 53, 5), _image(33, 17, 6), _image(25, 30, 7),
              _image(9, 12, 8)]
    labels = predictor.predict(images)
    assert [l.shape for l in labels] == [image.shape[:2] for image in images]
    assert predictor._fn._cache_size() == 2  # 33x33 (4 images, 2 batches) and 65x65
    for image, label in zip(images, labels):
        alone = predictor_lib.Predictor.from_restored(restored, batch_size=1).predict([image])[0]
        expected, gap = _direct(restored, image, predictor.padded_shape(*image.shape[:2]))
        _assert_same_labels(label, expected, gap)
        _assert_same_labels(alone, expected, gap)


def test_the_training_run_wrote_the_evaluation_report(run):
    workdir, _ = run  # tiny: 2 steps, evaluated at step 2
    names = set(os.listdir(os.path.join(workdir, "eval")))
    assert {"val_step00000002_os8.json", "val_step00000002_os8_confusion.png",
            "val_step00000002_os8_iou.png", "val_step00000002_os8_best_worst.png"} <= names


def test_bucket_sizes():
    assert [predictor_lib.bucket_size(s) for s in (1, 20, 33, 34, 53, 65, 66, 513)] == [
        33, 33, 33, 65, 65, 65, 97, 513]


def test_indexed_png_decodes_to_the_same_indices(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, (23, 41)).astype(np.uint8)
    image = np.random.default_rng(1).integers(0, 256, (23, 41, 3)).astype(np.uint8)
    palette = palettes.voc_palette()
    paths = files.write_prediction(str(tmp_path), "x", image, labels,
                                     synthetic.CLASS_NAMES, palette)
    assert Image.open(paths["label"]).mode == "P"
    np.testing.assert_array_equal(visualize.load_indexed_png(paths["label"]), labels)


def test_legend_lists_the_classes_present_in_their_colours():
    palette = palettes.palette_from_colors([(0, 0, 0), (250, 0, 0), (0, 0, 250)])
    image = np.full((60, 80, 3), 200, np.uint8)
    with_two = files.add_legend(image, [0, 2], ("bg", "red", "blue"), palette)
    np.testing.assert_array_equal(with_two[:60, :80], image)
    legend = with_two[:, 80:].reshape(-1, 3)
    colours = {tuple(c) for c in legend}
    assert (0, 0, 250) in colours and (250, 0, 0) not in colours
    with_one = files.add_legend(image, [0], ("bg", "red", "blue"), palette)
    assert (250, 0, 0) not in {tuple(c) for c in with_one[:, 80:].reshape(-1, 3)}


def _write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.fromarray(_image(20 + index, 25, index)).save(folder / name)


def test_folder_and_glob_inputs(run, tmp_path):
    workdir, _ = run
    _write_images(tmp_path / "photos", ["a.png", "b.jpg", "c.PNG"])
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    _write_images(tmp_path / "photos" / "sub", ["d.png"])
    folder = files.predict(_config(), workdir, str(tmp_path / "photos"),
                             str(tmp_path / "out_folder"), progress=False)
    assert [r["name"] for r in folder] == ["a", "b", "c"]  # not recursive, images only
    assert sorted(os.listdir(tmp_path / "out_folder")) == sorted(
        f"{n}{s}" for n in "abc" for s in (".png", "_color.png", "_overlay.png"))
    pattern = str(tmp_path / "photos" / "**" / "*.png")
    matched = files.predict(_config(), workdir, pattern, str(tmp_path / "out_glob"),
                              progress=False)
    assert sorted(r["name"] for r in matched) == ["a", "d"]
    np.testing.assert_array_equal(
        visualize.load_indexed_png(str(tmp_path / "out_glob" / "a.png")),
        visualize.load_indexed_png(str(tmp_path / "out_folder" / "a.png")))


def test_unreadable_file_is_named(run, tmp_path):
    workdir, _ = run
    _write_images(tmp_path / "in", ["good.png"])
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(image_io.ImageReadError, match="broken.png"):
        files.predict(_config(), workdir, str(tmp_path / "in"), str(tmp_path / "out"),
                        progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        image_io.find_images(str(tmp_path / "missing" / "*.png"))


def test_outputs_never_overwrite_inputs_and_stems_that_clash_get_extensions(run, tmp_path):
    workdir, _ = run
    _write_images(tmp_path, ["a.png"])
    with pytest.raises(ValueError, match="overwrite an input"):
        files.predict(_config(), workdir, str(tmp_path / "a.png"), str(tmp_path),
                        progress=False)
    assert files.output_names(["x/a.jpg", "x/a.png", "y/b.png", "z/b.png"]) == [
        "a_jpg", "a_png", "b_png", "b_png_1"]


def test_image_modes_and_exif_orientation(tmp_path):
    rgb = _image(10, 14)
    palette_image = Image.fromarray(rgb).convert("P")
    palette_image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(image_io.load_image(str(tmp_path / "p.png")),
                                  np.asarray(palette_image.convert("RGB")))
    sixteen = (np.arange(10 * 14).reshape(10, 14) * 400).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    loaded = image_io.load_image(str(tmp_path / "g16.png"))
    assert loaded.dtype == np.uint8 and loaded.shape == (10, 14, 3)
    np.testing.assert_array_equal(loaded[..., 1], np.rint(sixteen / 257.0).astype(np.uint8))
    # EXIF orientation 6: the viewer rotates by 90 degrees, so must we.
    exif = Image.Exif()
    exif[image_io.EXIF_ORIENTATION] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    rotated = image_io.load_image(str(tmp_path / "rotated.png"))
    assert rotated.shape == (14, 10, 3) and image_io.image_size(
        str(tmp_path / "rotated.png")) == (14, 10)
    np.testing.assert_array_equal(rotated, np.rot90(rgb, k=-1))


def test_no_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        restore.restore_model(_config(), str(tmp_path / "nothing"))


def test_dataset_info_without_loading_data():
    info = datasets.dataset_info(tiny.get_config().data)
    assert info["class_names"] == synthetic.CLASS_NAMES and info["num_classes"] == 5
    config = tiny.get_config()
    config.data.name = "voc"
    voc = datasets.dataset_info(config.data)
    assert voc["num_classes"] == 21 and voc["class_names"][15] == "person"
    np.testing.assert_array_equal(voc["palette"], palettes.voc_palette())
    config.data.name = "camvid"
    camvid = datasets.dataset_info(config.data)
    assert camvid["num_classes"] == 11 and camvid["class_names"][3] == "Road"
    assert tuple(camvid["palette"][3]) == (128, 64, 128)
    assert tuple(camvid["palette"][10]) == (0, 128, 192)


def test_export_round_trip_equals_in_framework_predictions(run, tmp_path):
    _, restored = run
    exported, info = export.export_restored(restored, height=33, width=33)
    path = export.save_exported(str(tmp_path / "model.jaxexport"), exported, info)
    loaded = export.load_exported(path)
    images = np.stack([_image(33, 33, 10), _image(33, 33, 11)])
    predictor = predictor_lib.Predictor.from_restored(restored)
    expected = predictor.predict(list(images))
    for image, label in zip(images, loaded(images)):  # a batch of 2: the batch is symbolic
        reference, gap = _direct(restored, image, (33, 33))
        assert len(np.unique(reference)) > 1
        _assert_same_labels(label, reference, gap)
    _assert_same_labels(loaded(images[0]), expected[0], _direct(restored, images[0],
                                                                (33, 33))[1])
    # Only JAX is needed: the plain deserialized module takes the uint8 pixels as they are.
    plain = jax.export.deserialize(bytearray(open(path, "rb").read()))
    np.testing.assert_array_equal(np.asarray(plain.call(images)), loaded(images))
    sidecar = json.load(open(path + ".json"))
    assert sidecar["class_names"] == list(synthetic.CLASS_NAMES)
    assert sidecar["palette"] == palettes.voc_palette()[:5].tolist()
    assert sidecar["input"]["shape"] == ["batch", 33, 33, 3]
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["input"]["range"] == [0, 255]
    assert "cpu" in sidecar["platforms"]
    with pytest.raises(TypeError, match="uint8"):
        loaded(images[0].astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="33, 33, 3"):
        loaded(_image(20, 31))


@pytest.mark.slow  # three subprocesses (about 5 s idle)
def test_command_lines(run, tmp_path):
    workdir, _ = run
    _write_images(tmp_path / "in", ["a.png"])
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    common = ["--config=configs/tiny.py", f"--workdir={workdir}",
              "--config.optim.base_learning_rate=0.0"]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_jax.predict", *common, f"--input={tmp_path / 'in'}",
         f"--output={tmp_path / 'out'}", "--config.eval.flip=True"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a_color.png", "a_overlay.png"]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_jax.export", *common,
         f"--output={tmp_path / 'model.jaxexport'}", "--height=41", "--width=57",
         "--platforms=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = export.load_exported(str(tmp_path / "model.jaxexport"))
    assert loaded(_image(41, 57)).shape == (41, 57)
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_jax.predict", *common, f"--input={tmp_path / 'in'}",
         f"--output={tmp_path / 'out2'}", "--config.eval.flipp=True"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0 and "flipp" in result.stderr
