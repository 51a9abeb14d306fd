"""Cityscapes fine annotations (gtFine), 19 classes at 1024x2048, read from the extracted archives.

numpy and pillow only (no TensorFlow): the source a machine without TensorFlow trains from, and
the functions the TFDS builder (`cityscapes_tfds.py`) makes its examples with, so the two
never disagree. The two archives (cityscapes-dataset.com, after a free registration) have
the top folders leftImg8bit/ and gtFine/, extracted side by side into `root`:

  root/leftImg8bit/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
                                               (leftImg8bit_trainvaltest.zip)
  root/gtFine/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
                                               (gtFine_trainvaltest.zip; also
                                               _color.png, _instanceIds.png, _polygons.json)

Sources (the official scripts, mcordts/cityscapesScripts @0bcc4a7, "cityscapesScripts"
below): README.md L10-12 names the layout `{root}/{type}{video}/{split}/{city}/{city}_
{seq:0>6}_{frame:0>6}_{type}{ext}`; TFDS's own builder (tensorflow_datasets/datasets/
cityscapes/cityscapes_dataset_builder.py L54-59 and L78-84) reads the same two zips with
`leftImg8bit/` and `gtFine/` as their top folders.

Labels: the `_gtFine_labelIds.png` files are greyscale PNGs of the 34 label ids 0..33 (the
license plate's id -1 is never drawn: cityscapesScripts preparation/json2labelImg.py L69,
L92-93). They are mapped to the 19 train ids of the official table, cityscapesScripts
cityscapesscripts/helpers/labels.py L64-98 (road 7 -> 0 ... bicycle 33 -> 18); the 15 other
ids (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) are
ignored (255), as the official evaluation ignores them (`ignoreInEval`). The test split's
labels hold only ego vehicle, rectification border and unlabelled (README.md L44): all 255.

Splits: train 2975, val 500, test 1525 images (README.md L25), in sorted file-name order
(city, then sequence, then frame). The real sizes are enforced when the cities are
Cityscapes' own (`CITIES`): a partly extracted archive then fails loudly instead of training
on part of the data. Miniature folders with other city names (tests) are not checked;
`check_counts=True` / `False` forces the check on / off.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import image_io, labels, paired_files, palettes

# (name, label id in the labelIds PNGs, RGB colour) of the 19 classes, in train-id order:
# cityscapesScripts helpers/labels.py L71-97 (rows with a trainId other than 255).
CLASSES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)), ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)), ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)), ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)))
CLASS_NAMES = tuple(name for name, _, _ in CLASSES)
CLASS_COLORS = tuple(color for _, _, color in CLASSES)
NUM_CLASSES = 19
IGNORE_LABEL = 255
MAX_LABEL_ID = 33  # label ids 0..33 (labels.py L64-97)
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for train_id, (_, label_id, _) in enumerate(CLASSES)}
IGNORED_LABEL_IDS = tuple(sorted(set(range(MAX_LABEL_ID + 1)) - set(LABEL_ID_TO_TRAIN_ID)))
PALETTE = palettes.palette_from_colors(CLASS_COLORS)

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 2975, "val": 500, "test": 1525}
IMAGE_SIZE = (1024, 2048)  # (height, width) of every Cityscapes frame
# The cities of each split (the folders of leftImg8bit/{split}/): 18 + 3 + 6. Used only to
# recognise the real dataset; the test cities are from memory, not checked against the data.
CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt",
              "hamburg", "hanover", "jena", "krefeld", "monchengladbach", "strasbourg",
              "stuttgart", "tubingen", "ulm", "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}

IMAGE_ARCHIVE = "leftImg8bit_trainvaltest.zip"
LABEL_ARCHIVE = "gtFine_trainvaltest.zip"
IMAGE_DIR = "leftImg8bit"  # the top folder of IMAGE_ARCHIVE
LABEL_DIR = "gtFine"  # the top folder of LABEL_ARCHIVE
DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

LAYOUT = (
    f"ROOT/{IMAGE_DIR}/SPLIT/CITY/CITY_SEQ_FRAME{IMAGE_SUFFIX} (from {IMAGE_ARCHIVE}) and "
    f"ROOT/{LABEL_DIR}/SPLIT/CITY/CITY_SEQ_FRAME{LABEL_SUFFIX} (from {LABEL_ARCHIVE}), both "
    f"downloaded from {DOWNLOAD_URL} (free registration) and extracted into ROOT")


def _require_folder(path: Path, archive: str) -> None:
    if not path.is_dir():
        raise errors.MissingFileError(
            f"{path}: no such folder. It comes from {archive} ({DOWNLOAD_URL}, after "
            f"logging in): extract it into the data folder (--config.data.folder, the folder "
            f"holding {IMAGE_DIR}/ and {LABEL_DIR}/). Expected {LAYOUT}.")


def _files_by_id(split_dir: Path, suffix: str) -> dict[str, Path]:
    """{image id: path} of the `*{suffix}` files in the city folders of `split_dir`."""
    found: dict[str, Path] = {}
    for city_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in city_dir.iterdir():
            if path.name.endswith(suffix) and path.is_file():
                found[path.name[:-len(suffix)]] = path
    return found


def is_real_cityscapes(ids) -> bool:
    """Whether image ids name Cityscapes' own cities (see CITIES), not a miniature's."""
    cities = {city for names in CITIES.values() for city in names}
    return any(str(image_id).rsplit("_", 2)[0] in cities for image_id in ids)


def split_files(root: str | os.PathLike, split: str, check_counts: bool | None = None,
                label_root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(image path, labelIds path) of every example of `split`, sorted by file name.

    Args:
      root: the folder holding the extracted leftImg8bit/ (and gtFine/).
      split: 'train', 'val' or 'test'.
      check_counts: None: require SPLIT_SIZES[split] examples when the cities are
        Cityscapes' own; True: always; False: never.
      label_root: the folder holding the extracted gtFine/, if not `root` (the TFDS builder
        extracts the two archives into two folders).

    Raises:
      MissingFileError (a FileNotFoundError): a missing folder (naming its archive), images
        without their labelIds file or labelIds files without their image (naming a few).
      ConfigError (a ValueError): an unknown split.
      DataError (a ValueError): an empty split, or the wrong number of examples.
    """
    if split not in SPLITS:
        raise errors.ConfigError(f"Unknown Cityscapes split {split!r}; known: "
                                 f"{', '.join(SPLITS)}. Set --config.data.train_split / "
                                 "--config.data.eval_split to one of them.")
    root = Path(root).expanduser()
    label_root = root if label_root is None else Path(label_root).expanduser()
    image_dir, label_dir = root / IMAGE_DIR / split, label_root / LABEL_DIR / split
    _require_folder(image_dir, IMAGE_ARCHIVE)
    _require_folder(label_dir, LABEL_ARCHIVE)
    images = _files_by_id(image_dir, IMAGE_SUFFIX)
    label_paths = _files_by_id(label_dir, LABEL_SUFFIX)
    unlabelled = sorted(set(images) - set(label_paths))
    orphans = sorted(set(label_paths) - set(images))
    if unlabelled or orphans:
        raise errors.MissingFileError(
            f"Cityscapes {split!r}: {len(unlabelled)} images in {image_dir} without a "
            f"{LABEL_SUFFIX} file in {label_dir} (e.g. {unlabelled[:3]}), {len(orphans)} "
            f"labels without an image (e.g. {orphans[:3]}). One of {IMAGE_ARCHIVE} and "
            f"{LABEL_ARCHIVE} may be partly extracted: extract both again. Expected {LAYOUT}.")
    if not images:
        raise errors.DataError(f"{image_dir}: the {split!r} split has no *{IMAGE_SUFFIX} images "
                               f"in its city folders: extract {IMAGE_ARCHIVE} (and "
                               f"{LABEL_ARCHIVE}) again. Expected {LAYOUT}.")
    ids = sorted(images)
    if check_counts is None:
        check_counts = is_real_cityscapes(ids)
    if check_counts and len(ids) != SPLIT_SIZES[split]:
        raise errors.DataError(
            f"{image_dir}: {len(ids)} examples in the {split!r} split of the real Cityscapes, "
            f"expected {SPLIT_SIZES[split]} (SPLIT_SIZES). {IMAGE_ARCHIVE} or {LABEL_ARCHIVE} "
            "looks partly extracted: extract it again (from Python, check_counts=False reads "
            "a deliberate subset).")
    return [(str(images[i]), str(label_paths[i])) for i in ids]


