"""A dataset's `dataset.json`, read and checked: its classes, how labels encode them, where
its splits are (the format: `custom.py`'s docstring). Every problem names the file, the
value and the fix (`DatasetDescriptionError`).
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import palettes

METADATA_FILE = "dataset.json"
IGNORE_LABEL = 255  # what ignored pixels become, whatever the files use
KNOWN_KEYS = ("name", "classes", "label_format", "colors", "label_values", "ignore_values",
              "ignore_colors", "splits", "description")


class DatasetDescriptionError(errors.DataError):
    """A `dataset.json` that does not describe a dataset; the message names the file and the
    fix."""



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

