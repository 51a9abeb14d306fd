"""Dataset selection by config, host-side rescaling, and a real-data run end to end."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import camvid as camvid_config
from configs import voc as voc_config
from deeplab_jax import errors, train
from deeplab_jax.data import datasets, input_pipeline, rescale

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"no CamVid at {CAMVID}")


def _camvid_folder_config(**data):
    config = camvid_config.get_config()
    config.data.update(source="folder", folder=str(CAMVID), **data)
    return config


def test_rescale_example_keeps_label_values_and_alignment():
    label = np.zeros((40, 60), np.uint8)
    label[10:30, 20:50] = 3
    label[:2] = 255
    image = np.repeat((label * 40)[..., None], 3, axis=-1).astype(np.uint8)
    small_image, small_label = rescale.rescale_example(image, label, 0.5)
    assert small_image.shape == (20, 30, 3) and small_label.shape == (20, 30)
    assert set(np.unique(small_label)) == {0, 3, 255}  # nearest: no blended class indices
    np.testing.assert_array_equal(small_label[5:15, 10:25], 3)
    np.testing.assert_array_equal(small_image[6:14, 11:24], 120)  # away from the edges
    edge = small_image[8, 10, 0]
    assert 0 < edge < 120  # bilinear blends the image at a boundary (labels stay nearest)
    same_image, same_label = rescale.rescale_example(image, label, 1.0)
    assert same_image is image and same_label is label
    assert rescale.rescaled_size(3, 5, 0.1) == (1, 1)


def test_rescaled_source_passes_attributes_and_refuses_upscaling():
    class Source:
        class_names = ("a", "b")

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return {"image": np.zeros((8, 10, 3), np.uint8), "label": np.ones((8, 10), np.uint8)}

    scaled = rescale.RescaledSource(Source(), 0.5)
    assert len(scaled) == 1 and scaled.class_names == ("a", "b")
    assert scaled[0]["image"].shape == (4, 5, 3) and scaled[0]["label"].shape == (4, 5)
    with pytest.raises(ValueError, match="image_scale=2.0"):
        rescale.RescaledSource(Source(), 2.0)


def test_config_errors_name_the_field():
    config = voc_config.get_config()
    config.data.source = "s3"
    with pytest.raises(ValueError, match="config.data.source='s3'.*--config.data.source=tfds"):
        datasets.get_dataset(config.data, "train")
    config.data.source = "folder"
    with pytest.raises(ValueError, match="config.data.folder.*--config.data.folder=DIR"):
        datasets.get_dataset(config.data, "train")
    config.data.update(source="tfds", ignore_label=0)
    with pytest.raises(ValueError, match="ignore_label=0.*--config.data.ignore_label=255"):
        datasets.get_dataset(config.data, "train")
    config.data.name = "kitti"
    with pytest.raises(ValueError, match="'kitti'; known: 'synthetic_shapes', 'voc'") as error:
        datasets.get_dataset(config.data, "train")
    # A user's error: one line from the command (errors.run_command), no traceback.
    assert isinstance(error.value, errors.ConfigError)
    assert "Set --config.data.name to one of them" in str(error.value)


def test_data_config_values_are_config_errors_with_their_fix():
    class Source:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return {"image": np.zeros((8, 10, 3), np.uint8), "label": np.ones((8, 10), np.uint8)}

    cases = [
        (lambda: rescale.RescaledSource(Source(), 2.0), "--config.data.image_scale=0.5"),
        (lambda: rescale.ResizedToFit(Source(), 1024, 512),
         "--config.data.resize_to_fit='(512, 1024)'"),
        (lambda: next(input_pipeline.train_batches(
            Source(), global_batch_size=1, seed=0, start_step=0, canvas_size=(8, 8))),
         "Example 0 of Source: example size (8, 10) does not fit in canvas (8, 8): set "
         "--config.data.canvas_size='(8, 10)'"),
        (lambda: next(input_pipeline.train_batches(
            Source(), global_batch_size=1, seed=0, start_step=0, canvas_size=(8, 10),
            num_workers=0)), "--config.data.num_workers=4"),
    ]
    for make, fix in cases:
        with pytest.raises(errors.ConfigError) as error:
            make()
        assert isinstance(error.value, ValueError) and fix in str(error.value)


def test_tfds_source_without_tfds_points_to_the_folder_source(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    for name in ("deeplab_jax.data.voc_tfds", "deeplab_jax.data.camvid_tfds"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    config = camvid_config.get_config()
    with pytest.raises(ImportError, match="--config.data.source=folder"):
        datasets.get_dataset(config.data, "train")


def test_dataset_info_matches_the_sources():
    for config in (voc_config.get_config(), camvid_config.get_config()):
        info = datasets.dataset_info(config.data)
        assert info["num_classes"] == len(info["class_names"]) == {"voc": 21, "camvid": 11}[
            config.data.name]
        assert info["palette"].shape == (256, 3)


@needs_camvid
def test_camvid_folder_source_at_half_resolution():
    source = datasets.get_dataset(_camvid_folder_config(image_scale=0.5).data, "val")
    assert len(source) == 101 and source.num_classes == 11
    example = source[0]
    assert example["image"].shape == (180, 240, 3) and example["label"].shape == (180, 240)
    assert set(np.unique(example["label"])) <= set(range(11)) | {255}


@pytest.mark.slow  # the real CamVid, trained and evaluated (under 16 s idle)
@needs_camvid
def test_camvid_config_trains_and_evaluates_on_the_real_folder(tmp_path):
    """configs/camvid.py at a toy size: real files through decode, pad, device-side
    augmentation, training, checkpoint and evaluation of all 101 val images."""
    config = _camvid_folder_config(image_scale=0.125, canvas_size=(49, 65),
                                   crop_size=(33, 49), batch_size=8, num_workers=2)
    config.model.update(depth=14, width=8, output_stride=16, multi_grid=(1,))
    config.model.deeplabv3.update(aspp_channels=16, atrous_rates=(1, 2, 3))
    config.eval.update(batch_size=8, num_visualizations=2)
    config.update(num_train_steps=2, log_every_steps=1, eval_every_steps=2,
                  checkpoint_every_steps=2)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["num_images"] == 101
    assert len(results["per_class_iou"]) == 11
    saved = json.loads((tmp_path / "eval" / "val_step00000002_os16.json").read_text())
    assert saved["miou"] == pytest.approx(results["miou"])
    assert os.path.isdir(tmp_path / "checkpoints" / "2")