def load_label(path: str | os.PathLike) -> np.ndarray:
    """A `_gtFine_labelIds.png` as uint8 [h, w] train ids 0..18, other label ids 255.

    Raises:
      LabelValueError: naming the file: not a single-channel PNG (a `_color.png`, say), or
        a value above 33 (not a labelIds file: `_instanceIds.png` or a train-id map).
    """
    path = str(path)
    label_ids = labels.load_index_png(path)
    if label_ids.size and label_ids.max() > MAX_LABEL_ID:
        bad = np.unique(label_ids[label_ids > MAX_LABEL_ID])
        raise labels.LabelValueError(
            f"{path}: values {bad.tolist()[:10]} are not Cityscapes label ids (0..{MAX_LABEL_ID}, "
            "cityscapesScripts helpers/labels.py). Read the *_gtFine_labelIds.png files of "
            f"{LABEL_ARCHIVE}, not *_labelTrainIds.png (already train ids, 255 for void) or "
            "*_instanceIds.png.")
    return labels.map_label_values(label_ids, LABEL_ID_TO_TRAIN_ID, IGNORED_LABEL_IDS,
                                   where=path, ignore_label=IGNORE_LABEL)


def load_example(image_path: str | os.PathLike,
                 label_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{'image': uint8 [h, w, 3], 'label': uint8 [h, w]} of one file pair.

    Raises:
      SizeMismatchError: the image and label sizes differ, naming both files and sizes; the
        errors of `image_io.load_image` and `load_label`.
    """
    image = image_io.load_image(str(image_path))
    label = load_label(label_path)
    labels.check_same_size(image, label, str(image_path), str(label_path))
    return {"image": image, "label": label}


def image_id(image_path: str | os.PathLike) -> str:
    """'aachen_000000_000019' of '.../aachen_000000_000019_leftImg8bit.png'."""
    return Path(image_path).name[:-len(IMAGE_SUFFIX)]


class CityscapesFolder(paired_files.PairedFiles):
    """A Cityscapes split read from the extracted archives, decoded lazily per item.

    `source[i]` is {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} with train ids 0..18 and
    255, in sorted file-name order; `ids` are the image ids ('aachen_000000_000019').

    Args:
      root: the folder holding the extracted leftImg8bit/ and gtFine/.
      split: 'train', 'val' or 'test' (test labels are all 255).
      check_counts: see `split_files`.
    """

    dataset = "Cityscapes"
    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_label = IGNORE_LABEL
    load_example = staticmethod(load_example)

    def __init__(self, root: str | os.PathLike, split: str, check_counts: bool | None = None):
        root = Path(root).expanduser()
        files = split_files(root, split, check_counts=check_counts)
        super().__init__(root, split, files, PALETTE, [image_id(image) for image, _ in files])


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

TFDS_BUILDER = "deeplab_jax.data.cityscapes_tfds"


def dataset_info(data_config) -> dict:
    del data_config
    return {"class_names": CLASS_NAMES, "palette": PALETTE, "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> CityscapesFolder:
    """The folder holding the extracted leftImg8bit/ and gtFine/."""
    return CityscapesFolder(data_config.folder, split)
