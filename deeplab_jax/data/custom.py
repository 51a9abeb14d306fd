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

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from deeplab_jax.data import image_io, labels, palettes

METADATA_FILE = "dataset.json"
TFDS_BUILDER = None  # read from its folder only
IGNORE_LABEL = 255  # what ignored pixels become, whatever the files use
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
KNOWN_KEYS = ("name", "classes", "label_format", "colors", "label_values", "ignore_values",
              "ignore_colors", "splits", "description")


class DatasetDescriptionError(ValueError):
    """A `dataset.json` that does not describe a dataset; the message names the file."""


class PairingError(FileNotFoundError):
    """Images without labels or labels without images; the message counts them."""

    def __init__(self, message: str, unlabelled: Sequence[str], orphans: Sequence[str]):
        super().__init__(message)
        self.unlabelled, self.orphans = list(unlabelled), list(orphans)


class Description:
    """A checked `dataset.json`: classes, how labels encode them, where the splits are."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        self.path = self.folder / METADATA_FILE
        if not self.path.is_file():
            raise DatasetDescriptionError(
                f"{self.path}: no such file. A custom dataset's folder holds a {METADATA_FILE} "
                'naming its classes, at least {"classes": ["background", "road"]}: see '
                "deeplab_jax/data/custom.py or the README's 'Train on your own data'.")
        try:
            meta = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise DatasetDescriptionError(f"{self.path}: not valid JSON ({error}).") from error
        if not isinstance(meta, dict):
            raise DatasetDescriptionError(f"{self.path}: expected a JSON object.")
        unknown = sorted(set(meta) - set(KNOWN_KEYS))
        if unknown:
            raise DatasetDescriptionError(f"{self.path}: unknown keys {unknown}; the keys are "
                                          f"{list(KNOWN_KEYS)}.")
        self.class_names = tuple(str(name) for name in meta.get("classes") or ())
        num = len(self.class_names)
        if not 1 <= num <= 255:
            raise DatasetDescriptionError(f"{self.path}: 'classes' must list 1 to 255 class "
                                          f"names, got {num}.")
        self.label_format = meta.get("label_format", "index")
        if self.label_format not in ("index", "color"):
            raise DatasetDescriptionError(f"{self.path}: label_format={self.label_format!r} is "
                                          "not 'index' or 'color'.")
        self.colors = self._colors(meta.get("colors"), "colors")
        if self.colors is not None and len(self.colors) != num:
            raise DatasetDescriptionError(f"{self.path}: {len(self.colors)} colours for {num} "
                                          "classes: one [r, g, b] per class.")
        if self.label_format == "color":
            if self.colors is None:
                raise DatasetDescriptionError(f"{self.path}: colour labels need 'colors', one "
                                              "[r, g, b] per class.")
            if len(set(map(tuple, self.colors))) != num:
                raise DatasetDescriptionError(f"{self.path}: two classes share a colour.")
        self.ignore_colors = self._colors(meta.get("ignore_colors", []), "ignore_colors")
        self.value_to_class = self._label_values(meta.get("label_values"), num)
        self.ignore_values = [int(v) for v in meta.get("ignore_values", [IGNORE_LABEL])]
        clash = set(self.ignore_values) & set(self.value_to_class)
        if clash:
            raise DatasetDescriptionError(f"{self.path}: values {sorted(clash)} are both a "
                                          "class's and ignored.")
        self.splits = {str(k): str(v) for k, v in (meta.get("splits") or {}).items()}
        self.palette = (palettes.palette_from_colors(self.colors) if self.colors is not None
                        else palettes.voc_palette())

    def _colors(self, colors: Any, key: str) -> Optional[np.ndarray]:
        if colors is None:
            return None
        array = np.asarray(colors)
        if array.size and (array.ndim != 2 or array.shape[1] != 3 or array.min() < 0
                           or array.max() > 255 or not np.issubdtype(array.dtype, np.integer)):
            raise DatasetDescriptionError(f"{self.path}: '{key}' must be a list of [r, g, b] "
                                          "integers in 0..255.")
        return array.reshape(-1, 3).astype(np.int64)

    def _label_values(self, values: Any, num: int) -> dict[int, int]:
        if values is None:
            return {index: index for index in range(num)}
        if len(values) != num:
            raise DatasetDescriptionError(f"{self.path}: {len(values)} label_values for {num} "
                                          "classes: one value (or list of values) per class.")
        mapping: dict[int, int] = {}
        for index, value in enumerate(values):
            for v in (value if isinstance(value, list) else [value]):
                if not 0 <= int(v) <= 255 or int(v) in mapping:
                    raise DatasetDescriptionError(f"{self.path}: label value {v} is outside "
                                                  "0..255 or given to two classes.")
                mapping[int(v)] = index
        return mapping

    # -- splits --------------------------------------------------------------------------

    def split_location(self, split: str) -> Path:
        if split in self.splits:
            return self.folder / self.splits[split]
        if (self.folder / split).is_dir():
            return self.folder / split
        if (self.folder / f"{split}.txt").is_file():
            return self.folder / f"{split}.txt"
        raise FileNotFoundError(
            f"No {split!r} split in {self.folder}: expected {split}/images/ and "
            f"{split}/labels/, or {split}.txt, or an entry in the 'splits' of {self.path}.")

    def available_splits(self) -> list[str]:
        found = set(self.splits)
        for path in self.folder.iterdir():
            if path.is_dir() and (path / "images").is_dir():
                found.add(path.name)
            elif path.suffix == ".txt" and path.is_file():
                found.add(path.stem)
        return sorted(found)


def split_pairs(description: Description, split: str, *, strict: bool = True
                ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(image, label) paths of `split`, in sorted order, and the unpaired files.

    Returns:
      (pairs, images without a label, labels without an image).

    Raises:
      PairingError: with `strict`, when any file is unpaired (naming counts and examples).
      FileNotFoundError: no such split; a listed file that does not exist.
    """
    location = description.split_location(split)
    if location.suffix == ".txt":
        pairs = []
        for number, line in enumerate(location.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entries = line.split()
            if len(entries) != 2:
                raise ValueError(f"{location}:{number}: expected 'image label', got {line!r}.")
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
        raise PairingError(
            f"The {split!r} split of {description.folder} does not pair up: {len(unlabelled)} "
            f"image(s) without a label (first: {unlabelled[:1]}), {len(orphans)} label(s) "
            f"without an image or listed images missing (first: {orphans[:1]}). Run python -m "
            "deeplab_jax.data.check for the whole list.", unlabelled, orphans)
    if strict and not pairs:
        raise FileNotFoundError(f"The {split!r} split of {description.folder} ({location}) "
                                "has no examples.")
    return pairs, unlabelled, orphans


def _by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (a split folder holds images/ and "
                                "labels/).")
    files: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise ValueError(f"Two files named {path.stem!r} in {folder}: "
                                 f"{Path(files[path.stem]).name} and {path.name}.")
            files[path.stem] = str(path)
    return files


def load_label(description: Description, path: str) -> np.ndarray:
    """A label file as uint8 [h, w] class indices, ignored pixels 255.

    Raises:
      LabelValueError / LabelColorError: naming the file and the values or colours that are
        neither a class nor ignored.
      OSError: the file cannot be read.
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

def dataset_info(data_config) -> dict:
    if not data_config.folder:
        raise ValueError("config.data.name='custom' needs config.data.folder: the folder with "
                         f"your images, labels and {METADATA_FILE}.")
    description = Description(data_config.folder)
    return {"class_names": description.class_names, "palette": description.palette,
            "ignore_label": IGNORE_LABEL}


def folder_source(data_config, split: str) -> CustomFolder:
    return CustomFolder(data_config.folder, split)

