"""Datasets by name: `get_dataset(config.data, split)`; one file and one line per dataset.

A source is a sequence of {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} examples with
`class_names`, `num_classes`, `ignore_label` and `palette` attributes (see
`input_pipeline.py`). `config.data.name` picks the dataset's file from `DATASETS`; the file
defines:

- `dataset_info(data_config)`: {'class_names', 'palette', 'ignore_label'}, without reading
  any example (predictions and exports need only this);
- `folder_source(data_config, split)`: the split read from `config.data.folder` with numpy
  and pillow alone (no TensorFlow);
- `TFDS_BUILDER`: the module of its TFDS builder (`prepare(data_dir, manual_dir)`), or None;
- or, for data made in code, `generated_source(data_config, split)`.

The real datasets come from one of two places, the same examples in the same order either
way: `config.data.source = "tfds"` (our builders' prepared files, built on first use from
the internet or from `config.data.manual_dir`) or `"folder"`.
"""
from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from deeplab_jax import errors
from deeplab_jax.data import ade20k, camvid, cityscapes, custom, synthetic, voc
from deeplab_jax.data.memory_cache import CachedSource
from deeplab_jax.data.rescale import RescaledSource, ResizedToFit

DATASETS: dict[str, Any] = {
    "synthetic_shapes": synthetic,  # generated in code: the embedded default
    "voc": voc,  # PASCAL VOC 2012 + SBD (train_aug)
    "camvid": camvid,  # CamVid, SegNet's 11 classes at 360x480
    "cityscapes": cityscapes,  # Cityscapes gtFine, 19 train ids at 1024x2048
    "ade20k": ade20k,  # ADE20K SceneParsing (ADEChallengeData2016), 150 classes
    "custom": custom,  # your own data: a folder described by its dataset.json
}
SOURCES = ("tfds", "folder")


def dataset_module(name: str) -> Any:
    """The file of dataset `name`.

    Raises:
      ConfigError: an unknown name, with the closest known one.
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        raise errors.ConfigError(
            f"Unknown dataset config.data.name={name!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; known: {', '.join(map(repr, DATASETS))}. Set --config.data.name to one of "
            "them (your own data: 'custom', with --config.data.folder=DIR).")
    return DATASETS[name]


def get_dataset(data_config: ml_collections.ConfigDict, split: str):
    """Returns the source of `split` for `data_config.name`."""
    module = dataset_module(data_config.name)
    if hasattr(module, "generated_source"):
        return module.generated_source(data_config, split)
    info = module.dataset_info(data_config)
    if data_config.ignore_label != info["ignore_label"]:
        raise errors.ConfigError(
            f"config.data.ignore_label={data_config.ignore_label}, but {data_config.name}'s "
            f"labels mark ignored pixels with {info['ignore_label']}: set "
            f"--config.data.ignore_label={info['ignore_label']} (or leave it at the config's "
            "value).")
    if data_config.source == "folder":
        if not data_config.folder:
            raise errors.ConfigError(
                f"config.data.source='folder' needs config.data.folder: the folder holding "
                f"the {data_config.name} dataset (see the README's 'Datasets' section). Add "
                "--config.data.folder=DIR.")
        source = module.folder_source(data_config, split)
    elif data_config.source == "tfds":
        if module.TFDS_BUILDER is None:
            raise errors.ConfigError(
                f"config.data.name={data_config.name!r} is read from a folder only, not "
                "config.data.source='tfds': set --config.data.source=folder "
                "--config.data.folder=DIR.")
        from deeplab_jax.data import tfds_source  # TensorFlow only on this path

        builder = tfds_source.load_builder(data_config.name, data_config.tfds_data_dir,
                                           data_config.manual_dir)
        source = tfds_source.TfdsSource(builder, split, **info)
    else:
        raise errors.ConfigError(
            f"config.data.source={data_config.source!r} is not one of {SOURCES}: set "
            "--config.data.source=tfds (prepared TFDS files) or --config.data.source=folder "
            "(the extracted dataset in --config.data.folder).")
    fit = data_config.get("resize_to_fit")
    if fit:  # (short_side, long_side_max): each image resized to fit, aspect ratio kept
        source = ResizedToFit(source, *fit)
    scale = data_config.get("image_scale", 1.0)
    if scale != 1.0:
        source = RescaledSource(source, scale)
    cache_mib = data_config.get("cache_mib", 0)
    return CachedSource(source, cache_mib) if cache_mib else source


def dataset_info(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What predictions need to know about `data_config.name`, without loading any data.

    Returns:
      {'class_names': tuple of K names, 'num_classes': K, 'palette': uint8 [256, 3],
      'ignore_label': int}.
    """
    info = dataset_module(data_config.name).dataset_info(data_config)
    return {"class_names": tuple(info["class_names"]), "num_classes": len(info["class_names"]),
            "palette": info["palette"].copy(), "ignore_label": int(info["ignore_label"])}


def tfds_datasets() -> list[str]:
    """The datasets with a TFDS builder (`python -m deeplab_jax.data.prepare --dataset`)."""
    return sorted(name for name, module in DATASETS.items()
                  if getattr(module, "TFDS_BUILDER", None))
