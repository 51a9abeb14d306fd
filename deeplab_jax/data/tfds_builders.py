"""What the folder-backed TFDS builders (CamVid, Cityscapes, ADE20K) share: their features,
the examples as they are written, and `prepare`. Each builder keeps what is its own: where
its files come from (manual dir, archive, download) and which splits it has."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import tensorflow_datasets as tfds

from deeplab_jax.data import image_io


def segmentation_features() -> tfds.features.FeaturesDict:
    """image [h, w, 3]; label [h, w, 1] class indices (255 = ignore), PNG; image_id."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        "image_id": tfds.features.Text(),
    })


def examples(files: Iterable[tuple[str, str]],
             load_example: Callable[[str, str], dict[str, Any]],
             image_id: Callable[[str], str] = lambda path: Path(path).stem,
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, example) for `_generate_examples`: the label as the folder reader maps it; the
    image file's own bytes where they decode to the same pixels (no re-encoding), else the
    decoded pixels."""
    for index, (image_path, label_path) in enumerate(files):
        example = load_example(image_path, label_path)
        stored = image_path if image_io.decodes_unchanged(image_path) else example["image"]
        yield index, {"image": stored, "label": example["label"][..., None],
                      "image_id": image_id(image_path)}


def prepare(builder_class: type, data_dir: str | os.PathLike | None,
            manual_dir: str | os.PathLike | None, **download_config: Any):
    """Builds `builder_class` as ArrayRecord files (once; nothing is rebuilt when `data_dir`
    holds it) and returns the builder. `download_config`: more DownloadConfig fields."""
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
    builder = builder_class(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, **download_config))
    return builder
