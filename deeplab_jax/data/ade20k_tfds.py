"""TFDS builder `ade20k_scene_parsing`: ADE20K SceneParsing (150 classes) from its public archive.

The examples are those of `ade20k.ADE20KFolder` (same files, same label mapping, same checks),
in the same sorted order (`disable_shuffling`), so `as_data_source(split)[i]` is
`ADE20KFolder(root, split)[i]`:

  image:    uint8 [h, w, 3] at the original size (the JPEG file's own bytes when PIL decodes
            them unchanged, else the PNG of the decoded pixels: greyscale JPEGs become RGB)
  label:    uint8 [h, w, 1] classes 0..149 (annotation value - 1), "other" (0) as 255
  image_id: 'ADE_train_00000001'

Splits: train (20210) and val (2000). Images keep their size; `config.data.resize_to_fit`
resizes them when they are read, so one prepared dataset serves any resize setting.

Source, in this order: the manual dir (`DownloadConfig(manual_dir=...)`) holding the
extracted `ADEChallengeData2016/` (or being it), or holding `ADEChallengeData2016.zip`;
otherwise the public archive `ade20k.SOURCE_URL`, downloaded and extracted.

TFDS's own `scene_parse150` (tensorflow_datasets/datasets/scene_parse150/
scene_parse150_dataset_builder.py L23-28, L56-61, in the installed tensorflow-datasets
4.9.10) reads the ChallengeData2017 `annotations_instance` archive (instance masks, not the
150-class maps), names the validation images its test split, and yields them in
`tf.io.gfile.listdir` order (L78); hence our own builder, named so as not to clash.
"""
from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds

from deeplab_jax import errors
from deeplab_jax.data import ade20k, tfds_builders

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Optional (without it, the archive is downloaded): put {ade20k.ARCHIVE}
({ade20k.SOURCE_URL}) in the manual dir, as downloaded or extracted (its
{ade20k.TOP_DIR}/ folder). Expected after extraction: {ade20k.LAYOUT}.
"""


class Ade20kSceneParsing(tfds.core.GeneratorBasedBuilder):
    """ADE20K SceneParsing, 150 classes (255 = "other"), in sorted file-name order."""

    name = "ade20k_scene_parsing"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "ADEChallengeData2016: annotation values 1..150 stored as classes 0..149, "
                 "0 (other) as 255; examples sorted by file name.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("ADE20K SceneParsing (MIT Scene Parsing Benchmark 2016): 150 "
                         "classes, images of varying size. Labels are class indices 0..149, "
                         "255 = other / ignore."),
            features=tfds_builders.segmentation_features(),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="http://sceneparsing.csail.mit.edu/",
            citation=(
                "@inproceedings{zhou2017scene, title={Scene Parsing through ADE20K Dataset}, "
                "author={Zhou, Bolei and Zhao, Hang and Puig, Xavier and Fidler, Sanja and "
                "Barriuso, Adela and Torralba, Antonio}, booktitle={CVPR}, year={2017}}"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _source_root(dl_manager)
        # Every split's files are listed and checked before any example is written.
        files = {split: ade20k.split_files(root, split) for split in ade20k.SPLIT_FOLDERS}
        return {split: self._generate_examples(files[split]) for split in files}

    def _generate_examples(self, files):
        return tfds_builders.examples(files, ade20k.load_example)


def _source_root(dl_manager: tfds.download.DownloadManager) -> Path:
    """The ADEChallengeData2016 folder: the manual dir's, its archive's, or the download's.

    Raises:
      MissingFileError (a FileNotFoundError): a manual dir without the data, or no manual
        dir and a failed download, naming the archive, its URL and the manual dir.
    """
    manual_dir = None
    try:
        manual_dir = Path(os.fspath(dl_manager.manual_dir))
    except AssertionError:  # no manual dir, or an empty one
        pass
    if manual_dir is not None:
        if (manual_dir / ade20k.ARCHIVE).is_file():
            extracted = Path(os.fspath(dl_manager.extract(manual_dir / ade20k.ARCHIVE)))
            return _find_root(extracted, f"{manual_dir / ade20k.ARCHIVE}, extracted to")
        return _find_root(manual_dir, "The manual dir")
    try:
        extracted = Path(os.fspath(dl_manager.download_and_extract(ade20k.SOURCE_URL)))
    except Exception as error:  # noqa: BLE001  (no internet, a server error, ...)
        raise errors.MissingFileError(
            f"No ADE20K source: no manual dir with {ade20k.ARCHIVE} or {ade20k.TOP_DIR}/ "
            f"(looked in {getattr(dl_manager, '_manual_dir', None)}), and downloading "
            f"{ade20k.SOURCE_URL} failed ({type(error).__name__}: {error}). Download it by "
            "hand into a FOLDER and give it: --config.data.manual_dir=FOLDER (or python -m "
            "deeplab_jax.data.prepare --dataset=ade20k --manual_dir=FOLDER; from Python, "
            "prepare(manual_dir=FOLDER)).\n"
            + MANUAL_DOWNLOAD_INSTRUCTIONS) from error
    return _find_root(extracted, f"The download of {ade20k.SOURCE_URL}, extracted to")


def _find_root(folder: Path, what: str) -> Path:
    try:
        return ade20k.find_root(folder)
    except FileNotFoundError as error:
        raise errors.MissingFileError(
            f"{what} {folder} holds no ADE20K folder ({error}). Put {ade20k.ARCHIVE} or its "
            f"extracted {ade20k.TOP_DIR}/ there, or give --config.data.manual_dir the folder "
            "that holds it.\n" + MANUAL_DOWNLOAD_INSTRUCTIONS) from error


def prepare(data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None) -> Ade20kSceneParsing:
    """Builds `ade20k_scene_parsing` as array_record files (once) and returns the builder.

    Read a split with `builder.as_data_source(split)`. Nothing is rebuilt when the data is
    already prepared in `data_dir`.

    Args:
      data_dir: where TFDS writes the prepared dataset (default: ~/tensorflow_datasets).
      manual_dir: a folder with the archive or its extraction (MANUAL_DOWNLOAD_INSTRUCTIONS);
        None: TFDS's default manual dir if it holds them, else the download.
    """
    return tfds_builders.prepare(Ade20kSceneParsing, data_dir, manual_dir, try_download_gcs=False)
