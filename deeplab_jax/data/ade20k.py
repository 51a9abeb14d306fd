"""ADE20K SceneParsing (ADEChallengeData2016), 150 classes, read from the extracted archive.

numpy and pillow only (no TensorFlow): the source a machine without TensorFlow trains from, and
the functions the TFDS builder (`ade20k_tfds.py`) makes its examples with. The public archive
ADEChallengeData2016.zip (SOURCE_URL) extracts to:

  ADEChallengeData2016/images/training/ADE_train_00000001.jpg ... (20210 images)
  ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ... (2000 images)
  ADEChallengeData2016/annotations/{training,validation}/<same name>.png
  ADEChallengeData2016/objectInfo150.txt, sceneCategories.txt

Images vary in size (a few hundred to ~2000 pixels a side): `config.data.resize_to_fit`
(`rescale.ResizedToFit`) brings them to a fixed canvas. Annotations are greyscale PNGs of
values 0..150: 0 is "other objects" (not one of the 150 classes) and is ignored (255);
1..150 become classes 0..149, mmsegmentation's `reduce_zero_label=True` (open-mmlab/
mmsegmentation @b05a26e mmseg/datasets/ade.py L10-11 and L86).

Class names and colours: mmsegmentation's ADE20KDataset.METAINFO, mmseg/datasets/ade.py
L16-43 (classes) and L44-81 (palette), copied here so that predictions need no data; its
'bed ' (with a stray space) is written 'bed'. They are the short forms of the names in the
archive's objectInfo150.txt ('windowpane' for 'windowpane, window', ...).

Splits: train = images/training (20210), val = images/validation (2000), in sorted file-name
order. The real sizes are enforced when the split's files carry ADE20K's own names
(ADE_train_/ADE_val_ + 8 digits) and there are more than MINIATURE_MAX_FILES of them: a
partly extracted archive then fails loudly. Miniature folders (tests) are not checked;
`check_counts=True` / `False` forces the check on / off.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import image_io, labels, paired_files, palettes

# mmseg/datasets/ade.py L16-43, in class-index order (annotation value - 1).
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag")
# mmseg/datasets/ade.py L44-81, one RGB colour per class.
CLASS_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255))
NUM_CLASSES = 150
IGNORE_LABEL = 255
OTHER_VALUE = 0  # "other objects" in the annotation PNGs: ignored
VALUE_TO_CLASS = {value: value - 1 for value in range(1, NUM_CLASSES + 1)}
PALETTE = palettes.palette_from_colors(CLASS_COLORS)

SPLIT_FOLDERS = {"train": "training", "val": "validation"}
SPLIT_SIZES = {"train": 20210, "val": 2000}
FILE_PATTERNS = {"train": re.compile(r"ADE_train_\d{8}"), "val": re.compile(r"ADE_val_\d{8}")}
MINIATURE_MAX_FILES = 100  # a split with more files of ADE20K's names is taken as the real one

ARCHIVE = "ADEChallengeData2016.zip"
SOURCE_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
TOP_DIR = "ADEChallengeData2016"  # the archive's top folder
IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"

LAYOUT = (
    f"ROOT/{TOP_DIR}/images/{{training,validation}}/ADE_{{train,val}}_NNNNNNNN.jpg and "
    f"ROOT/{TOP_DIR}/annotations/{{training,validation}}/ADE_{{train,val}}_NNNNNNNN.png "
    f"(ROOT may also be {TOP_DIR}/ itself): {ARCHIVE} from {SOURCE_URL}, extracted into ROOT")


def _is_ade_folder(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "annotations").is_dir()


def find_root(root: str | os.PathLike) -> Path:
    """The ADEChallengeData2016 folder: `root/ADEChallengeData2016`, or `root` itself.

    Raises:
      MissingFileError (a FileNotFoundError): neither holds images/ and annotations/, naming
        both, the archive and its URL.
    """
    root = Path(root).expanduser()
    for candidate in (root / TOP_DIR, root):
        if _is_ade_folder(candidate):
            return candidate
    raise errors.MissingFileError(
        f"No ADE20K folder at {root}: neither {root / TOP_DIR} nor {root} holds images/ and "
        f"annotations/. Download {ARCHIVE} ({SOURCE_URL}) and extract it there, or set "
        f"--config.data.folder to the folder holding {TOP_DIR}/. Expected {LAYOUT}.")


def _files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    return {path.stem: path for path in folder.iterdir()
            if path.suffix.lower() == suffix and path.is_file()}


def is_real_ade20k(ids, split: str) -> bool:
    """Whether `split`'s file stems look like the real release's (see the module docstring)."""
    ids = list(ids)
    pattern = FILE_PATTERNS.get(split)
    return (pattern is not None and len(ids) > MINIATURE_MAX_FILES
            and all(pattern.fullmatch(str(name)) for name in ids))


def split_files(root: str | os.PathLike, split: str,
                check_counts: bool | None = None) -> list[tuple[str, str]]:
    """(image path, annotation path) of every example of `split`, sorted by file name.

    Args:
      root: the ADEChallengeData2016 folder or the folder holding it.
      split: 'train' (images/training) or 'val' (images/validation).
      check_counts: None: require SPLIT_SIZES[split] examples when the files look like the
        real release's; True: always; False: never.

    Raises:
      MissingFileError (a FileNotFoundError): no ADE20K folder, a missing split folder, or
        images and annotations that do not pair by file name (naming a few).
      ConfigError (a ValueError): an unknown split.
      DataError (a ValueError): an empty split, or the wrong number of examples.
    """
    if split not in SPLIT_FOLDERS:
        raise errors.ConfigError(
            f"Unknown ADE20K split {split!r}; known: {', '.join(SPLIT_FOLDERS)} (the archive's "
            f"{', '.join(SPLIT_FOLDERS.values())}). Set --config.data.train_split / "
            "--config.data.eval_split to one of them.")
    folder = find_root(root)
    image_dir = folder / "images" / SPLIT_FOLDERS[split]
    label_dir = folder / "annotations" / SPLIT_FOLDERS[split]
    for path in (image_dir, label_dir):
        if not path.is_dir():
            raise errors.MissingFileError(f"{path}: no such folder. {ARCHIVE} may be partly "
                                          f"extracted: extract it again. Expected {LAYOUT}.")
    images = _files_by_stem(image_dir, IMAGE_SUFFIX)
    label_paths = _files_by_stem(label_dir, LABEL_SUFFIX)
    unlabelled = sorted(set(images) - set(label_paths))
    orphans = sorted(set(label_paths) - set(images))
    if unlabelled or orphans:
        raise errors.MissingFileError(
            f"ADE20K {split!r}: {len(unlabelled)} images in {image_dir} without an annotation "
            f"in {label_dir} (e.g. {unlabelled[:3]}), {len(orphans)} annotations without an "
            f"image (e.g. {orphans[:3]}). {ARCHIVE} may be partly extracted: extract it "
            f"again. Expected {LAYOUT}.")
    if not images:
        raise errors.DataError(f"{image_dir}: the {split!r} split has no *{IMAGE_SUFFIX} images; "
                               f"{ARCHIVE} may be partly extracted: extract it again. Expected "
                               f"{LAYOUT}.")
    stems = sorted(images)
    if check_counts is None:
        check_counts = is_real_ade20k(stems, split)
    if check_counts and len(stems) != SPLIT_SIZES[split]:
        raise errors.DataError(
            f"{image_dir}: {len(stems)} examples in the {split!r} split of the real ADE20K, "
            f"expected {SPLIT_SIZES[split]} (SPLIT_SIZES). {ARCHIVE} looks partly extracted: "
            "extract it again (from Python, check_counts=False reads a deliberate subset).")
    return [(str(images[stem]), str(label_paths[stem])) for stem in stems]


def load_label(path: str | os.PathLike) -> np.ndarray:
    """An annotation PNG as uint8 [h, w] classes 0..149 (value - 1), "other" (0) as 255.

    Raises:
      LabelValueError: naming the file: not a single-channel PNG, or a value above 150.
    """
    path = str(path)
    values = labels.load_index_png(path)
    if values.size and values.max() > NUM_CLASSES:
        bad = np.unique(values[values > NUM_CLASSES])
        raise labels.LabelValueError(
            f"{path}: values {bad.tolist()[:10]} are not ADE20K SceneParsing annotation values "
            f"(0 = other, 1..{NUM_CLASSES} = the classes). Read the annotations/ PNGs of "
            f"{ARCHIVE}, not the full ADE20K release's *_seg.png (colour-coded) files.")
    return labels.map_label_values(values, VALUE_TO_CLASS, (OTHER_VALUE,), where=path,
                                   ignore_label=IGNORE_LABEL)


def load_example(image_path: str | os.PathLike,
                 label_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{'image': uint8 [h, w, 3], 'label': uint8 [h, w]} of one file pair.

    Raises:
      SizeMismatchError: the image and label sizes differ, naming both files and sizes; the
        errors of `image_io.load_image` (greyscale JPEGs become RGB) and `load_label`.
    """
    image = image_io.load_image(str(image_path))
    label = load_label(label_path)
    labels.check_same_size(image, label, str(image_path), str(label_path))
    return {"image": image, "label": label}


class ADE20KFolder(paired_files.PairedFiles):
    """An ADE20K SceneParsing split read from the extracted archive, decoded lazily per item.

    `source[i]` is {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} with classes 0..149 and
    255, in sorted file-name order; `ids` are the file stems ('ADE_train_00000001').

    Args:
      root: the ADEChallengeData2016 folder or the folder holding it.
      split: 'train' or 'val'.
      check_counts: see `split_files`.
    """

    dataset = "ADE20K"
    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_label = IGNORE_LABEL
    load_example = staticmethod(load_example)

    def __init__(self, root: str | os.PathLike, split: str, check_counts: bool | None = None):
        root = find_root(root)
        super().__init__(root, split, split_files(root, split, check_counts=check_counts), PALETTE)


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

TFDS_BUILDER = "deeplab_jax.data.ade20k_tfds"


def dataset_info(data_config) -> dict:
    del data_config
    return {"class_names": CLASS_NAMES, "palette": PALETTE, "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> ADE20KFolder:
    """The folder holding the extracted ADEChallengeData2016/ (or that folder itself)."""
    return ADE20KFolder(data_config.folder, split)
