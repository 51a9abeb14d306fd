"""TFDS builder `voc_sbd`: PASCAL VOC 2012 segmentation + SBD, splits train/val/trainval/train_aug.

The examples are those of `voc.VocFolder` (same files, same decoding, same checks), in the
same sorted-id order (`disable_shuffling`), so a seed gives the same batches from either
source. Images are stored as the JPEG files' own bytes when PIL decodes them unchanged
(`image_io.decodes_unchanged`; else as the PNG of the decoded pixels), so TFDS's PIL decoder
gives exactly `VocFolder`'s pixels (with OpenCV installed TFDS decodes with it instead, which
may differ by a grey level); labels as single-channel PNG of the class indices (255 = ignore).

    from deeplab_jax.data import voc_tfds
    builder = voc_tfds.prepare(data_dir="~/tensorflow_datasets", manual_dir="~/voc_archives")
    source = builder.as_data_source("train_aug")  # source[i]["image"], ["label"] [h, w, 1]
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from deeplab_jax import errors
from deeplab_jax.data import image_io, voc

ARCHIVES = ((voc.VOC_ARCHIVE, voc.VOC_URL, "VOCdevkit"),
            (voc.SBD_ARCHIVE, voc.SBD_URL, "benchmark_RELEASE"))

_INSTRUCTIONS = (
    f"Put the two archives, as downloaded, in the manual folder:\n"
    f"  {voc.VOC_ARCHIVE} from {voc.VOC_URL}\n"
    f"  {voc.SBD_ARCHIVE} from {voc.SBD_URL}\n"
    "(or their extracted VOCdevkit/ and benchmark_RELEASE/ folders). Whatever is missing "
    "there is downloaded from those URLs.")


class VocSbd(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation with the SBD annotations (train_aug)."""

    name = "voc_sbd"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "VOC 2012 train/val/trainval and train_aug = (SBD train + SBD val + VOC "
                 "train) - VOC val; labels from VOC's PNGs where they exist (255 on "
                 "boundaries), else SBD's GTcls.Segmentation; examples in sorted-id order.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("PASCAL VOC 2012 semantic segmentation (21 classes, 255 = ignore) "
                         "with the Semantic Boundaries Dataset's extra annotations."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.Image(shape=(None, None, 1)),
                "image_id": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        voc_root, sbd_root = _extracted_roots(dl_manager)
        return {split: self._generate_examples(voc_root, sbd_root, split)
                for split in voc.SPLITS}

    def _generate_examples(self, voc_root, sbd_root, split):
        for image_id in voc.split_ids(voc_root, split, sbd_root):
            example = voc.load_example(voc_root, image_id, sbd_root)
            image_path, _ = voc.example_files(voc_root, image_id, sbd_root)
            stored = image_path if image_io.decodes_unchanged(image_path) else example["image"]
            yield image_id, {"image": stored, "label": example["label"][..., None],
                             "image_id": image_id}


def _manual_dir(dl_manager) -> tuple[str | None, str]:
    """(the manual folder if it exists and is not empty, its path for messages)."""
    try:
        path = os.fspath(dl_manager.manual_dir)
        return path, path
    except AssertionError:  # Missing or empty (or not enabled).
        return None, os.fspath(getattr(dl_manager, "_manual_dir", None) or "<manual_dir>")


def _extracted_roots(dl_manager) -> tuple[str, str]:
    """Folders holding the extracted VOCdevkit/ and benchmark_RELEASE/.

    Each archive is taken from the manual folder (extracted there already, or as the
    archive) when it is there, else downloaded.
    """
    manual, manual_for_message = _manual_dir(dl_manager)
    roots = []
    for archive, url, top in ARCHIVES:
        if manual and os.path.isdir(os.path.join(manual, top)):
            roots.append(manual)
            continue
        if manual and os.path.isfile(os.path.join(manual, archive)):
            path = os.path.join(manual, archive)
        else:
            try:
                path = dl_manager.download(url)
            except Exception as error:  # No internet, a server error, a bad checksum...
                raise errors.MissingFileError(
                    f"Cannot get {archive}: it is not in the manual folder "
                    f"{manual_for_message} and downloading {url} failed ({error}). Download "
                    f"both archives, {voc.VOC_ARCHIVE} ({voc.VOC_URL}) and {voc.SBD_ARCHIVE} "
                    f"({voc.SBD_URL}), put them in a FOLDER and give it: "
                    "--config.data.manual_dir=FOLDER (or python -m deeplab_jax.data.prepare "
                    "--dataset=voc --manual_dir=FOLDER; from Python, prepare(manual_dir=FOLDER)"
                    ").") from error
        roots.append(os.fspath(dl_manager.extract(path)))
    return roots[0], roots[1]


def prepare(data_dir: str | None = None, manual_dir: str | None = None) -> VocSbd:
    """Builds `voc_sbd` as array_record files (random access) and returns the builder.

    Read a split with `builder.as_data_source(split)`. Nothing is rebuilt when the data is
    already prepared in `data_dir`.
    """
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
    builder = VocSbd(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
    return builder
