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
