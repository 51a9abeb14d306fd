"""Cityscapes: the folder reader (cityscapes.py) and the TFDS builder (cityscapes_tfds.py).

Miniature archives in the real formats are built once per module: leftImg8bit_trainvaltest.zip
and gtFine_trainvaltest.zip with the real top folders, split/city folders and file names
(`{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`, `..._gtFine_labelIds.png` with the
`_color.png`, `_instanceIds.png` and `_polygons.json` beside it). Every labelIds map is a known
function of its id holding all 34 label ids, and every image a function of its label, so the
mapping and the pairing are checked with exact values. The cities are made up, so the real
split sizes are not enforced on them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import cityscapes as cityscapes_config
from deeplab_jax.data import cityscapes, datasets, labels, palettes

# Deliberately listed out of order: the reader sorts by file name (city, sequence, frame).
SPLIT_IDS = {
    "train": ["beta_000001_000019", "alpha_000002_000019", "alpha_000000_000123",
              "beta_000000_000019"],
    "val": ["gamma_000010_000019", "gamma_000001_000019"],
    "test": ["delta_000003_000019", "delta_000000_000019"],
}
TEST_LABEL_IDS = (0, 1, 2, 3)  # the test split's public labels: void only (README.md L44)


def _key(image_id: str) -> int:
    return zlib.crc32(image_id.encode())


def label_ids_for(image_id: str, split: str) -> np.ndarray:
    """The stored labelIds map of `image_id`: every id 0..33 (only void ids in test)."""
    key = _key(image_id)
    height, width = 6 + key % 3, 12 + key % 4
    values = np.arange(height * width).reshape(height, width) + key
    if split == "test":
        return np.asarray(TEST_LABEL_IDS, np.uint8)[values % len(TEST_LABEL_IDS)]
    return (values % 34).astype(np.uint8)


def expected_train_ids(label_ids: np.ndarray) -> np.ndarray:
    table = np.full(256, 255, np.uint8)
    for label_id, train_id in cityscapes.LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table[label_ids]


def image_for(image_id: str, split: str) -> np.ndarray:
    label = label_ids_for(image_id, split).astype(np.int64)
    return np.stack([label * 7, (label * 3 + _key(image_id)) % 256, 255 - label * 7],
                    axis=-1).astype(np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def write_example(root: Path, split: str, image_id: str) -> None:
    city = image_id.split("_")[0]
    label_ids = label_ids_for(image_id, split)
    _save(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png",
          image_for(image_id, split))
    gt = root / "gtFine" / split / city
    _save(gt / f"{image_id}_gtFine_labelIds.png", label_ids, "L")
    # The other files of gtFine, which the reader must leave alone.
    _save(gt / f"{image_id}_gtFine_color.png", cityscapes.PALETTE[expected_train_ids(label_ids)])
    _save(gt / f"{image_id}_gtFine_instanceIds.png", label_ids.astype(np.uint16) * 1000)
    (gt / f"{image_id}_gtFine_polygons.json").write_text(json.dumps(
        {"imgHeight": int(label_ids.shape[0]), "imgWidth": int(label_ids.shape[1]),
         "objects": []}))


def write_dataset(root: Path, split_ids=None) -> Path:
    for split, ids in (split_ids or SPLIT_IDS).items():
        for image_id in ids:
            write_example(root, split, image_id)
    return root


def zip_folder(zip_path: Path, root: Path, top: str) -> None:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted((root / top).rglob("*")):
            archive.write(path, path.relative_to(root).as_posix())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Both archives' contents, extracted into one folder as a user would."""
    return write_dataset(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture(scope="module")
def archives(root, tmp_path_factory) -> Path:
    """A folder holding the two archives under their real names."""
    folder = tmp_path_factory.mktemp("cityscapes_archives")
    zip_folder(folder / cityscapes.IMAGE_ARCHIVE, root, "leftImg8bit")
    zip_folder(folder / cityscapes.LABEL_ARCHIVE, root, "gtFine")
    return folder


# ---------------------------------------------------------------------------- folder reader


def test_constants_follow_cityscapes_scripts():
    assert cityscapes.NUM_CLASSES == len(cityscapes.CLASS_NAMES) == 19
    assert cityscapes.LABEL_ID_TO_TRAIN_ID == {
        7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert cityscapes.IGNORED_LABEL_IDS == (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)
    assert cityscapes.CLASS_NAMES[0] == "road" and cityscapes.CLASS_NAMES[18] == "bicycle"
    assert cityscapes.CLASS_COLORS[0] == (128, 64, 128)
    assert cityscapes.CLASS_COLORS[13] == (0, 0, 142)  # car
    np.testing.assert_array_equal(cityscapes.PALETTE,
                                  palettes.palette_from_colors(cityscapes.CLASS_COLORS))
    assert cityscapes.SPLIT_SIZES == {"train": 2975, "val": 500, "test": 1525}
    assert sum(len(cities) for cities in cityscapes.CITIES.values()) == 27


def test_folder_reader_imports_no_tensorflow():
    code = ("import sys, deeplab_jax.data.cityscapes; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "[]"


def test_label_ids_map_to_train_ids(tmp_path):
    path = tmp_path / "x_000000_000000_gtFine_labelIds.png"
    _save(path, np.array([[7, 33, 5, 0], [24, 26, 9, 31]], np.uint8), "L")
    np.testing.assert_array_equal(cityscapes.load_label(path),
                                  [[0, 18, 255, 255], [11, 13, 255, 16]])
    every_id = np.arange(34, dtype=np.uint8).reshape(2, 17)
    _save(path, every_id, "L")
    mapped = cityscapes.load_label(path).ravel()
    for label_id in range(34):
        assert mapped[label_id] == cityscapes.LABEL_ID_TO_TRAIN_ID.get(label_id, 255)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_splits_are_sorted_and_exact(root, split):
    source = cityscapes.CityscapesFolder(root, split)
    ids = sorted(SPLIT_IDS[split])
    assert list(source.ids) == ids and len(source) == len(ids)
    assert source.class_names == cityscapes.CLASS_NAMES and source.num_classes == 19
    assert source.ignore_label == 255
    np.testing.assert_array_equal(source.palette, cityscapes.PALETTE)
    for index, image_id in enumerate(ids):
        city = image_id.split("_")[0]
        assert source.files[index] == (
            str(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png"),
            str(root / "gtFine" / split / city / f"{image_id}_gtFine_labelIds.png"))
        example = source[index]
        np.testing.assert_array_equal(example["image"], image_for(image_id, split))
        expected = expected_train_ids(label_ids_for(image_id, split))
        np.testing.assert_array_equal(example["label"], expected)
        assert example["label"].dtype == np.uint8
    if split == "test":
        assert (source[0]["label"] == 255).all()  # only void ids: nothing to learn or score
    else:
        assert set(np.unique(source[0]["label"]).tolist()) == set(range(19)) | {255}
    with pytest.raises(IndexError):
        source[len(ids)]


def test_bad_label_values_name_the_file(tmp_path):
    root = write_dataset(tmp_path / "cs", {"val": SPLIT_IDS["val"]})
    image_id = sorted(SPLIT_IDS["val"])[0]
    path = root / "gtFine/val/gamma" / f"{image_id}_gtFine_labelIds.png"
    bad = label_ids_for(image_id, "val").copy()
    bad[0, 0] = 34
    _save(path, bad, "L")
    source = cityscapes.CityscapesFolder(root, "val")
    with pytest.raises(labels.LabelValueError, match=r"gamma_000001_000019_gtFine_labelIds"
                                                     r"\.png: values \[34\]"):
        source[0]
    source[1]  # the other file still reads
    # The colour rendering in place of the labelIds file is refused, naming it.
    _save(path, cityscapes.PALETTE[expected_train_ids(bad)])
    with pytest.raises(labels.LabelValueError, match=r"labelIds\.png.*'RGB'"):
        source[0]


def test_size_mismatch_names_both_files(tmp_path):
    root = write_dataset(tmp_path / "cs", {"val": SPLIT_IDS["val"]})
    image_id = sorted(SPLIT_IDS["val"])[1]
    _save(root / "gtFine/val/gamma" / f"{image_id}_gtFine_labelIds.png",
          np.full((5, 5), 7, np.uint8), "L")
    source = cityscapes.CityscapesFolder(root, "val")
    with pytest.raises(labels.SizeMismatchError,
                       match=rf"{image_id}_leftImg8bit\.png.*{image_id}_gtFine_labelIds\.png "
                             r"is 5x5"):
        source[1]


def test_missing_folders_and_files_name_the_archives(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        cityscapes.CityscapesFolder(tmp_path, "train")
    message = str(error.value)
    assert "leftImg8bit/train" in message and cityscapes.IMAGE_ARCHIVE in message
    assert cityscapes.DOWNLOAD_URL in message
    write_example(tmp_path, "train", "alpha_000000_000019")
    shutil.rmtree(tmp_path / "gtFine")
    with pytest.raises(FileNotFoundError, match="gtFine/train.*gtFine_trainvaltest.zip"):
        cityscapes.CityscapesFolder(tmp_path, "train")
    write_example(tmp_path, "train", "alpha_000000_000019")
    _save(tmp_path / "leftImg8bit/train/alpha/alpha_000000_000020_leftImg8bit.png",
          np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"1 images .*alpha_000000_000020"):
        cityscapes.CityscapesFolder(tmp_path, "train")
    with pytest.raises(ValueError, match="Unknown Cityscapes split 'training'"):
        cityscapes.split_files(tmp_path, "training")


def test_real_split_sizes_checked_only_for_real_cities(tmp_path):
    real = write_dataset(tmp_path / "real", {"val": ["frankfurt_000000_000294",
                                                     "lindau_000000_000019"]})
    with pytest.raises(ValueError, match=r"2 examples in the 'val' split .* expected 500"):
        cityscapes.CityscapesFolder(real, "val")
    assert len(cityscapes.CityscapesFolder(real, "val", check_counts=False)) == 2
    mini = write_dataset(tmp_path / "mini", {"val": SPLIT_IDS["val"]})
    assert len(cityscapes.CityscapesFolder(mini, "val")) == 2
    with pytest.raises(ValueError, match="expected 500"):
        cityscapes.CityscapesFolder(mini, "val", check_counts=True)


def test_get_dataset_reads_the_folder(root):
    config = cityscapes_config.get_config()
    assert config.data.name == "cityscapes"
    config.data.update(source="folder", folder=str(root))
    source = datasets.get_dataset(config.data, "val")
    assert len(source) == 2 and source.num_classes == 19
    np.testing.assert_array_equal(
        source[0]["label"], expected_train_ids(label_ids_for("gamma_000001_000019", "val")))
    info = datasets.dataset_info(config.data)
    assert info["num_classes"] == 19 and info["class_names"][10] == "sky"


def test_config_is_the_papers_setting():
    config = cityscapes_config.get_config()
    assert tuple(config.data.crop_size) == (769, 769)
    assert tuple(config.data.canvas_size) == (1025, 2049)
    assert config.model.depth == 101 and config.model.output_stride == 16
    assert config.num_train_steps == 90_000 and config.data.batch_size == 16


# ---------------------------------------------------------------------------- TFDS builder


@pytest.fixture(scope="module")
def builder(archives, tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import cityscapes_tfds

    return cityscapes_tfds.prepare(data_dir=tmp_path_factory.mktemp("tfds"),
                                   manual_dir=archives)


def test_tfds_builder_from_the_zips_equals_the_folder(builder, root):
    assert builder.name == "cityscapes_fine" and builder.info.disable_shuffling
    assert set(builder.info.splits) == {"train", "val", "test"}
    for split in SPLIT_IDS:
        folder = cityscapes.CityscapesFolder(root, split)
        data = builder.as_data_source(split)
        assert len(data) == len(folder) == builder.info.splits[split].num_examples
        for index, image_id in enumerate(folder.ids):
            record, example = data[index], folder[index]
            assert record["image_id"] == image_id.encode()
            np.testing.assert_array_equal(record["image"], example["image"])
            assert record["label"].shape == example["label"].shape + (1,)
            np.testing.assert_array_equal(record["label"][..., 0], example["label"])


def test_tfds_from_extracted_folders_or_nothing(root, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import cityscapes_tfds

    built = cityscapes_tfds.prepare(data_dir=tmp_path / "data", manual_dir=root)
    data = built.as_data_source("train")
    assert [data[i]["image_id"] for i in range(len(data))] == [
        image_id.encode() for image_id in sorted(SPLIT_IDS["train"])]
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "notes.txt").write_text("no archives here")
    with pytest.raises(FileNotFoundError) as error:
        cityscapes_tfds.prepare(data_dir=tmp_path / "data2", manual_dir=tmp_path / "manual")
    message = str(error.value)
    for text in (cityscapes.IMAGE_ARCHIVE, cityscapes.LABEL_ARCHIVE, cityscapes.DOWNLOAD_URL,
                 str(tmp_path / "manual")):
        assert text in message


def test_tfds_name_does_not_clash_with_tfds_cityscapes():
    tfds = pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import cityscapes_tfds

    assert tfds.builder_cls("cityscapes_fine") is cityscapes_tfds.CityscapesFine
    assert tfds.builder_cls("cityscapes") is not cityscapes_tfds.CityscapesFine
