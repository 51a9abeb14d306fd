"""PASCAL VOC 2012 segmentation with the SBD extra annotations ("train_aug"), read from folders.

numpy, pillow and scipy only (no TensorFlow): this is the source a machine without
TensorFlow trains from, and the functions the TFDS builder (`voc_tfds.py`) produces its
examples with, so the two can never disagree.

Layout of a root folder holding both extracted archives:

  root/VOCdevkit/VOC2012/                  (VOCtrainval_11-May-2012.tar)
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png             palette PNG, index 0..20, 255 on object boundaries
    ImageSets/Segmentation/{train,val,trainval}.txt
  root/benchmark_RELEASE/dataset/          (benchmark.tgz, SBD; only train_aug needs it)
    img/<id>.jpg
    cls/<id>.mat                           MATLAB struct GTcls: Segmentation (0..20, no 255),
                                           Boundaries, CategoriesPresent
    train.txt, val.txt

Splits: train (1464), val (1449), trainval (2913) from VOC's lists; train_aug (10582) =
(SBD train + SBD val + VOC train) - VOC val. An example's label is VOC's PNG when VOC has
one (VOC's annotations are the reference and carry the 255 boundaries), else SBD's .mat;
its image is VOC's JPEG when there is one, else SBD's.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import scipy.io

from deeplab_jax import errors
from deeplab_jax.data import palettes
from deeplab_jax.data import image_io, labels

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")
NUM_CLASSES = 21
IGNORE_LABEL = 255
SPLITS = ("train", "val", "trainval", "train_aug")
SPLIT_SIZES = {"train": 1464, "val": 1449, "trainval": 2913, "train_aug": 10582}

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"
SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
           "semantic_contours/benchmark.tgz")
VOC_DIR = "VOCdevkit/VOC2012"
SBD_DIR = "benchmark_RELEASE/dataset"


def _voc_dir(root: str) -> str:
    return os.path.join(os.fspath(root), *VOC_DIR.split("/"))


def _sbd_dir(root: str) -> str:
    return os.path.join(os.fspath(root), *SBD_DIR.split("/"))


def _require(path: str, archive: str, url: str, top: str) -> None:
    if not os.path.exists(path):
        raise errors.MissingFileError(
            f"{path} does not exist. It comes from the archive {archive} ({url}): download it "
            f"and extract it into the data folder, so that the folder contains {top}/ "
            f"(--config.data.folder is the folder holding {top}/, not {top}/ itself). Every "
            f"split needs VOCdevkit/ (from {VOC_ARCHIVE}); train_aug also needs "
            f"benchmark_RELEASE/ (from {SBD_ARCHIVE}).")


def _read_list(path: str, archive: str, url: str, top: str) -> list[str]:
    _require(path, archive, url, top)
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _voc_list(root: str, name: str) -> list[str]:
    path = os.path.join(_voc_dir(root), "ImageSets", "Segmentation", f"{name}.txt")
    return _read_list(path, VOC_ARCHIVE, VOC_URL, "VOCdevkit")


def _sbd_list(sbd_root: str, name: str) -> list[str]:
    return _read_list(os.path.join(_sbd_dir(sbd_root), f"{name}.txt"), SBD_ARCHIVE, SBD_URL,
                      "benchmark_RELEASE")


def check_split_size(split: str, num_ids: int, num_voc_train: int) -> None:
    """Refuses a split of the wrong size when the VOC lists are the real release.

    The VOC lists are taken as the real release when the train list has exactly
    SPLIT_SIZES['train'] ids; other counts (miniature test archives) are not checked.

    Raises:
      DataError (a ValueError): naming the split, the counts found and expected, and the
        archive that may be incomplete.
    """
    if num_voc_train != SPLIT_SIZES["train"] or num_ids == SPLIT_SIZES[split]:
        return
    archives = (f"{VOC_ARCHIVE} or {SBD_ARCHIVE}" if split == "train_aug" else VOC_ARCHIVE)
    raise errors.DataError(
        f"VOC split {split!r} has {num_ids} ids, expected {SPLIT_SIZES[split]} (the VOC train "
        f"list is the real release's, {SPLIT_SIZES['train']} ids). The extracted {archives} "
        "may be incomplete or of another release: extract the archives again.")


def split_ids(root: str, split: str, sbd_root: str | None = None) -> list[str]:
    """The sorted image ids of `split`.

    Args:
      root: folder containing the extracted VOCdevkit/.
      split: 'train', 'val', 'trainval' or 'train_aug'.
      sbd_root: folder containing the extracted benchmark_RELEASE/ (only read for
        train_aug); defaults to `root`.

    Raises:
      MissingFileError: a list file is missing, naming it and the archive to extract.
      ConfigError: an unknown split. DataError: a real-release split of the wrong size.
    """
    if split not in SPLITS:
        raise errors.ConfigError(f"Unknown VOC split {split!r}; known: {', '.join(SPLITS)}. Set "
                                 "--config.data.train_split / --config.data.eval_split to one "
                                 "of them.")
    voc_train = _voc_list(root, "train")
    if split == "train":
        ids = set(voc_train)
    elif split == "train_aug":
        sbd_root = root if sbd_root is None else sbd_root
        ids = ((set(_sbd_list(sbd_root, "train")) | set(_sbd_list(sbd_root, "val"))
                | set(voc_train)) - set(_voc_list(root, "val")))
    else:
        ids = set(_voc_list(root, split))
    ids = sorted(ids)
    check_split_size(split, len(ids), len(set(voc_train)))
    return ids


def example_files(root: str, image_id: str, sbd_root: str | None = None) -> tuple[str, str]:
    """(image path, label path) of `image_id`: VOC's files when they exist, else SBD's.

    The label is VOC's SegmentationClass/<id>.png when it exists, else SBD's cls/<id>.mat;
    the image is VOC's JPEGImages/<id>.jpg when it exists, else SBD's img/<id>.jpg.

    Raises:
      FileNotFoundError: neither archive has the file, naming both paths tried.
    """
    sbd = _sbd_dir(root if sbd_root is None else sbd_root)
    voc = _voc_dir(root)
    found = []
    for kind, candidates in (
            ("image", (os.path.join(voc, "JPEGImages", f"{image_id}.jpg"),
                       os.path.join(sbd, "img", f"{image_id}.jpg"))),
            ("label", (os.path.join(voc, "SegmentationClass", f"{image_id}.png"),
                       os.path.join(sbd, "cls", f"{image_id}.mat")))):
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise errors.MissingFileError(
                f"No {kind} file for VOC id {image_id!r}: neither {candidates[0]} nor "
                f"{candidates[1]} exists. The extracted {VOC_ARCHIVE} or {SBD_ARCHIVE} may "
                "be incomplete: extract both again.")
        found.append(path)
    return found[0], found[1]


def load_voc_label(path: str) -> np.ndarray:
    """A VOC SegmentationClass PNG's palette indices, uint8 [h, w], values checked."""
    return labels.check_label_values(labels.load_index_png(path), NUM_CLASSES, IGNORE_LABEL,
                                     where=path)


