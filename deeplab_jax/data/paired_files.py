"""A split on disk as a list of (image file, label file) pairs, decoded lazily per item: what
the CamVid, Cityscapes and ADE20K folder readers share (each finds and checks its own files
and decodes its own label format)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


class PairedFiles:
    """`source[i]` is {'image': uint8 [h, w, 3], 'label': uint8 [h, w]}; `files` the pairs,
    `ids` the image ids in the same order. Subclasses set `dataset` (its name in messages),
    `class_names`, `num_classes`, `ignore_label`, and `load_example(image_path, label_path)`
    (a staticmethod), and call `__init__` with the files they found."""

    dataset = "dataset"

    def __init__(self, root: Path, split: str, files: Sequence[tuple[str, str]],
                 palette: np.ndarray, ids: Sequence[str] | None = None):
        self.root, self.split, self.files = root, split, list(files)
        self.ids = tuple(ids) if ids is not None else tuple(
            Path(image).stem for image, _ in self.files)
        self.palette = palette.copy()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not -len(self.files) <= index < len(self.files):
            raise IndexError(f"index {index} out of range for {len(self.files)} examples of "
                             f"{self.dataset} {self.split!r}")
        return self.load_example(*self.files[index])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"{len(self)} examples)")
