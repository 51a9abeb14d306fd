"""Your own data, described by data: a folder, its `dataset.json`, and no Python.

    python -m deeplab_jax.data.check --config=configs/custom.py --config.data.folder=DIR
    python -m deeplab_jax.main --config=configs/custom.py --config.data.folder=DIR --workdir=RUN

The folder holds `dataset.json` and, for each split, either
- `SPLIT/images/` and `SPLIT/labels/`, paired by file name (`a.jpg` with `a.png`), or
- `SPLIT.txt`, one `image label` pair of paths (relative to the folder) per line.

`dataset.json` (only `classes` is required):

    {
      "classes": ["background", "road", "car"],
      "label_format": "index",              // "index" (default) or "color"
      "colors": [[0, 0, 0], [128, 64, 128], [0, 0, 142]],
      "label_values": [0, 1, 2],            // index labels: the value(s) of each class
      "ignore_values": [255],               // index labels: values that are ignored
      "ignore_colors": [[255, 255, 255]],   // colour labels: colours that are ignored
      "splits": {"train": "train", "val": "val"}   // split -> folder or list file
    }

- Index labels (the default) are single-channel PNGs (palette 'P' or greyscale 'L') whose
  pixel values are classes: class i is the value `label_values[i]` (default i; a list of
  values maps several to one class); `ignore_values` (default [255]) are not trained on and
  not scored; any other value is an error naming the file.
- Colour labels (`"label_format": "color"`) are RGB PNGs: class i is the colour
  `colors[i]`; `ignore_colors` are ignored; any other colour is an error naming the file
  and the colour (the most common way a dataset goes wrong: "my predictions are all black").
- `colors` also draws predictions (default: VOC's colour map).
- `splits` (default: every `SPLIT/` folder with `images/` and `labels/`, and every
  `SPLIT.txt`) names where each split is; `config.data.train_split` / `eval_split` pick two.

Every problem of this description is checked where training reads the data (this file and
`labels.py`), and `python -m deeplab_jax.data.check` runs the same reading over every file
first, reporting each kind of problem with its count and first file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import image_io, labels
# The description of a folder (`dataset.json`) is its own file; its names are this module's
# too, where the loaders and the checker have always found them.
from deeplab_jax.data.custom_description import (  # pylint: disable=unused-import
    IGNORE_LABEL, METADATA_FILE, DatasetDescriptionError, Description)


TFDS_BUILDER = None  # read from its folder only
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


class PairingError(errors.MissingFileError):
    """Images without labels or labels without images; the message counts them."""

    def __init__(self, message: str, unlabelled: Sequence[str], orphans: Sequence[str]):
        super().__init__(message)
        self.unlabelled, self.orphans = list(unlabelled), list(orphans)




def split_pairs(description: Description, split: str, *, strict: bool = True
                ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(image, label) paths of `split`, in sorted order, and the unpaired files.

    Returns:
      (pairs, images without a label, labels without an image).

    Raises:
      PairingError: with `strict`, when any file is unpaired (naming counts and examples).
      MissingFileError: no such split, or (with `strict`) an empty one.
      DataError (a ValueError, as before): a list file's line that is not 'image label';
        two files of one name.
    """
    location = description.split_location(split)
    if location.suffix == ".txt":
        pairs = []
        for number, line in enumerate(location.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entries = line.split()
            if len(entries) != 2:
                raise errors.DataError(
                    f"{location}:{number}: expected 'image label', got {line!r}. Write one "
                    f"image path and one label path per line, relative to {description.folder}"
                    ", separated by a space (rename files whose paths hold spaces).")
            pair = tuple(str(description.folder / entry) for entry in entries)
            pairs.append(pair)
        unlabelled = [image for image, label in pairs if not os.path.isfile(label)]
        missing = [image for image, _ in pairs if not os.path.isfile(image)]
        pairs = [(i, l) for i, l in pairs if os.path.isfile(i) and os.path.isfile(l)]
        orphans = missing  # listed images that do not exist
    else:
        images = _by_stem(location / "images", IMAGE_SUFFIXES)
        label_files = _by_stem(location / "labels", LABEL_SUFFIXES)
        pairs = [(images[stem], label_files[stem]) for stem in sorted(images)
                 if stem in label_files]
        unlabelled = sorted(images[stem] for stem in set(images) - set(label_files))
        orphans = sorted(label_files[stem] for stem in set(label_files) - set(images))
    if strict and (unlabelled or orphans):
        fix = (f"Correct or remove those lines of {location}" if location.suffix == ".txt" else
               f"Give each image in {location / 'images'} a label of the same name in "
               f"{location / 'labels'} (a.jpg with a.png), or move the unpaired files out")
        raise PairingError(
            f"The {split!r} split of {description.folder} does not pair up: {len(unlabelled)} "
            f"image(s) without a label (first: {unlabelled[:1]}), {len(orphans)} label(s) "
            f"without an image or listed images missing (first: {orphans[:1]}). {fix}; "
            "python -m deeplab_jax.data.check lists them all.", unlabelled, orphans)
    if strict and not pairs:
        fill = ("list its 'image label' pairs there" if location.suffix == ".txt" else
                f"put its images ({', '.join(IMAGE_SUFFIXES)}) in images/ and their labels "
                "of the same names in labels/")
        raise errors.MissingFileError(
            f"The {split!r} split of {description.folder} ({location}) has no examples: "
            f"{fill}.")
    return pairs, unlabelled, orphans


def _by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, str]:
    if not folder.is_dir():
        raise errors.MissingFileError(
            f"{folder}: no such folder. A split folder holds images/ and labels/, paired by "
            f"file name: create {folder.name}/ in {folder.parent}, or list the split's "
            "'image label' pairs in a .txt file instead (see deeplab_jax/data/custom.py).")
    files: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise errors.DataError(
                    f"Two files named {path.stem!r} in {folder}: {Path(files[path.stem]).name} "
                    f"and {path.name}. Files pair by name without the extension: rename or "
                    "remove one of them.")
            files[path.stem] = str(path)
    return files


