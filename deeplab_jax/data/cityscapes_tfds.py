"""TFDS builder `cityscapes_fine`: Cityscapes gtFine as 19 train ids, from the two archives.

The examples are those of `cityscapes.CityscapesFolder` (same files, same label mapping, same
checks), in the same sorted order (`disable_shuffling`), so `as_data_source(split)[i]` is
`CityscapesFolder(root, split)[i]`:

  image:    uint8 [1024, 2048, 3], stored as the PNG file's own bytes (when PIL decodes them
            unchanged, `image_io.decodes_unchanged`; else the PNG of the decoded pixels)
  label:    uint8 [h, w, 1] train ids 0..18, other label ids 255
  image_id: 'aachen_000000_000019'

Splits: train (2975), val (500), and test (1525, labels all 255) when the archives have it.

Source: the manual dir (`DownloadConfig(manual_dir=...)`, default
`<data_dir>/downloads/manual`) holding `leftImg8bit_trainvaltest.zip` and
`gtFine_trainvaltest.zip` as downloaded (TFDS extracts them into its download dir), or their
extracted `leftImg8bit/` and `gtFine/` folders. Nothing is downloaded: the archives need a
login at cityscapes-dataset.com.

Why not TFDS's own `cityscapes` builder (tensorflow_datasets/datasets/cityscapes/
cityscapes_dataset_builder.py, read in the installed tensorflow-datasets 4.9.10): its default
config `cityscapes/semantic_segmentation` does give the fine annotations, but as raw label ids
(`_gtFine_labelIds.png`, L78-84 and L276-280: 0..33, no train-id mapping, void not 255), in
the order `tf.io.gfile.listdir` returns (L251-258: file-system order, not sorted, so not the
folder reader's), with split names train/validation/test and tfrecord files unless asked
otherwise. This builder maps to the 19 train ids, keeps the folder reader's order and writes
array_record files, which `tfds_source.TfdsSource` reads by index (random access). Its name
is `cityscapes_fine` so that it does not clash with the registered `cityscapes`.

    from deeplab_jax.data import cityscapes_tfds
    builder = cityscapes_tfds.prepare(data_dir="~/tensorflow_datasets",
                                      manual_dir="~/cityscapes_archives")
    source = builder.as_data_source("train")
"""
from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds

from deeplab_jax import errors
from deeplab_jax.data import cityscapes, tfds_builders

ARCHIVES = ((cityscapes.IMAGE_ARCHIVE, cityscapes.IMAGE_DIR),
            (cityscapes.LABEL_ARCHIVE, cityscapes.LABEL_DIR))

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Log in at {cityscapes.DOWNLOAD_URL} (free registration) and download
  {cityscapes.IMAGE_ARCHIVE} (the left 8-bit images)
  {cityscapes.LABEL_ARCHIVE} (the fine annotations)
and put both, as downloaded, in the manual dir (or their extracted {cityscapes.IMAGE_DIR}/ and
{cityscapes.LABEL_DIR}/ folders). Expected after extraction: {cityscapes.LAYOUT}.
"""


class CityscapesFine(tfds.core.GeneratorBasedBuilder):
    """Cityscapes fine annotations, 19 train ids (255 = ignore), in sorted file-name order."""

    name = "cityscapes_fine"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "gtFine labelIds mapped to the 19 train ids of cityscapesScripts' "
                 "helpers/labels.py, other ids 255; examples sorted by file name.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Cityscapes street scenes with fine annotations, 19 classes ("
                         + ", ".join(cityscapes.CLASS_NAMES) + "), 1024x2048. Labels are "
                         "train ids, 255 = ignore."),
            features=tfds_builders.segmentation_features(),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://www.cityscapes-dataset.com",
            citation=(
                "@inproceedings{Cordts2016Cityscapes, title={The Cityscapes Dataset for "
                "Semantic Urban Scene Understanding}, author={Cordts, Marius and Omran, "
                "Mohamed and Ramos, Sebastian and Rehfeld, Timo and Enzweiler, Markus and "
                "Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and Schiele, Bernt}, "
                "booktitle={CVPR}, year={2016}}"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        image_root, label_root = _extracted_roots(dl_manager)
        splits = ["train", "val"] + (
            ["test"] if all((root / top / "test").is_dir() for root, top in (
                (image_root, cityscapes.IMAGE_DIR), (label_root, cityscapes.LABEL_DIR)))
            else [])
        # Every split's files are listed and checked before any example is written.
        files = {split: cityscapes.split_files(image_root, split, label_root=label_root)
                 for split in splits}
        return {split: self._generate_examples(files[split]) for split in splits}

    def _generate_examples(self, files):
        return tfds_builders.examples(files, cityscapes.load_example, cityscapes.image_id)


def _manual_dir(dl_manager) -> tuple[Path | None, str]:
    """(the manual dir if it exists and is not empty, its path for messages)."""
    try:
        path = os.fspath(dl_manager.manual_dir)
        return Path(path), path
    except AssertionError:  # Missing or empty (or not enabled).
        return None, os.fspath(getattr(dl_manager, "_manual_dir", None) or "<manual_dir>")


def _extracted_roots(dl_manager) -> tuple[Path, Path]:
    """The folders holding the extracted leftImg8bit/ and gtFine/.

    Each is the manual dir when it holds the extracted folder, else the extraction of the
    archive found there.

    Raises:
      MissingFileError (a FileNotFoundError): an archive is neither in the manual dir nor
        extracted there, naming both archives, the manual dir and the download page.
    """
    manual, manual_for_message = _manual_dir(dl_manager)
    roots = []
    for archive, top in ARCHIVES:
        if manual is not None and (manual / top).is_dir():
            roots.append(manual)
        elif manual is not None and (manual / archive).is_file():
            roots.append(Path(os.fspath(dl_manager.extract(manual / archive))))
        else:
            raise errors.MissingFileError(
                f"Cannot find {archive}: it is not in the manual dir {manual_for_message} "
                f"(nor its extracted {top}/ folder), and it cannot be downloaded without a "
                "login. Put both archives in a FOLDER and give it: "
                "--config.data.manual_dir=FOLDER (or python -m deeplab_jax.data.prepare "
                "--dataset=cityscapes --manual_dir=FOLDER; from Python, "
                "prepare(manual_dir=FOLDER) or tfds.download.DownloadConfig("
                "manual_dir=FOLDER)).\n" + MANUAL_DOWNLOAD_INSTRUCTIONS)
        if not (roots[-1] / top).is_dir():
            raise errors.MissingFileError(
                f"{archive} extracted to {roots[-1]}, which has no {top}/ folder: the archive "
                f"is not Cityscapes' {archive}, or is damaged. Download it again from "
                f"{cityscapes.DOWNLOAD_URL}.")
    return roots[0], roots[1]


def prepare(data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None) -> CityscapesFine:
    """Builds `cityscapes_fine` as array_record files (once) and returns the builder.

    Read a split with `builder.as_data_source(split)`. Nothing is rebuilt when the data is
    already prepared in `data_dir`.

    Args:
      data_dir: where TFDS writes the prepared dataset (default: ~/tensorflow_datasets).
      manual_dir: the folder with the two archives (see MANUAL_DOWNLOAD_INSTRUCTIONS); None:
        TFDS's default manual dir, <data_dir>/downloads/manual.
    """
    return tfds_builders.prepare(CityscapesFine, data_dir, manual_dir, try_download_gcs=False)
