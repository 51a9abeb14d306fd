"""PASCAL VOC 2012 + SBD: split membership, label sources, folder reader vs TFDS builder.

Miniature archives in the real formats (a VOC tar with JPEGs, palette PNGs and the list
files; an SBD tgz with JPEGs, GTcls .mat structs and its lists) are built once per session.
Every label is a known function of its id, and every image a function of its label and of
the archive it came from, so the tests check exact values and which file each came from.
"""
import os
import tarfile

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from deeplab_jax.data import palettes
from deeplab_jax.data import labels, voc

# VOC train ids: T_SBD_TRAIN/T_SBD_VAL are also in SBD (label and image must come from VOC),
# T_ONLY are not in SBD.
T_SBD_TRAIN, T_SBD_VAL, T_ONLY = ["2007_000032"], ["2007_000039"], ["2007_000063", "2007_000068"]
# VOC val ids: V_SBD_* are also in SBD lists (must be excluded from train_aug).
V_SBD_TRAIN, V_SBD_VAL, V_ONLY = ["2007_000033"], ["2007_000042"], ["2007_000061"]
# SBD-only ids (label from the .mat). S_IMG_SBD have their image only in SBD's img/;
# S_IMG_VOC have it in VOC's JPEGImages too (as in the real archives), which must win.
S_IMG_SBD_TRAIN, S_IMG_VOC_VAL = ["2008_000002", "2008_000003"], ["2008_000007"]

VOC_TRAIN = sorted(T_SBD_TRAIN + T_SBD_VAL + T_ONLY)
VOC_VAL = sorted(V_SBD_TRAIN + V_SBD_VAL + V_ONLY)
SBD_TRAIN = sorted(T_SBD_TRAIN + V_SBD_TRAIN + S_IMG_SBD_TRAIN)
SBD_VAL = sorted(T_SBD_VAL + V_SBD_VAL + S_IMG_VOC_VAL)
EXPECTED_SPLITS = {
    "train": VOC_TRAIN,
    "val": VOC_VAL,
    "trainval": sorted(VOC_TRAIN + VOC_VAL),
    "train_aug": sorted(VOC_TRAIN + S_IMG_SBD_TRAIN + S_IMG_VOC_VAL),
}
VOC_LABELED = VOC_TRAIN + VOC_VAL
SBD_LABELED = SBD_TRAIN + SBD_VAL
VOC_MARK, SBD_MARK = 200, 40  # green channel of the images: which archive the image is from


def _number(image_id):
    return int(image_id.replace("_", ""))


def id_class(image_id, source="voc"):
    """The object class of `image_id`'s label; SBD's copy of a VOC id gets another class."""
    c = _number(image_id) % 20 + 1
    return c % 20 + 1 if source == "sbd" and image_id in VOC_LABELED else c


def id_size(image_id):
    n = _number(image_id)
    return 20 + n % 7, 30 + n % 5


def expected_label(image_id, source):
    """A rectangle of the id's class; VOC's has a 1-pixel ring of 255 around it."""
    height, width = id_size(image_id)
    label = np.zeros((height, width), np.uint8)
    if source == "voc":
        label[3:height - 3, 4:width - 4] = 255
    label[4:height - 4, 5:width - 5] = id_class(image_id, source)
    return label


def expected_image(label, mark):
    """Red = 10 + 11 * class (255 counted as the object), green = the archive's mark."""
    filled = np.where(label == 255, np.max(np.where(label == 255, 0, label)), label)
    image = np.empty(label.shape + (3,), np.uint8)
    image[..., 0] = 10 + 11 * filled.astype(np.int32)
    image[..., 1] = mark
    image[..., 2] = 90
    return image


def save_jpeg(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, quality=95, subsampling=0)


def save_palette_png(path, label):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(label, mode="P")
    image.putpalette(palettes.voc_palette().reshape(-1).tolist())
    image.save(path)