def load_label(description: Description, path: str) -> np.ndarray:
    """A label file as uint8 [h, w] class indices, ignored pixels 255.

    Raises:
      LabelValueError / LabelColorError: naming the file and the values or colours that are
        neither a class nor ignored.
      LabelReadError / ImageReadError: the file cannot be read.
    """
    if description.label_format == "color":
        with image_io.opened(path) as image:
            rgb = image_io.to_rgb_uint8(image)
        return labels.decode_color_label(rgb, description.colors, description.ignore_colors,
                                         where=path)
    return labels.map_label_values(labels.load_index_png(path), description.value_to_class,
                                   description.ignore_values, where=path)


def load_example(description: Description, image_path: str, label_path: str
                 ) -> dict[str, np.ndarray]:
    image = image_io.load_image(image_path)
    label = load_label(description, label_path)
    labels.check_same_size(image, label, image_path, label_path)
    return {"image": image, "label": label}


class CustomFolder:
    """A split of a custom dataset (module docstring), decoded lazily per item."""

    ignore_label = IGNORE_LABEL

    def __init__(self, folder: str | os.PathLike, split: str):
        description = Description(folder)
        self._set(description, split, split_pairs(description, split)[0])

    @classmethod
    def from_pairs(cls, description: Description, split: str,
                   pairs: Sequence[tuple[str, str]]) -> "CustomFolder":
        """The split made of `pairs` (e.g. the paired part of a split that does not pair up,
        for `data/check.py`)."""
        source = cls.__new__(cls)
        source._set(description, split, pairs)
        return source

    def _set(self, description: Description, split: str,
             pairs: Sequence[tuple[str, str]]) -> None:
        self.description, self.split, self.files = description, split, list(pairs)
        self.class_names = self.description.class_names
        self.num_classes = len(self.class_names)
        self.palette = self.description.palette
        self.ids = tuple(Path(image).stem for image, _ in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return load_example(self.description, *self.files[int(index)])

    def __repr__(self) -> str:
        return f"CustomFolder({str(self.description.folder)!r}, {self.split!r}, {len(self)})"


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

def require_folder(data_config) -> str:
    """`config.data.folder`, which a custom dataset cannot do without."""
    if not data_config.folder:
        raise errors.ConfigError(
            "config.data.name='custom' needs config.data.folder: the folder with your images, "
            f"labels and {METADATA_FILE}. Add --config.data.folder=DIR.")
    return data_config.folder


def dataset_info(data_config) -> dict:
    description = Description(require_folder(data_config))
    return {"class_names": description.class_names, "palette": description.palette,
            "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> CustomFolder:
    return CustomFolder(data_config.folder, split)

