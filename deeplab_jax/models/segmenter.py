"""What every ResNet-based model shares: pixels in, backbone features, a head, logits out.

`ResNetSegmenter` is the base of DeepLabv3, DeepLabv3+, DeepLab v2, PSPNet and both FCNs.
Its `__call__` normalises the pixels, runs the ResNet-v2 backbone (named `backbone`, so
TF-slim's ImageNet weights load into every one of them), hands the features to the model's
`head`, and upsamples the head's logits to the input size (bilinear, aligned corners: the
official DeepLab convention). A model is a subclass that adds its own fields and defines
`head(features, train=...)`; the submodules it creates there sit at the top of the
parameter tree, beside `backbone` (DeepLabv3's `aspp` and `logits`, as they always were).

The auxiliary head (mmsegmentation's `auxiliary_head`, PSPNet's deep supervision, Zhao et
al. 2017 Sec. 3.4): with `aux_loss=True` the model also has an FCN head on block3 (named
`aux_head`). It runs only when the caller makes the `AUX_COLLECTION` collection mutable,
which the training step does, and sows its logits there at the input size. Evaluation,
prediction and export never make it mutable, so they never compute it.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.atrous import ATROUS_IMPLS
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.resnet import ResNetV2

# The pixel value that padding uses (training crops, evaluation canvases, predictions), as
# the official code pads with the mean pixel; `normalize_pixels` maps it to 0.
MEAN_PIXEL = 127.5
AUX_COLLECTION = "aux_outputs"  # where the auxiliary head's logits go (training only)
AUX_LOGITS = "aux_logits"
BACKBONE_FIELDS = ("depth", "output_stride", "multi_grid", "width", "dtype", "bn_momentum",
                   "bn_epsilon", "atrous_impl")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def normalize_pixels(images: jax.Array) -> jax.Array:
    """[0, 255] pixels -> [-1, 1], the convention of TF-slim's resnet_v2 ImageNet weights.

    It lives inside the model so that imported weights can never be fed pixels in another
    convention.
    """
    return images.astype(jnp.float32) / MEAN_PIXEL - 1.0


def compute_dtype(model_config: ml_collections.ConfigDict) -> Any:
    """`config.model.dtype` as a JAX dtype, resolved once, here."""
    if model_config.dtype not in DTYPES:
        raise ConfigError(f"config.model.dtype={model_config.dtype!r} is not supported; use one "
                          f"of {sorted(DTYPES)}, e.g. --config.model.dtype=float32.")
    return DTYPES[model_config.dtype]


def backbone_kwargs(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `ResNetSegmenter` fields from `config.model` (the dtype string resolved)."""
    kwargs = {name: model_config.get(name) for name in BACKBONE_FIELDS if name in model_config}
    kwargs["dtype"] = compute_dtype(model_config)
    if kwargs.get("atrous_impl", "xla") not in ATROUS_IMPLS:
        raise ConfigError(f"config.model.atrous_impl={kwargs['atrous_impl']!r} is not one of "
                          f"{ATROUS_IMPLS}; set one of them (xla is the default).")
    kwargs["multi_grid"] = tuple(model_config.multi_grid)
    kwargs["aux_loss"] = bool(model_config.get("aux_loss_weight") or 0.0)
    return kwargs


class ResNetSegmenter(nn.Module):
    """Base of the ResNet-v2 models: [B, H, W, 3] pixels in [0, 255] -> float32 logits
    [B, H, W, num_classes]. Subclasses define `head` (module docstring).

    Attributes:
      depth, output_stride, multi_grid, width, atrous_impl: the backbone (`resnet.py`).
      dtype: computation dtype; parameters stay float32, logits are float32.
      bn_momentum, bn_epsilon: every BatchNorm's decay and epsilon.
      aux_loss: whether the model has the auxiliary FCN head on block3.
      num_cascaded_blocks: copies of block4 in the backbone (block5..block7; `resnet.py`):
        set by `deeplabv3_cascade` only.
    """

    num_classes: int
    depth: int = 101
    output_stride: int = 16
    multi_grid: Sequence[int] = (1, 2, 4)
    width: int = 64
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5
    atrous_impl: str = "xla"
    aux_loss: bool = False
    num_cascaded_blocks: int = 0

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        """[B, h, w, num_classes] logits at any stride, from the backbone's features."""
        raise NotImplementedError

    # -- building blocks the heads share ---------------------------------------------------

    def conv(self, features: int, kernel: int = 1, **kwargs) -> nn.Module:
        """A conv in the model's dtype with float32 parameters (no bias unless asked)."""
        return nn.Conv(features, (kernel, kernel), use_bias=kwargs.pop("use_bias", False),
                       dtype=self.dtype, param_dtype=jnp.float32, **kwargs)

    def norm(self, train: bool, **kwargs) -> nn.Module:
        return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                            **kwargs)

    def conv_bn_relu(self, x: jax.Array, features: int, kernel: int, name: str, *,
                     train: bool, **kwargs) -> jax.Array:
        """conv (no bias) -> BN -> ReLU, named `name` and `name_norm`."""
        x = self.conv(features, kernel, name=name, **kwargs)(x)
        return nn.relu(self.norm(train, name=f"{name}_norm")(x))

    def preactivate(self, x: jax.Array, name: str, *, train: bool) -> jax.Array:
        """BN+ReLU of an un-normalised backbone feature (a tapped stage): what the next
        pre-activation unit's `preact_norm` would apply (`resnet.py`'s docstring)."""
        return nn.relu(self.norm(train, name=name)(x))

    def classifier(self, x: jax.Array, name: str = "logits", **kwargs) -> jax.Array:
        """The 1x1 conv with bias to the classes, in float32 out."""
        return self.conv(self.num_classes, 1, use_bias=True, name=name, **kwargs)(x)

    # -- the model -------------------------------------------------------------------------

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        features = ResNetV2(depth=self.depth, output_stride=self.output_stride,
                            multi_grid=tuple(self.multi_grid), width=self.width,
                            dtype=self.dtype, bn_momentum=self.bn_momentum,
                            bn_epsilon=self.bn_epsilon, atrous_impl=self.atrous_impl,
                            num_cascaded_blocks=self.num_cascaded_blocks,
                            name="backbone")(normalize_pixels(images), train=train)
        if self.aux_loss and self.is_mutable_collection(AUX_COLLECTION):
            self.sow(AUX_COLLECTION, AUX_LOGITS, self._aux_logits(features, images, train))
        logits = self.head(features, train=train)
        # The loss and metrics see float32 logits at the input resolution.
        return resize_bilinear(logits.astype(jnp.float32), images.shape[1:3])

    def _aux_logits(self, features, images, train):
        """mmsegmentation's auxiliary FCNHead on block3: 3x3 conv to 256, BN, ReLU, dropout
        0.1, 1x1 to the classes (configs/_base_/models/pspnet_r50-d8.py)."""
        from deeplab_jax.models.dilated_fcn import FCNHead  # pylint: disable=import-outside-toplevel

        x = self.preactivate(features["block3"], "aux_preact_norm", train=train)
        logits = FCNHead(self.num_classes, channels=self.width * 4, num_convs=1,
                         concat_input=False, dropout_rate=0.1, dtype=self.dtype,
                         bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                         name="aux_head")(x, train=train)
        return resize_bilinear(logits.astype(jnp.float32), images.shape[1:3])