def save_gtcls(path, segmentation):
    """An SBD cls/<id>.mat: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    classes = [int(c) for c in np.unique(segmentation) if c]
    boundaries = np.empty((len(classes), 1), dtype=object)
    for i, c in enumerate(classes):
        boundaries[i, 0] = scipy.sparse.csc_matrix(segmentation == c)
    scipy.io.savemat(path, {"GTcls": {
        "Segmentation": segmentation.astype(np.uint8),
        "Boundaries": boundaries,
        "CategoriesPresent": np.array(classes, np.uint8).reshape(-1, 1)}})


def write_list(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def voc_path(root, *parts):
    return os.path.join(root, "VOCdevkit", "VOC2012", *parts)


def sbd_path(root, *parts):
    return os.path.join(root, "benchmark_RELEASE", "dataset", *parts)


def write_voc(root, train, val, labels_by_id, images_by_id):
    for image_id, label in labels_by_id.items():
        save_palette_png(voc_path(root, "SegmentationClass", f"{image_id}.png"), label)
    for image_id, image in images_by_id.items():
        save_jpeg(voc_path(root, "JPEGImages", f"{image_id}.jpg"), image)
    for name, ids in (("train", train), ("val", val), ("trainval", sorted(train + val))):
        write_list(voc_path(root, "ImageSets", "Segmentation", f"{name}.txt"), ids)


def build_staging(staging):
    voc_labels = {i: expected_label(i, "voc") for i in VOC_LABELED}
    voc_images = {i: expected_image(label, VOC_MARK) for i, label in voc_labels.items()}
    for i in S_IMG_VOC_VAL:  # image in VOC's JPEGImages, label only in SBD
        voc_images[i] = expected_image(expected_label(i, "sbd"), VOC_MARK)
    write_voc(staging, VOC_TRAIN, VOC_VAL, voc_labels, voc_images)
    for image_id in SBD_LABELED:
        label = expected_label(image_id, "sbd")
        save_gtcls(sbd_path(staging, "cls", f"{image_id}.mat"), label)
        save_jpeg(sbd_path(staging, "img", f"{image_id}.jpg"), expected_image(label, SBD_MARK))
    write_list(sbd_path(staging, "train.txt"), SBD_TRAIN)
    write_list(sbd_path(staging, "val.txt"), SBD_VAL)


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """A folder holding the two miniature archives under their real names."""
    staging = str(tmp_path_factory.mktemp("voc_staging"))
    build_staging(staging)
    folder = tmp_path_factory.mktemp("voc_archives")
    with tarfile.open(folder / voc.VOC_ARCHIVE, "w") as tar:
        tar.add(os.path.join(staging, "VOCdevkit"), arcname="VOCdevkit")
    with tarfile.open(folder / voc.SBD_ARCHIVE, "w:gz") as tar:
        tar.add(os.path.join(staging, "benchmark_RELEASE"), arcname="benchmark_RELEASE")
    return folder


@pytest.fixture(scope="session")
def root(archives, tmp_path_factory):
    """Both archives extracted into one folder, as a user would."""
    folder = tmp_path_factory.mktemp("voc_root")
    for name in (voc.VOC_ARCHIVE, voc.SBD_ARCHIVE):
        with tarfile.open(archives / name) as tar:
            tar.extractall(folder, filter="data")
    return str(folder)


@pytest.fixture(scope="session")
def builder(archives, tmp_path_factory):
    from deeplab_jax.data import voc_tfds
    return voc_tfds.prepare(data_dir=str(tmp_path_factory.mktemp("tfds_data")),
                            manual_dir=str(archives))


def test_gtcls_round_trips_like_the_real_files(root):
    mat = scipy.io.loadmat(sbd_path(root, "cls", f"{S_IMG_SBD_TRAIN[0]}.mat"))
    gt = mat["GTcls"]
    assert gt.shape == (1, 1) and gt.dtype.names is not None
    assert {"Segmentation", "Boundaries", "CategoriesPresent"} <= set(gt.dtype.names)
    segmentation = gt["Segmentation"][0, 0]
    assert segmentation.dtype == np.uint8
    np.testing.assert_array_equal(segmentation, expected_label(S_IMG_SBD_TRAIN[0], "sbd"))


@pytest.mark.parametrize("split", sorted(EXPECTED_SPLITS))
def test_split_membership(root, split):
    assert voc.split_ids(root, split) == EXPECTED_SPLITS[split]
    assert list(voc.VocFolder(root, split).ids) == EXPECTED_SPLITS[split]


def test_voc_only_splits_need_no_sbd(archives, tmp_path):
    with tarfile.open(archives / voc.VOC_ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    for split in ("train", "val", "trainval"):
        source = voc.VocFolder(str(tmp_path), split)
        assert list(source.ids) == EXPECTED_SPLITS[split]
    np.testing.assert_array_equal(source[0]["label"], expected_label(source.ids[0], "voc"))
    with pytest.raises(FileNotFoundError) as error:
        voc.VocFolder(str(tmp_path), "train_aug")
    message = str(error.value)
    assert voc.SBD_ARCHIVE in message and voc.SBD_URL in message
    assert os.path.join(str(tmp_path), "benchmark_RELEASE") in message


def test_missing_voc_folder_names_the_archive_and_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        voc.VocFolder(str(tmp_path), "train")
    message = str(error.value)
    assert voc.VOC_ARCHIVE in message and voc.VOC_URL in message
    assert voc_path(str(tmp_path)) in message and "VOCdevkit/" in message


def test_example_files_prefer_voc(root):
    image, label = voc.example_files(root, T_SBD_TRAIN[0])
    assert image == voc_path(root, "JPEGImages", f"{T_SBD_TRAIN[0]}.jpg")
    assert label == voc_path(root, "SegmentationClass", f"{T_SBD_TRAIN[0]}.png")
    image, label = voc.example_files(root, S_IMG_SBD_TRAIN[0])
    assert image == sbd_path(root, "img", f"{S_IMG_SBD_TRAIN[0]}.jpg")
    assert label == sbd_path(root, "cls", f"{S_IMG_SBD_TRAIN[0]}.mat")
    image, label = voc.example_files(root, S_IMG_VOC_VAL[0])
    assert image == voc_path(root, "JPEGImages", f"{S_IMG_VOC_VAL[0]}.jpg")
    assert label == sbd_path(root, "cls", f"{S_IMG_VOC_VAL[0]}.mat")
    with pytest.raises(FileNotFoundError, match="2099_000001"):
        voc.example_files(root, "2099_000001")


def test_label_decoders(root):
    for image_id in VOC_LABELED:
        label = voc.load_voc_label(voc_path(root, "SegmentationClass", f"{image_id}.png"))
        assert label.dtype == np.uint8 and (label == 255).any()
        np.testing.assert_array_equal(label, expected_label(image_id, "voc"))
    for image_id in SBD_LABELED:
        label = voc.load_sbd_label(sbd_path(root, "cls", f"{image_id}.mat"))
        assert label.dtype == np.uint8 and not (label == 255).any()
        np.testing.assert_array_equal(label, expected_label(image_id, "sbd"))


def test_folder_examples_come_from_the_right_files(root):
    source = voc.VocFolder(root, "train_aug")
    assert source.num_classes == 21 == len(source.class_names)
    assert source.class_names[15] == "person" and source.ignore_label == 255
    np.testing.assert_array_equal(source.palette, palettes.voc_palette())
    for index, image_id in enumerate(source.ids):
        example = source[index]
        label_source = "voc" if image_id in VOC_LABELED else "sbd"
        np.testing.assert_array_equal(example["label"], expected_label(image_id, label_source))
        assert example["image"].dtype == np.uint8
        assert example["image"].shape == example["label"].shape + (3,)
        mark = SBD_MARK if image_id in S_IMG_SBD_TRAIN else VOC_MARK
        want = expected_image(example["label"], mark).astype(np.int32)
        # JPEG: compare away from the edges; 11 grey levels separate neighbouring classes.
        diff = np.abs(example["image"].astype(np.int32) - want)
        assert diff.mean() < 2.0 and np.median(diff) <= 2, image_id


def test_tfds_builder_equals_folder(builder, root):
    assert builder.name == "voc_sbd"
    assert builder.info.disable_shuffling
    for split, ids in EXPECTED_SPLITS.items():
        folder = voc.VocFolder(root, split)
        data = builder.as_data_source(split)
        assert builder.info.splits[split].num_examples == len(data) == len(folder) == len(ids)
        for index, image_id in enumerate(ids):
            record, example = data[index], folder[index]
            assert record["image_id"] == image_id.encode()
            np.testing.assert_array_equal(record["image"], example["image"])
            assert record["label"].shape == example["label"].shape + (1,)
            np.testing.assert_array_equal(record["label"][..., 0], example["label"])


def test_tfds_without_archives_or_internet(archives, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from deeplab_jax.data import voc_tfds

    requested = []

    def no_internet(self, url):
        requested.append(url)
        raise ConnectionError(f"no internet for {url}")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_internet)
    manual = tmp_path / "manual"
    with pytest.raises(FileNotFoundError) as error:
        voc_tfds.prepare(data_dir=str(tmp_path / "data"), manual_dir=str(manual))
    message = str(error.value)
    for name in (voc.VOC_ARCHIVE, voc.VOC_URL, voc.SBD_ARCHIVE, voc.SBD_URL, str(manual)):
        assert name in message
    assert requested == [voc.VOC_URL]
    # Only the VOC archive there: it is used, and the SBD one is what is missing.
    manual.mkdir()
    os.symlink(archives / voc.VOC_ARCHIVE, manual / voc.VOC_ARCHIVE)
    requested.clear()
    with pytest.raises(FileNotFoundError, match="Cannot get benchmark.tgz"):
        voc_tfds.prepare(data_dir=str(tmp_path / "data"), manual_dir=str(manual))
    assert requested == [voc.SBD_URL]
    assert voc_tfds.VocSbd.MANUAL_DOWNLOAD_INSTRUCTIONS.count("http") == 2


def _one_example_root(root, label, image_size=None, label_file="png"):
    """A VOC root whose train split is one id with the given label."""
    image_id = "2007_000001"
    height, width = image_size or label.shape[:2]
    image = np.full((height, width, 3), 100, np.uint8)
    save_jpeg(voc_path(root, "JPEGImages", f"{image_id}.jpg"), image)
    for name, ids in (("train", [image_id]), ("val", []), ("trainval", [image_id])):
        write_list(voc_path(root, "ImageSets", "Segmentation", f"{name}.txt"), ids)
    if label_file == "png":
        path = voc_path(root, "SegmentationClass", f"{image_id}.png")
        if label.ndim == 3:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(label).save(path)
        else:
            save_palette_png(path, label)
    else:
        path = sbd_path(root, "cls", f"{image_id}.mat")
        save_gtcls(path, label)
    return voc.VocFolder(root, "train"), path


def test_label_value_21_is_refused(tmp_path):
    label = np.zeros((6, 8), np.uint8)
    label[2, 3] = 21
    source, path = _one_example_root(str(tmp_path / "png"), label)
    with pytest.raises(labels.LabelValueError, match=r"\[21\]") as error:
        source[0]
    assert path in str(error.value)
    source, path = _one_example_root(str(tmp_path / "mat"), label, label_file="mat")
    with pytest.raises(labels.LabelValueError, match=r"\[21\]") as error:
        source[0]
    assert path in str(error.value)


def test_rgb_label_png_is_refused(tmp_path):
    rgb = palettes.voc_palette()[np.ones((6, 8), np.uint8)]
    source, path = _one_example_root(str(tmp_path), rgb)
    with pytest.raises(labels.LabelValueError, match="RGB") as error:
        source[0]
    assert path in str(error.value)


def test_mat_without_gtcls_is_refused(tmp_path):
    path = str(tmp_path / "bad.mat")
    scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
    with pytest.raises(ValueError, match="GTcls") as error:
        voc.load_sbd_label(path)
    assert path in str(error.value)


def test_image_and_label_sizes_must_match(tmp_path):
    source, label_path = _one_example_root(str(tmp_path), np.zeros((6, 8), np.uint8),
                                           image_size=(7, 8))
    with pytest.raises(ValueError) as error:
        source[0]
    message = str(error.value)
    assert label_path in message and "2007_000001.jpg" in message
    assert "7x8" in message and "6x8" in message


def test_real_release_counts_are_checked(tmp_path):
    voc.check_split_size("train_aug", 10582, 1464)
    voc.check_split_size("train_aug", 7, 4)  # miniature: not checked
    with pytest.raises(ValueError) as error:
        voc.check_split_size("train_aug", 10581, 1464)
    message = str(error.value)
    assert "train_aug" in message and "10581" in message and "10582" in message
    assert voc.SBD_ARCHIVE in message
    with pytest.raises(ValueError, match=voc.VOC_ARCHIVE):
        voc.check_split_size("val", 1448, 1464)
    # Wired into split_ids: a real-sized train list with a too small SBD.
    root = str(tmp_path)
    train = [f"2007_{n:06d}" for n in range(1464)]
    val = [f"2008_{n:06d}" for n in range(3)]
    for name, ids in (("train", train), ("val", val), ("trainval", train + val)):
        write_list(voc_path(root, "ImageSets", "Segmentation", f"{name}.txt"), ids)
    write_list(sbd_path(root, "train.txt"), ["2009_000001"])
    write_list(sbd_path(root, "val.txt"), [])
    assert len(voc.split_ids(root, "train")) == 1464
    with pytest.raises(ValueError, match="1465 ids, expected 10582"):
        voc.split_ids(root, "train_aug")
    with pytest.raises(ValueError, match="'val' has 3 ids, expected 1449"):
        voc.split_ids(root, "val")


def test_tfds_from_extracted_folders_in_manual_dir(root, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from deeplab_jax.data import voc_tfds

    def no_internet(self, url):
        raise ConnectionError(f"no internet for {url}")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_internet)
    built = voc_tfds.prepare(data_dir=str(tmp_path), manual_dir=root)
    data = built.as_data_source("train_aug")
    assert [data[i]["image_id"] for i in range(len(data))] == [
        image_id.encode() for image_id in EXPECTED_SPLITS["train_aug"]]
