"""Dataset sources by name: `get_dataset(config.data, split)`.

A source is a sequence of {'image': uint8 [h, w, 3], 'label': uint8 [h, w]} examples with
`class_names`, `num_classes` and `ignore_label` attributes (see `input_pipeline.py`).
"""
from __future__ import annotations

import ml_collections

from deeplab_jax.data import synthetic

# Datasets whose input pipeline is still to come; named so the error can say so.
PLANNED = {
    "voc": "PASCAL VOC 2012 + SBD (the TFDS builder of the 'Real data' issue)",
    "camvid": "CamVid (the TFDS builder of the 'Real data' issue)",
}


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
    if data_config.name in PLANNED:
        raise NotImplementedError(
            f"config.data.name={data_config.name!r}: the input pipeline for "
            f"{PLANNED[data_config.name]} is not in this version of deeplab_jax. The model, "
            "training and evaluation are; use --config=configs/synthetic.py meanwhile.")
    raise ValueError(f"Unknown dataset config.data.name={data_config.name!r}; known: "
                     f"'synthetic_shapes', {', '.join(repr(name) for name in PLANNED)}.")


# Class names and colours of the planned datasets, so that a trained model's predictions can
# be named and drawn before (and without) their input pipelines.
VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")
CAMVID_CLASSES = (  # The 11-class CamVid of SegNet, with its published colours.
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)))


def dataset_info(data_config: ml_collections.ConfigDict) -> dict:
    """What predictions need to know about `data_config.name`, without loading any data.

    Returns:
      {'class_names': tuple of K names, 'num_classes': K, 'palette': uint8 [256, 3],
      'ignore_label': int}.
    """
    from deeplab_jax import visualize  # numpy and PIL only

    if data_config.name == "synthetic_shapes":
        names, palette = synthetic.CLASS_NAMES, synthetic.SyntheticShapes.palette
    elif data_config.name == "voc":
        names, palette = VOC_CLASS_NAMES, visualize.voc_palette()
    elif data_config.name == "camvid":
        names = tuple(name for name, _ in CAMVID_CLASSES)
        palette = visualize.palette_from_colors([color for _, color in CAMVID_CLASSES])
    else:
        raise ValueError(f"Unknown dataset config.data.name={data_config.name!r}; known: "
                         f"'synthetic_shapes', {', '.join(repr(name) for name in PLANNED)}.")
    return {"class_names": tuple(names), "num_classes": len(names),
            "palette": palette.copy(), "ignore_label": int(data_config.get("ignore_label", 255))}
