"""Models by name: one file per model, one line in `MODELS`, one config block.

`config.model.architecture` names the model; `config.model.<name>` is its block (its own
fields, defined by the model file's `default_config`), and the fields directly under
`config.model` are the shared backbone (depth, width, output stride, multi-grid, dtype, BN,
the auxiliary loss weight). A model file defines:

- `build(model_config, num_classes)`: the flax module;
- `default_config()`: its block, with a comment per field;
- `OUTPUT_STRIDES`: the output strides it can run at;
- `AUX_LOSS_WEIGHT`: its default weight of the auxiliary FCN head on block3 (`segmenter.py`);
- `RESNET_BACKBONE = False` if it is not built on the ResNet-v2 backbone (default True);
- optionally `resolve(config, eval_stride)`: its derived values and checks (a resolved copy
  of the whole config, changed in place), and `at_output_stride(block, train, eval)`: its
  block for evaluation at another output stride;
- optionally `num_cascaded_blocks(model_config)` (copies of block4 in the backbone, for the
  stride checks) and `pretrained_options(model_config)` (keyword arguments of
  `pretrained.load_backbone`): only `deeplabv3_cascade` has them.

Adding a model touches neither the training loop, the evaluation, the checkpoint code nor
the other models: write its file, add its line here.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import flax.linen as nn

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import (context_module, deeplabv1, deeplabv2, deeplabv3,
                                deeplabv3_cascade, deeplabv3plus, dilated_fcn,
                                dilation_frontend, fcn, gcn, per_pixel, pspnet, refinenet,
                                segnet, unet, unet_resnet)

if TYPE_CHECKING:  # only an annotation: building a model does not need ml_collections
    import ml_collections

MODELS: dict[str, Any] = {
    "deeplabv3": deeplabv3,  # Chen et al. 2017, the paper this codebase reproduces
    "deeplabv3_cascade": deeplabv3_cascade,  # the same paper's other model: block5-7 in cascade
    "deeplabv3plus": deeplabv3plus,  # Chen et al. 2018: ASPP + a stride-4 decoder
    "deeplabv2": deeplabv2,  # Chen et al. 2017 (TPAMI): ASPP by sum, no BN
    "deeplabv1": deeplabv1,  # Chen et al. 2015: VGG-16 LargeFOV (+ the dense CRF)
    "pspnet": pspnet,  # Zhao et al. 2017: pyramid pooling
    "fcn": fcn,  # Long et al. 2015: FCN-32s/16s/8s on the un-dilated backbone
    "dilated_fcn": dilated_fcn,  # torchvision's and mmsegmentation's FCN head at OS 8/16
    "unet": unet,  # Ronneberger et al. 2015: the original U-Net, from scratch
    "unet_resnet": unet_resnet,  # a U-Net decoder over the ResNet-v2 stages
    "segnet": segnet,  # Badrinarayanan et al. 2017: unpooling with the encoder's indices
    "dilation_frontend": dilation_frontend,  # Yu and Koltun 2016: their VGG-16 front end
    "context_module": context_module,  # Yu and Koltun 2016: a cascade of dilations
    "gcn": gcn,  # Peng et al. 2017: large-kernel GCN + boundary refinement, top-down
    "refinenet": refinenet,  # Lin et al. 2017: 4-cascaded multi-path refinement
    "per_pixel": per_pixel,  # the control: 1x1 convolutions only, no spatial context
}


def model_module(name: str) -> Any:
    """The file of model `name`.

    Raises:
      ConfigError: an unknown name, with the closest known one.
    """
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        raise ConfigError(f"config.model.architecture={name!r} is not a model"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; set it to one of {sorted(MODELS)}.")
    return MODELS[name]


def uses_resnet_backbone(name: str) -> bool:
    """Whether model `name` is built on the ResNet-v2 backbone (ImageNet weights, aux head)."""
    return getattr(model_module(name), "RESNET_BACKBONE", True)


def default_blocks() -> dict[str, Any]:
    """Every model's config block, by name (configs/voc.py puts them all in the schema)."""
    return {name: module.default_config() for name, module in MODELS.items()}


def get_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """Builds the model `config.model.architecture` names, from its block."""
    return model_module(model_config.architecture).build(model_config, num_classes)
