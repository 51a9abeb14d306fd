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

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import image_io, labels, palettes

METADATA_FILE = "dataset.json"
TFDS_BUILDER = None  # read from its folder only
IGNORE_LABEL = 255  # what ignored pixels become, whatever the files use
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
KNOWN_KEYS = ("name", "classes", "label_format", "colors", "label_values", "ignore_values",
              "ignore_colors", "splits", "description")


class DatasetDescriptionError(errors.DataError):
    """A `dataset.json` that does not describe a dataset; the message names the file and the
    fix."""


class PairingError(errors.MissingFileError):
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
                'naming its classes, at least {"classes": ["background", "road"]}: write one '
                "there (see deeplab_jax/data/custom.py or the README's 'Train on your own "
                "data'), or set --config.data.folder to the folder that has it.")
        try:
            meta = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise DatasetDescriptionError(
                f"{self.path}: not valid JSON ({error}). Fix it there: JSON takes double "
                "quotes, no trailing commas and no // comments.") from error
        if not isinstance(meta, dict):
            raise DatasetDescriptionError(
                f"{self.path}: expected a JSON object, got a {type(meta).__name__}. Write "
                'an object, at least {"classes": ["background", "road"]}.')
        unknown = sorted(set(meta) - set(KNOWN_KEYS))
        if unknown:
            hints = [f"{close[0]!r} for {key!r}" for key in unknown
                     for close in [difflib.get_close_matches(key, KNOWN_KEYS, n=1)] if close]
            raise DatasetDescriptionError(
                f"{self.path}: unknown keys {unknown}"
                + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                + f". Rename or remove them: the keys are {list(KNOWN_KEYS)}.")
        for key, example in (("name", '"my roads"'), ("description", '"Dashcam roads"')):
            if key in meta and not isinstance(meta[key], str):
                raise self._refuse(key, meta[key], "a string", example)
        classes = meta.get("classes")
        classes = [] if classes is None else classes
        if not isinstance(classes, list):
            raise self._refuse("classes", classes, "a list of class names",
                               '["background", "road"]')
        self._check_items("classes", classes, lambda name: isinstance(name, str) and name.strip(),
                          "a list of class names (non-empty strings)", '["background", "road"]')
        self.class_names = tuple(classes)
        num = len(self.class_names)
        if not 1 <= num <= 255:
            raise DatasetDescriptionError(
                f"{self.path}: 'classes' must list 1 to 255 class names, got {num}. List "
                'them in the order of their label values, e.g. "classes": ["background", '
                '"road", "car"].')
        duplicate = next((name for i, name in enumerate(classes) if name in classes[:i]), None)
        if duplicate is not None:
            raise DatasetDescriptionError(
                f'{self.path}: "classes" names {duplicate!r} twice. Give each class its own '
                "name (results are reported by name), or list the class once and give it both "
                'values in "label_values", e.g. "label_values": [0, [1, 2]].')
        self.label_format = meta.get("label_format", "index")
        if self.label_format not in ("index", "color"):
            raise DatasetDescriptionError(
                f'{self.path}: "label_format": {json.dumps(self.label_format)} is not "index" '
                'or "color". Set "index" (single-channel PNGs whose values are classes, the '
                'default) or "color" (RGB PNGs, one colour per class given in "colors").')
        self.colors = self._colors(meta.get("colors"), "colors")
        if self.colors is not None and len(self.colors) != num:
            raise DatasetDescriptionError(
                f"{self.path}: {len(self.colors)} colours for {num} classes. Give \"colors\" "
                "one [r, g, b] per class, in the order of \"classes\".")
        if self.label_format == "color":
            if self.colors is None:
                raise DatasetDescriptionError(
                    f"{self.path}: colour labels need 'colors' (\"label_format\" is "
                    '"color"): add "colors", one [r, g, b] per class in the order of "classes".')
            shared = self._shared_color(self.colors)
            if shared is not None:
                color, first, second = shared
                raise DatasetDescriptionError(
                    f"{self.path}: two classes share a colour: {self.class_names[first]!r} "
                    f"and {self.class_names[second]!r} are both {color}. Give each class its "
                    "own colour in \"colors\" (a pixel of a shared colour has no one class).")
        ignore_colors = meta.get("ignore_colors")  # null: none, as when not given
        self.ignore_colors = self._colors([] if ignore_colors is None else ignore_colors,
                                          "ignore_colors")
        if self.label_format == "color":
            ignored = set(map(tuple, self.ignore_colors.tolist()))
            both = [(name, color) for name, color in zip(self.class_names,
                                                         self.colors.tolist())
                    if tuple(color) in ignored]
            if both:
                raise DatasetDescriptionError(
                    f"{self.path}: colour {both[0][1]} is both ignored and the colour of class "
                    f'{both[0][0]!r}. Remove it from "ignore_colors", or give the class another '
                    'colour in "colors".')
        self.value_to_class = self._label_values(meta.get("label_values"), num)
        self.ignore_values = meta.get("ignore_values", [IGNORE_LABEL])
        if not isinstance(self.ignore_values, list):  # null too: [] or [255] is not clear
            raise self._refuse("ignore_values", self.ignore_values,
                               "a list of integers in 0..255 ([] for none)", f"[{IGNORE_LABEL}]")
        self._check_items("ignore_values", self.ignore_values, _is_label_value,
                          "a list of integers in 0..255 ([] for none)", f"[{IGNORE_LABEL}]")
        clash = set(self.ignore_values) & set(self.value_to_class)
        if clash:
            raise DatasetDescriptionError(self._clash_message(sorted(clash), meta))
        splits = meta.get("splits")
        splits = {} if splits is None else splits
        if not isinstance(splits, dict) or not all(isinstance(v, str) for v in splits.values()):
            raise self._refuse("splits", splits,
                               "an object mapping each split to its folder or list file",
                               '{"train": "train", "val": "val.txt"}')
        self.splits = dict(splits)
        self.palette = (palettes.palette_from_colors(self.colors) if self.colors is not None
                        else palettes.voc_palette())

    def _refuse(self, key: str, value: Any, expected: str, example: str,
                detail: str = "") -> DatasetDescriptionError:
        """The error for `"key": value`: what it must be, and a correct example."""
        return DatasetDescriptionError(
            f'{self.path}: "{key}" must be {expected}, got {_shown(value)}{detail}. Write it '
            f'as e.g. "{key}": {example}.')

    def _check_items(self, key: str, items: list, ok: Callable[[Any], Any], expected: str,
                     example: str) -> None:
        """Refuses `items` (the list `"key"` gives) naming the first item that is not `ok`."""
        for item in items:
            if not ok(item):
                raise self._refuse(key, items, expected, example,
                                   f" (first wrong item: {_shown(item)})")

    def _clash_message(self, clash: list[int], meta: dict) -> str:
        """Why `clash` (values of classes that are also ignored) is refused, and the fix."""
        owners = ", ".join(f"{value} is class {self.class_names[self.value_to_class[value]]!r}"
                           for value in clash)
        if "label_values" not in meta:
            owners += ' (without "label_values", class i is value i)'
        start = f"{self.path}: values {clash} are both a class's and ignored: {owners}"
        if "ignore_values" not in meta:  # only 255 can clash: the default ignored value
            return (f"{start}, and \"ignore_values\" is [{IGNORE_LABEL}] when not given. Add "
                    f'"ignore_values": [] to {METADATA_FILE} (or list the values that do mark '
                    "ignored pixels).")
        return (f'{start}, and "ignore_values" lists them too. Remove {clash} from '
                f'"ignore_values" in {METADATA_FILE}, or give those classes other '
                '"label_values".')

    @staticmethod
    def _shared_color(colors: np.ndarray) -> Optional[tuple[list[int], int, int]]:
        """(colour, first class, second class) of the first colour two classes share."""
        seen: dict[tuple[int, ...], int] = {}
        for index, color in enumerate(map(tuple, colors.tolist())):
            if color in seen:
                return list(color), seen[color], index
            seen[color] = index
        return None

    def _colors(self, colors: Any, key: str) -> Optional[np.ndarray]:
        expected = "a list of [r, g, b] integers in 0..255"
        example = "[[255, 255, 255]]" if key == "ignore_colors" else "[[0, 0, 0], [128, 64, 128]]"
        if colors is None:
            return None
        if not isinstance(colors, list):
            raise self._refuse(key, colors, expected, example)
        self._check_items(key, colors, lambda color: isinstance(color, list) and len(color) == 3
                          and all(map(_is_label_value, color)), expected, example)
        return np.asarray(colors, np.int64).reshape(-1, 3)

    def _label_values(self, values: Any, num: int) -> dict[int, int]:
        expected = ("a list of one integer in 0..255 (or a list of them) per class, in the "
                    'order of "classes"')
        if values is None:
            return {index: index for index in range(num)}
        if not isinstance(values, list):
            raise self._refuse("label_values", values, expected, "[0, 1, [7, 9]]")
        if len(values) != num:
            raise DatasetDescriptionError(
                f"{self.path}: {len(values)} label_values for {num} classes. Give "
                '"label_values" one value (or list of values) per class, in the order of '
                '"classes", or leave it out (class i is then value i).')
        mapping: dict[int, int] = {}
        for index, value in enumerate(values):
            listed = value if isinstance(value, list) else [value]
            if not listed or not all(map(_is_label_value, listed)):
                raise self._refuse(
                    "label_values", values, expected, "[0, 1, [7, 9]]",
                    f" (class {self.class_names[index]!r}: {_shown(value)}; label files hold "
                    "8-bit values)")
            for v in listed:
                if int(v) in mapping:
                    raise DatasetDescriptionError(
                        f"{self.path}: label value {v} is given to two classes, "
                        f"{self.class_names[mapping[int(v)]]!r} and "
                        f"{self.class_names[index]!r}. Give it to one of them in "
                        '"label_values".')
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
        raise errors.MissingFileError(
            f"No {split!r} split in {self.folder}: expected {split}/images/ and "
            f"{split}/labels/, or {split}.txt, or an entry in the 'splits' of {self.path}. "
            f"Create one of them, or pick a split it has ({self.available_splits()}) with "
            "--config.data.train_split / --config.data.eval_split.")

    def available_splits(self) -> list[str]:
        found = set(self.splits)
        for path in self.folder.iterdir():
            if path.is_dir() and (path / "images").is_dir():
                found.add(path.name)
            elif path.suffix == ".txt" and path.is_file():
                found.add(path.stem)
        return sorted(found)


def _shown(value: Any) -> str:
    """`value` as JSON, cut to 80 characters."""
    shown = json.dumps(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _is_label_value(value: Any) -> bool:
    """An integer in 0..255 (JSON's true and false and 1.0 are not: no silent casts)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


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

