"""DeepLabv3: ResNet-v2 backbone + ASPP + 1x1 classifier + bilinear upsampling (Sec. 3.3)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplab_jax.models.aspp import ASPP, default_atrous_rates
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.resnet import ResNetV2


# The pixel value that padding uses (training crops, evaluation canvases, predictions), as
# the official code pads with the mean pixel; `normalize_pixels` maps it to 0.
MEAN_PIXEL = 127.5


def normalize_pixels(images: jax.Array) -> jax.Array:
    """[0, 255] pixels -> [-1, 1], the convention of TF-slim's resnet_v2 ImageNet weights.

    It lives inside the model so that imported weights can never be fed pixels in another
    convention.
    """
    return images.astype(jnp.float32) / MEAN_PIXEL - 1.0


class DeepLabV3(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes].

    `train` switches BatchNorm between batch statistics (updated, needs
    mutable=['batch_stats']) and running averages; DeepLabv3 has no dropout, so a frozen-BN
    training stage (the paper's OS8 fine-tuning) applies the model with train=False.
    Intermediates for probing are sown into the 'intermediates' collection:
    backbone/block1..block4/output, aspp_output, logits_at_feature_resolution.
    """

    num_classes: int
    depth: int = 101
    output_stride: int = 16
    multi_grid: Sequence[int] = (1, 2, 4)
    atrous_rates: Optional[Sequence[int]] = None  # None: derived from the output stride.
    aspp_channels: int = 256
    width: int = 64
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5
    # How the 3x3 atrous convolutions run (backbone and ASPP): one of atrous.ATROUS_IMPLS.
    # Same parameters and same function whichever runs; only the speed differs.
    atrous_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        shared = dict(dtype=self.dtype, bn_momentum=self.bn_momentum,
                           bn_epsilon=self.bn_epsilon, atrous_impl=self.atrous_impl)
        features = ResNetV2(depth=self.depth, output_stride=self.output_stride,
                            multi_grid=tuple(self.multi_grid), width=self.width,
                            name="backbone", **shared)(normalize_pixels(images), train=train)
        rates = self.atrous_rates or default_atrous_rates(self.output_stride)
        x = ASPP(atrous_rates=tuple(rates), channels=self.aspp_channels, name="aspp",
                 **shared)(features, train=train)
        self.sow("intermediates", "aspp_output", x)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                         name="logits")(x)
        self.sow("intermediates", "logits_at_feature_resolution", logits)
        # The loss and metrics see float32 logits at the input resolution.
        return resize_bilinear(logits.astype(jnp.float32), images.shape[1:3])
