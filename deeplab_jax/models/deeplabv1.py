"""DeepLab v1, DeepLab-LargeFOV (Chen et al., ICLR 2015, Sec. 3.1 and Table 2).

VGG-16 (`vgg.py`, plain: biases, no BN) turned into a dense feature extractor at output
stride 8 (Sec. 3.1, "the hole algorithm"): pool4 and pool5 keep stride 1, so conv5's three
layers run at dilation 2, and fc6 at the dilation that keeps the field of view it had. The
fully connected layers become convolutions; LargeFOV (Table 2's last row) subsamples fc6 to a
3x3 kernel at input stride (dilation) 12 and thins fc6 and fc7 to 1024 channels: 20.5M
parameters (VGG-16: 138M), a 224-pixel field of view. After conv5_3:

  pool5 (3x3/1 max) -> pool5a (3x3/1 average) -> fc6: 3x3, dilation 12, 1024, ReLU,
  dropout 0.5 -> fc7: 1x1, 1024, ReLU, dropout 0.5 -> fc8: 1x1 to the classes
  (N(0, 0.01) weights, zero biases).

Every max pooling is 3x3 with pad 1 (the release prototxt's header: VGG's 2x2 windows
changed "to 3 while retaining stride = 2", to align the layers' responses), stride 2 for
pool1-3 and 1 for pool4 and pool5; pool5a, a parameter-free 3x3/1 average pooling (pad 1,
the padding counted, as Caffe's), smooths conv5's output before fc6. Dropout is Caffe's:
element-wise, in training only. Reference: the authors' release,
DeepLab-LargeFOV/train.prototxt (ccvl.stat.ucla.edu/ccvl/DeepLab-LargeFOV/), which is in no
repository we could read; its layers as the ports that follow it have them, e.g.
wangleihitcs/DeepLab-V1-PyTorch @950b489, nets/vgg.py L10-L67 (the poolings L16, L23, L32,
L42, L52; pool5a L54; fc6 L57; fc8's N(0, 0.01) L82-L83; its dropout is channel-wise, Caffe's
is not).

Differences, all this codebase's conventions: the logits are upsampled bilinearly to the
image in training as well (the paper downsamples the ground truth by 8 in training and
upsamples the logits at test, Sec. 4); pixels are normalised to [-1, 1]; the network trains
from scratch (He initialisation, `vgg.HE_INIT`; the paper starts from ImageNet); the
convolutions and poolings are SAME-padded, which is Caffe's pad 1 on the 8k+1-pixel sides
DeepLab uses (`vgg.py`). DeepLab v1 evaluates with the fully connected CRF (Sec. 3.2), which
any model here can end with (`config.eval.crf`, `deeplab_jax/evaluation/crf.py`): nothing of
it is in this file.

Parameter names as the prototxt's: conv1_1 ... conv5_3, fc6, fc7, fc8 (its `fc8_voc12`
without the dataset). The feature stride is 8: `config.model.output_stride` must be 8
(`OUTPUT_STRIDES`). The stride-8 logits are sown as
`intermediates/logits_at_feature_resolution`, as DeepLabv3 sows its.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.errors import ConfigError
from deeplab_jax.models import vgg
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import compute_dtype, normalize_pixels

OUTPUT_STRIDES = (8,)  # pool1-3; the model has no other
RESNET_BACKBONE = False  # VGG-16: no ImageNet ResNet weights, no block3 for an auxiliary head
AUX_LOSS_WEIGHT = 0.0
FEATURE_STRIDE = 8
# The poolings after conv1 ... conv5 (Sec. 3.1: pool4 and pool5 at stride 1) and the
# dilations of the five groups (conv5 at 2: it follows pool4's skipped subsampling).
POOLS = (vgg.Pool(3, 2), vgg.Pool(3, 2), vgg.Pool(3, 2), vgg.Pool(3, 1), vgg.Pool(3, 1))
DILATIONS = (1, 1, 1, 1, 2)
CLASSIFIER_INIT_STD = 0.01  # fc8's gaussian weight filler


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        width_divisor=1,  # divides every VGG-16 width (4 for CPU-sized runs)
        fc_channels=1024,  # fc6 and fc7 (LargeFOV's; 4096 is VGG's, Table 2's DeepLab-CRF-7x7)
        fc6_kernel_size=3,  # LargeFOV's 3x3 (Table 2: 7 or 4 for the other rows)
        fc6_rate=12,  # fc6's dilation ("input stride") at output stride 8: LargeFOV's 12
        dropout_rate=0.5,  # after fc6 and after fc7, in training
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride  # 8, checked against OUTPUT_STRIDES
    vgg.check_config(config, "deeplabv1", "DeepLab v1")
    block = config.model.deeplabv1
    for field in ("fc6_kernel_size", "fc6_rate"):
        if not isinstance(block[field], int) or block[field] < 1:
            raise ConfigError(f"config.model.deeplabv1.{field}={block[field]!r} must be a whole "
                              f"number >= 1; set e.g. --config.model.deeplabv1.{field}="
                              f"{default_config()[field]} (LargeFOV's).")
    # A rate at least the feature map's side makes fc6 a 1x1 convolution (every other tap
    # reads padding): worth a warning, not an error (larger evaluation images may follow).
    for where, size in (("training crops", config.data.crop_size),
                        ("evaluation canvases", config.data.canvas_size)):
        side = max(math.ceil(s / FEATURE_STRIDE) for s in size)
        if block.fc6_kernel_size > 1 and block.fc6_rate >= side:
            logging.warning("config.model.deeplabv1.fc6_rate=%d on %s %s (feature map side %d "
                            "at most): every tap of fc6 but the centre reads padding, so fc6 "
                            "acts as a 1x1 convolution; a rate below %d keeps its context.",
                            block.fc6_rate, where, tuple(size), side, side)


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DeepLabV1":
    block = model_config.deeplabv1
    return DeepLabV1(num_classes=num_classes, width_divisor=block.width_divisor,
                     fc_channels=block.fc_channels, fc6_kernel_size=block.fc6_kernel_size,
                     fc6_rate=block.fc6_rate, dropout_rate=block.dropout_rate,
                     atrous_impl=model_config.atrous_impl, dtype=compute_dtype(model_config))


class DeepLabV1(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes].

    Training (`train=True`) applies dropout, so it needs `rngs={"dropout": key}`.
    """

    num_classes: int
    width_divisor: int = 1
    fc_channels: int = 1024
    fc6_kernel_size: int = 3
    fc6_rate: int = 12
    dropout_rate: float = 0.5
    atrous_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        encoder = vgg.VGG16(width_divisor=self.width_divisor, dilations=DILATIONS, pools=POOLS,
                            atrous_impl=self.atrous_impl, dtype=self.dtype)
        nn.share_scope(self, encoder)  # conv1_1 ... conv5_3 beside fc6, as the prototxt's
        x, _ = encoder(normalize_pixels(images).astype(self.dtype), train=train)
        x = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME")  # pool5a
        x = vgg.fully_connected_as_convolutions(
            x, channels=self.fc_channels, fc6_kernel_size=self.fc6_kernel_size,
            fc6_rate=self.fc6_rate, dropout_rate=self.dropout_rate, train=train,
            atrous_impl=self.atrous_impl, dtype=self.dtype)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                         kernel_init=nn.initializers.normal(CLASSIFIER_INIT_STD),
                         name="fc8")(x)
        self.sow("intermediates", "logits_at_feature_resolution", logits)
        return resize_bilinear(logits.astype(jnp.float32), images.shape[1:3])
