"""Dataset sources by name: `get_dataset(config.data, split)`.

A source is a sequence of {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} examples with
`class_names`, `num_classes`, `ignore_label` and `palette` attributes (see
`input_pipeline.py`). The real datasets come from one of two places, the same examples in
the same order either way:

- `config.data.source = "tfds"`: our TFDS builders' prepared files (`voc_tfds.py`,
  `camvid_tfds.py`), built on first use from the internet or from `config.data.manual_dir`;
- `config.data.source = "folder"`: the extracted dataset in `config.data.folder`, read with
  numpy and pillow alone (`voc.py`, `camvid.py`): no TensorFlow needed.
"""
from __future__ import annotations

import ml_collections

from deeplab_jax.data import camvid, palettes, synthetic, voc
from deeplab_jax.data.rescale import RescaledSource

REAL_DATASETS = {"voc": voc, "camvid": camvid}
SOURCES = ("tfds", "folder")
KNOWN = ("synthetic_shapes",) + tuple(REAL_DATASETS)


def _folder_source(data_config: ml_collections.ConfigDict, split: str):
    if not data_config.folder:
        raise ValueError(
            f"config.data.source='folder' needs config.data.folder: the folder holding the "
            f"extracted {data_config.name} dataset (see the README's 'Datasets' section).")
    if data_config.name == "voc":
        return voc.VocFolder(data_config.folder, split)
    return camvid.CamVidFolder(data_config.folder, split)


def _tfds_source(data_config: ml_collections.ConfigDict, split: str):
    from deeplab_jax.data import tfds_source  # TensorFlow only on this path

    module = REAL_DATASETS[data_config.name]
    builder = tfds_source.load_builder(data_config.name, data_config.tfds_data_dir,
                                       data_config.manual_dir)
    return tfds_source.TfdsSource(builder, split, class_names=module.CLASS_NAMES,
                                  palette=dataset_info(data_config)["palette"],
                                  ignore_label=module.IGNORE_LABEL)


def get_dataset(data_config: ml_collections.ConfigDict, split: str):
    """Returns the source of `split` for `data_config.name`."""
    if data_config.name == "synthetic_shapes":
        num_examples = {"train": data_config.synthetic.num_train_examples,
                        "val": data_config.synthetic.num_val_examples}
        if split not in num_examples:
            raise ValueError(f"synthetic_shapes has splits 'train' and 'val', not {split!r}.")
        return synthetic.SyntheticShapes(split, num_examples[split],
                                         image_size=data_config.synthetic.image_size,
                                         max_shapes=data_config.synthetic.max_shapes)
    if data_config.name not in REAL_DATASETS:
        raise ValueError(f"Unknown dataset config.data.name={data_config.name!r}; known: "
                         f"{', '.join(map(repr, KNOWN))}.")
    module = REAL_DATASETS[data_config.name]
    if data_config.ignore_label != module.IGNORE_LABEL:
        raise ValueError(f"config.data.ignore_label={data_config.ignore_label}, but "
                         f"{data_config.name}'s labels mark ignored pixels with "
                         f"{module.IGNORE_LABEL}.")
    if data_config.source == "folder":
        source = _folder_source(data_config, split)
    elif data_config.source == "tfds":
        source = _tfds_source(data_config, split)
    else:
        raise ValueError(f"config.data.source={data_config.source!r} is not one of {SOURCES}.")
    scale = data_config.get("image_scale", 1.0)
    return source if scale == 1.0 else RescaledSource(source, scale)


def dataset_info(data_config: ml_collections.ConfigDict) -> dict:
    """What predictions need to know about `data_config.name`, without loading any data.

    Returns:
      {'class_names': tuple of K names, 'num_classes': K, 'palette': uint8 [256, 3],
      'ignore_label': int}.
    """
    if data_config.name == "synthetic_shapes":
        names, palette = synthetic.CLASS_NAMES, synthetic.SyntheticShapes.palette
    elif data_config.name == "voc":
        names, palette = voc.CLASS_NAMES, palettes.voc_palette()
    elif data_config.name == "camvid":
        names, palette = camvid.CLASS_NAMES, camvid.PALETTE
    else:
        raise ValueError(f"Unknown dataset config.data.name={data_config.name!r}; known: "
                         f"{', '.join(map(repr, KNOWN))}.")
    return {"class_names": tuple(names), "num_classes": len(names),
            "palette": palette.copy(), "ignore_label": int(data_config.get("ignore_label", 255))}
