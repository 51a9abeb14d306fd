"""ADE20K SceneParsing: the folder reader (ade20k.py), the TFDS builder (ade20k_tfds.py), the
host-side keep-ratio resize (rescale.ResizedToFit) and a short training run.

A miniature ADEChallengeData2016.zip in the real format is built once per module: the
`ADEChallengeData2016/` top folder, `images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg`
(one of them a greyscale JPEG, as some real ones are), `annotations/.../*.png` single-channel
maps of values 0..150, and the archive's two text files. Each annotation is a known function of
its file name holding 0 (other) and 1..150, and each image a function of its annotation.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import ade20k as ade20k_config
from deeplab_jax.data import ade20k, datasets, labels, palettes, rescale

TOP = "ADEChallengeData2016"
# Written out of order (the reader sorts by file name); sizes differ per file, as ADE20K's.
SPLIT_IDS = {"train": ["ADE_train_00000003", "ADE_train_00000001", "ADE_train_00000002"],
             "val": ["ADE_val_00000002", "ADE_val_00000001"]}
GREY = "ADE_train_00000002"  # stored as a greyscale JPEG


def _key(image_id: str) -> int:
    return zlib.crc32(image_id.encode())


def raw_label(image_id: str) -> np.ndarray:
    """The stored annotation: values 0..150, every one present, varying sizes and shapes."""
    key = _key(image_id)
    height, width = 11 + key % 7, 14 + key % 5
    if key % 2:
        height, width = width, height  # portrait and landscape
    return ((np.arange(height * width).reshape(height, width) * 7 + key) % 151).astype(np.uint8)


def expected_label(image_id: str) -> np.ndarray:
    raw = raw_label(image_id).astype(np.int64)
    return np.where(raw == 0, 255, raw - 1).astype(np.uint8)


def image_for(image_id: str) -> np.ndarray:
    label = raw_label(image_id).astype(np.int64)
    return np.stack([label, (label * 3) % 256, 255 - label], axis=-1).astype(np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **kwargs)


def write_dataset(base: Path, split_ids=None) -> Path:
    """base/ADEChallengeData2016/... as the archive extracts; returns base."""
    top = base / TOP
    for split, ids in (split_ids or SPLIT_IDS).items():
        folder = ade20k.SPLIT_FOLDERS[split]
        for image_id in ids:
            image = image_for(image_id)
            if image_id == GREY:
                image = image[..., 0]
            _save(top / "images" / folder / f"{image_id}.jpg", image, quality=95)
            _save(top / "annotations" / folder / f"{image_id}.png", raw_label(image_id), "L")
    top.mkdir(parents=True, exist_ok=True)
    (top / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n")
    (top / "sceneCategories.txt").write_text("ADE_train_00000001 airport_terminal\n")
    return base


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ade"))


@pytest.fixture(scope="module")
def archive_dir(root, tmp_path_factory) -> Path:
    """A folder holding ADEChallengeData2016.zip, with the real top folder."""
    folder = tmp_path_factory.mktemp("ade_archive")
    with zipfile.ZipFile(folder / ade20k.ARCHIVE, "w") as archive:
        for path in sorted((root / TOP).rglob("*")):
            archive.write(path, path.relative_to(root).as_posix())
    return folder


# ---------------------------------------------------------------------------- folder reader


def test_constants_follow_mmsegmentation():
    assert len(ade20k.CLASS_NAMES) == len(ade20k.CLASS_COLORS) == ade20k.NUM_CLASSES == 150
    assert len(set(ade20k.CLASS_NAMES)) == 150
    assert ade20k.CLASS_NAMES[:3] == ("wall", "building", "sky")
    assert ade20k.CLASS_NAMES[7] == "bed" and ade20k.CLASS_NAMES[149] == "flag"
    assert ade20k.CLASS_COLORS[0] == (120, 120, 120) and ade20k.CLASS_COLORS[149] == (92, 0, 255)
    np.testing.assert_array_equal(ade20k.PALETTE,
                                  palettes.palette_from_colors(ade20k.CLASS_COLORS))
    assert ade20k.SPLIT_SIZES == {"train": 20210, "val": 2000}


def test_folder_reader_imports_no_tensorflow():
    code = ("import sys, deeplab_jax.data.ade20k; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "[]"


def test_annotation_values_become_classes(tmp_path):
    path = tmp_path / "ADE_val_00000001.png"
    _save(path, np.array([[1, 150, 0], [2, 75, 149]], np.uint8), "L")
    np.testing.assert_array_equal(ade20k.load_label(path), [[0, 149, 255], [1, 74, 148]])
    _save(path, np.array([[1, 151, 255]], np.uint8), "L")
    with pytest.raises(labels.LabelValueError,
                       match=r"ADE_val_00000001\.png: values \[151, 255\]"):
        ade20k.load_label(path)
    _save(path, np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(labels.LabelValueError, match=r"ADE_val_00000001\.png.*'RGB'"):
        ade20k.load_label(path)


@pytest.mark.parametrize("split", ["train", "val"])
def test_splits_are_sorted_and_exact(root, split):
    for where in (root, root / TOP):  # the folder holding ADEChallengeData2016/, or it
        source = ade20k.ADE20KFolder(where, split)
        assert list(source.ids) == sorted(SPLIT_IDS[split])
    assert source.num_classes == 150 and source.ignore_label == 255
    assert source.class_names == ade20k.CLASS_NAMES
    folder = ade20k.SPLIT_FOLDERS[split]
    for index, image_id in enumerate(source.ids):
        top = root / TOP
        assert source.files[index] == (str(top / "images" / folder / f"{image_id}.jpg"),
                                       str(top / "annotations" / folder / f"{image_id}.png"))
        example = source[index]
        np.testing.assert_array_equal(example["label"], expected_label(image_id))
        assert set(np.unique(example["label"]).tolist()) == set(range(150)) | {255}
        image = example["image"]
        assert image.dtype == np.uint8 and image.shape == example["label"].shape + (3,)
        # JPEG is lossy: the image is the file's decoded pixels, greyscale ones as RGB.
        with Image.open(source.files[index][0]) as decoded:
            assert decoded.mode == ("L" if image_id == GREY else "RGB")
            np.testing.assert_array_equal(image, np.asarray(decoded.convert("RGB")))


def test_size_mismatch_names_both_files(tmp_path):
    base = write_dataset(tmp_path, {"val": SPLIT_IDS["val"]})
    _save(base / TOP / "annotations/validation/ADE_val_00000001.png",
          np.ones((3, 4), np.uint8), "L")
    source = ade20k.ADE20KFolder(base, "val")
    with pytest.raises(labels.SizeMismatchError,
                       match=r"ADE_val_00000001\.jpg.*ADE_val_00000001\.png is 3x4"):
        source[0]


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ade20k.ADE20KFolder(tmp_path, "train")
    message = str(error.value)
    assert ade20k.ARCHIVE in message and ade20k.SOURCE_URL in message
    assert str(tmp_path / TOP) in message
    base = write_dataset(tmp_path, {"val": SPLIT_IDS["val"]})
    with pytest.raises(FileNotFoundError, match=r"images/training: no such folder"):
        ade20k.ADE20KFolder(base, "train")
    (base / TOP / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images .*ADE_val_00000002"):
        ade20k.ADE20KFolder(base, "val")
    with pytest.raises(ValueError, match="Unknown ADE20K split 'validation'"):
        ade20k.split_files(base, "validation")


def test_real_split_sizes_checked_only_for_real_looking_splits(root):
    many = [f"ADE_val_{n:08d}" for n in range(1, 102)]
    assert ade20k.is_real_ade20k(many, "val")
    assert not ade20k.is_real_ade20k(many[:100], "val")  # a miniature
    assert not ade20k.is_real_ade20k(many, "train")  # not the train split's names
    assert not ade20k.is_real_ade20k([f"img_{n}" for n in range(200)], "val")
    assert len(ade20k.split_files(root, "val")) == 2
    with pytest.raises(ValueError, match=r"2 examples in the 'val' split .* expected 2000"):
        ade20k.split_files(root, "val", check_counts=True)


# ---------------------------------------------------------------------------- resize to fit


def test_fit_scale_is_mmsegmentations_keep_ratio_rule():
    assert rescale.fitted_size(683, 512, 512, 1024) == (683, 512)  # short side already 512
    assert rescale.fitted_size(300, 200, 512, 1024) == (768, 512)  # enlarged: 2.56
    assert rescale.fitted_size(400, 1600, 512, 1024) == (256, 1024)  # long side capped: 0.64
    assert rescale.fitted_size(1536, 2048, 512, 2048) == (512, 683)  # 682.67 rounds up
    assert rescale.fit_scale(400, 1600, 512, 2048) == pytest.approx(1.28)


def test_resized_to_fit_source(root):
    source = ade20k.ADE20KFolder(root, "train")
    fitted = rescale.ResizedToFit(source, 8, 12)
    assert len(fitted) == len(source) and fitted.class_names == ade20k.CLASS_NAMES
    assert fitted.files == source.files  # attributes pass through (error messages use them)
    for index in range(len(source)):
        big, small = source[index], fitted[index]
        height, width = big["label"].shape
        assert small["label"].shape == rescale.fitted_size(height, width, 8, 12)
        assert min(small["label"].shape) <= 8 and max(small["label"].shape) <= 12
        assert small["image"].shape == small["label"].shape + (3,)
        # Nearest neighbour: only values of the original label, no blended class indices.
        assert set(np.unique(small["label"]).tolist()) <= set(np.unique(big["label"]).tolist())
    with pytest.raises(ValueError, match=r"config\.data\.resize_to_fit=\(1024, 512\)"):
        rescale.ResizedToFit(source, 1024, 512)


def test_get_dataset_reads_the_folder_and_resizes(root):
    config = ade20k_config.get_config()
    assert config.data.name == "ade20k" and tuple(config.data.resize_to_fit) == (512, 1024)
    config.data.update(source="folder", folder=str(root), resize_to_fit=(10, 16))
    source = datasets.get_dataset(config.data, "val")
    assert isinstance(source, rescale.ResizedToFit) and len(source) == 2
    assert source.num_classes == 150 and list(source.ids) == sorted(SPLIT_IDS["val"])
    for index, image_id in enumerate(source.ids):
        height, width = raw_label(image_id).shape
        assert source[index]["label"].shape == rescale.fitted_size(height, width, 10, 16)
    config.data.resize_to_fit = None
    plain = datasets.get_dataset(config.data, "val")
    np.testing.assert_array_equal(plain[0]["label"], expected_label("ADE_val_00000001"))


def test_config_follows_mmsegmentation():
    config = ade20k_config.get_config()
    assert tuple(config.data.crop_size) == (513, 513)
    assert tuple(config.data.canvas_size) == (1025, 1025)
    assert config.data.batch_size == 16 and config.num_train_steps == 80_000
    assert config.model.depth == 50 and config.model.output_stride == 8
    assert config.model.aux_loss_weight == 0.4
    assert (config.optim.base_learning_rate, config.optim.weight_decay) == (0.01, 5e-4)
    # Every resized image fits the canvas, in either orientation.
    short, long_max = config.data.resize_to_fit
    for height, width in ((2000, 300), (300, 2000), (512, 512), (100, 5000)):
        fitted = rescale.fitted_size(height, width, short, long_max)
        assert fitted[0] <= config.data.canvas_size[0] and fitted[1] <= config.data.canvas_size[1]


# ---------------------------------------------------------------------------- TFDS builder


@pytest.fixture
def no_internet(monkeypatch):
    """Every download fails; the list of the URLs asked for."""
    tfds = pytest.importorskip("tensorflow_datasets")
    requested = []

    def refuse(self, url, *args, **kwargs):
        requested.append(url)
        raise ConnectionError(f"no internet for {url}")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", refuse)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", refuse)
    return requested


def test_tfds_builder_from_the_zip_equals_the_folder(archive_dir, root, no_internet, tmp_path):
    from deeplab_jax.data import ade20k_tfds

    builder = ade20k_tfds.prepare(data_dir=tmp_path, manual_dir=archive_dir)
    assert builder.name == "ade20k_scene_parsing" and builder.info.disable_shuffling
    assert set(builder.info.splits) == {"train", "val"} and not no_internet
    for split in SPLIT_IDS:
        folder = ade20k.ADE20KFolder(root, split)
        data = builder.as_data_source(split)
        assert len(data) == len(folder) == builder.info.splits[split].num_examples
        for index, image_id in enumerate(folder.ids):
            record, example = data[index], folder[index]
            assert record["image_id"] == image_id.encode()
            np.testing.assert_array_equal(record["image"], example["image"])  # grey JPEG too
            np.testing.assert_array_equal(record["label"][..., 0], example["label"])


def test_tfds_from_the_extracted_folder_and_without_a_source(root, no_internet, tmp_path):
    from deeplab_jax.data import ade20k_tfds

    built = ade20k_tfds.prepare(data_dir=tmp_path / "a", manual_dir=root)
    data = built.as_data_source("val")
    assert [data[i]["image_id"] for i in range(len(data))] == [b"ADE_val_00000001",
                                                                b"ADE_val_00000002"]
    with pytest.raises(FileNotFoundError) as error:  # no manual dir: the download fails
        ade20k_tfds.prepare(data_dir=tmp_path / "b")
    message = str(error.value)
    assert ade20k.SOURCE_URL in message and "no internet" in message and "manual_dir" in message
    assert no_internet == [ade20k.SOURCE_URL]
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="holds no ADE20K folder"):
        ade20k_tfds.prepare(data_dir=tmp_path / "c", manual_dir=tmp_path / "manual")


def test_tfds_name_not_in_the_catalog():
    tfds = pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import ade20k_tfds

    assert tfds.builder_cls("ade20k_scene_parsing") is ade20k_tfds.Ade20kSceneParsing


# ---------------------------------------------------------------------------- training


@pytest.mark.slow
def test_config_trains_and_evaluates_on_the_folder(root, tmp_path):
    """configs/ade20k.py at configs/tiny.py's model sizes: the resized folder examples through
    padding, device-side augmentation, two training steps and an evaluation of both val images."""
    from deeplab_jax import train

    config = ade20k_config.get_config()
    config.data.update(source="folder", folder=str(root), resize_to_fit=(16, 24),
                       canvas_size=(25, 25), crop_size=(17, 17), batch_size=8, num_workers=1)
    config.model.update(depth=14, width=8, output_stride=16, multi_grid=(1,),
                        aux_loss_weight=0.0)
    config.model.deeplabv3.update(aspp_channels=16, atrous_rates=(1, 2, 3))
    config.eval.update(batch_size=8, num_visualizations=2)
    config.update(num_train_steps=2, log_every_steps=1, eval_every_steps=2,
                  checkpoint_every_steps=2)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["num_images"] == 2
    assert len(results["per_class_iou"]) == 150
    assert np.isfinite(results["miou"])
