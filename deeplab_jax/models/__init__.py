"""Models. `get_model(config.model, num_classes)` is the one entry point."""
from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from deeplab_jax.models.atrous import ATROUS_IMPLS
from deeplab_jax.models.deeplab import DeepLabV3
from deeplab_jax.models.per_pixel import PerPixelClassifier

if TYPE_CHECKING:  # only an annotation: building a model does not need ml_collections
    import ml_collections

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ARCHITECTURES = ("deeplabv3", "per_pixel")


def get_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """Builds the model of `config.model`; the dtype string is resolved here, once.

    'deeplabv3' is the paper's model; 'per_pixel' is the 1x1-convolutions-only control
    (its width is `aspp_channels`). `atrous_impl` picks how 3x3 atrous convolutions run
    (models/atrous.py); a config without the field gets "xla".
    """
    if model_config.dtype not in DTYPES:
        raise ValueError(
            f"config.model.dtype={model_config.dtype!r} is not supported; use one of "
            f"{sorted(DTYPES)}.")
    common = dict(num_classes=num_classes, dtype=DTYPES[model_config.dtype],
                  bn_momentum=model_config.bn_momentum, bn_epsilon=model_config.bn_epsilon)
    if model_config.architecture == "per_pixel":
        return PerPixelClassifier(width=model_config.aspp_channels, **common)
    if model_config.architecture != "deeplabv3":
        raise ValueError(f"config.model.architecture={model_config.architecture!r} is not one "
                         f"of {ARCHITECTURES}.")
    atrous_impl = model_config.get("atrous_impl", "xla")
    if atrous_impl not in ATROUS_IMPLS:
        raise ValueError(f"config.model.atrous_impl={atrous_impl!r} is not one of "
                         f"{ATROUS_IMPLS}.")
    return DeepLabV3(
        depth=model_config.depth,
        output_stride=model_config.output_stride,
        multi_grid=tuple(model_config.multi_grid),
        atrous_rates=tuple(model_config.atrous_rates) if model_config.atrous_rates else None,
        aspp_channels=model_config.aspp_channels,
        width=model_config.width,
        atrous_impl=atrous_impl,
        **common,
    )
