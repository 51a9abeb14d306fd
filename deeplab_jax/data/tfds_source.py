"""A prepared TFDS dataset as a random-access example source.

Our builders (`voc_tfds.py`, `camvid_tfds.py`) write `array_record` files, which TFDS reads
by index (`builder.as_data_source(split)`): example i is a pure lookup, so the input order
stays a pure function of (seed, step) and a resumed run needs no iterator state. The
builders keep the generation order (`disable_shuffling`), which is the folder readers'
order: a run reads the same examples at the same steps from either source.

TensorFlow and TFDS are imported only here, and only when `config.data.source == "tfds"`.
"""
from __future__ import annotations

import importlib
import logging
from typing import Optional

import numpy as np

from deeplab_jax import errors


class TfdsMissingError(errors.ConfigError, ImportError):
    """config.data.source='tfds' without TFDS installed (an ImportError, as before)."""


def load_builder(name: str, data_dir: Optional[str], manual_dir: Optional[str]):
    """The prepared builder of dataset `name`; downloads and prepares it on first use.

    Raises:
      TfdsMissingError (an ImportError): TFDS is not installed, with the folder-source
        alternative.
    """
    from deeplab_jax.data import datasets  # pylint: disable=import-outside-toplevel

    try:
        module = importlib.import_module(datasets.dataset_module(name).TFDS_BUILDER)
    except ImportError as error:
        raise TfdsMissingError(
            f"config.data.source='tfds' needs tensorflow-datasets and TensorFlow ({error}): "
            "install them (pip install -r requirements.txt), or read the extracted dataset "
            "with numpy and pillow: --config.data.source=folder "
            "--config.data.folder=/path/to/dataset.") from error
    return module.prepare(data_dir=data_dir, manual_dir=manual_dir)


class TfdsSource:
    """One split of a prepared dataset: `len()` and `source[i]` -> {'image', 'label'}.

    `class_names`, `palette` and `ignore_label` come from the dataset's file
    (`dataset_info`), which defines them for both sources.
    """

    def __init__(self, builder, split: str, *, class_names, palette: np.ndarray,
                 ignore_label: int):
        if split not in builder.info.splits:
            raise errors.ConfigError(
                f"{builder.name} has splits {sorted(builder.info.splits)}, not {split!r}: set "
                "--config.data.train_split / --config.data.eval_split to one of them.")
        try:
            self._examples = builder.as_data_source(split)
        except Exception as error:  # TFDS raises several types for a tfrecord-only dataset.
            raise errors.DataError(
                f"{builder.data_dir}: cannot open {builder.name} for random access ({error}). "
                "It was probably prepared by `tfds build` in the default tfrecord format; "
                "delete that folder and let deeplab_jax prepare it (array_record).") from error
        self.name = f"{builder.name}/{split}"
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.palette = palette
        self.ignore_label = ignore_label
        logging.info("%s: %d examples from %s", self.name, len(self._examples),
                     builder.data_dir)

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self._examples[index]
        return {"image": np.asarray(example["image"], np.uint8),
                "label": np.asarray(example["label"], np.uint8)[..., 0]}