def load_sbd_label(path: str) -> np.ndarray:
    """An SBD cls/<id>.mat's GTcls.Segmentation, uint8 [h, w], values checked.

    Raises:
      DataError (a ValueError): the file is not a readable .mat with a GTcls struct holding
        a 2-D integer Segmentation map (naming the file).
      LabelValueError: values outside 0..20 and 255.
    """
    expected = ("a MATLAB file with a struct GTcls whose field Segmentation is a 2-D class "
                "map (SBD's benchmark_RELEASE/dataset/cls/<id>.mat). The file is damaged or not "
                f"SBD's: extract {SBD_ARCHIVE} again")
    try:
        mat = scipy.io.loadmat(path, variable_names=["GTcls"])
    except (OSError, ValueError, NotImplementedError, TypeError) as error:
        raise errors.DataError(
            f"Cannot read the SBD label {path}: {error}; expected {expected}.") from error
    gt = mat.get("GTcls")
    if (not isinstance(gt, np.ndarray) or gt.dtype.names is None
            or "Segmentation" not in gt.dtype.names or gt.size != 1):
        raise errors.DataError(f"{path}: no GTcls struct with a Segmentation field; expected "
                               f"{expected}.")
    segmentation = np.asarray(gt["Segmentation"].flat[0])
    if (segmentation.ndim != 2 or segmentation.dtype.kind not in "uif"
            or (segmentation.dtype.kind == "f"
                and not np.array_equal(segmentation, np.round(segmentation)))
            or (segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255))):
        raise errors.DataError(f"{path}: GTcls.Segmentation has shape {segmentation.shape} and "
                               f"dtype {segmentation.dtype}, not integer values 0..255; "
                               f"expected {expected}.")
    label = segmentation.astype(np.uint8)
    return labels.check_label_values(label, NUM_CLASSES, IGNORE_LABEL, where=path)


def load_label(path: str) -> np.ndarray:
    """A label file of either archive (.png from VOC, .mat from SBD), uint8 [h, w]."""
    return load_sbd_label(path) if path.endswith(".mat") else load_voc_label(path)


def load_example(root: str, image_id: str, sbd_root: str | None = None) -> dict[str, np.ndarray]:
    """{'image': uint8 [h, w, 3], 'label': uint8 [h, w]} of `image_id`.

    Raises:
      SizeMismatchError (a ValueError): image and label differ in size (naming both files
        and sizes).
    """
    image_path, label_path = example_files(root, image_id, sbd_root)
    image = image_io.load_image(image_path)
    label = load_label(label_path)
    labels.check_same_size(image, label, image_path, label_path)
    return {"image": image, "label": label}


class VocFolder:
    """A VOC 2012 (+ SBD) split read from the extracted archives, one example at a time.

    `source[i]` is {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} of `ids[i]` (sorted).
    """

    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_label = IGNORE_LABEL

    def __init__(self, root: str, split: str, sbd_root: str | None = None):
        root = os.path.expanduser(os.fspath(root))
        _require(_voc_dir(root), VOC_ARCHIVE, VOC_URL, "VOCdevkit")
        self.sbd_root = root if sbd_root is None else os.path.expanduser(os.fspath(sbd_root))
        if split == "train_aug":
            _require(_sbd_dir(self.sbd_root), SBD_ARCHIVE, SBD_URL, "benchmark_RELEASE")
        self.root = root
        self.split = split
        self.palette = palettes.voc_palette()
        self.ids: Sequence[str] = tuple(split_ids(root, split, self.sbd_root))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return load_example(self.root, self.ids[index], self.sbd_root)

    def __repr__(self) -> str:
        return f"VocFolder({self.root!r}, {self.split!r}, {len(self)} examples)"


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

TFDS_BUILDER = "deeplab_jax.data.voc_tfds"


def dataset_info(data_config) -> dict:
    del data_config
    return {"class_names": CLASS_NAMES, "palette": palettes.voc_palette(),
            "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> VocFolder:
    """A folder holding the extracted VOCdevkit/ and benchmark_RELEASE/."""
    return VocFolder(data_config.folder, split)
