"""The Dilation front end (Yu and Koltun, ICLR 2016, Sec. 4 "Front end").

VGG-16 (`vgg.py`, plain: biases, no BN) adapted to dense prediction by removing its last two
poolings and the striding they did: pool1-3 stay (2x2, stride 2), pool4 and pool5 are gone,
so conv5's three layers run at dilation 2 and fc6, a 7x7 convolution with VGG's 4096
channels, at dilation 4; the output stride is 8. Then:

  fc6: 7x7, dilation 4, 4096, ReLU, dropout 0.5 -> fc7: 1x1, 4096, ReLU, dropout 0.5
  -> final: 1x1 to the classes (N(0, 0.001) weights, zero biases).

The paper also removes the padding of the intermediate feature maps (the authors' code
reflection-pads the input by 186 pixels instead); here every convolution is SAME-padded, as
everywhere in this codebase, and the class scores are upsampled bilinearly to the image (the
code's `make_upsample` is a fixed bilinear deconvolution). The network trains from scratch
(He initialisation, `vgg.HE_INIT`; the paper's starts from VGG-16 on ImageNet); dropout is
Caffe's, element-wise, in training only. Reference: fyu/dilation @0f10574, network.py L73-L128
(`build_frontend_vgg`: `dilations = [0, 0, 0, 0, 2, 4]` L76, the poolings L102-L106, fc6
L108-L112, drop6 L114, fc7 L115-L118, drop7 L120, final L121-L127) and
models/dilation8_pascal_voc_deploy.prototxt.

Parameter names as the reference's: conv1_1 ... conv5_3, fc6, fc7 (VGG-16's own, with
ImageNet's shapes at the default widths: fc6 is VGG's 25088x4096 layer as a 7x7x512x4096
kernel) and final. `context_module` with front_end="dilation" is this network with the context
module on its class scores, its front end's parameters named exactly as here, so that a
trained front end initialises it by name (the paper trains the front end first, then the
context module on its output, then both). `config.model.output_stride` must be 8. The stride-8
class scores are sown as `intermediates/logits_at_feature_resolution`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deeplab_jax.models import vgg
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import compute_dtype, normalize_pixels

OUTPUT_STRIDES = (8,)  # pool1-3; the model has no other
RESNET_BACKBONE = False  # VGG-16: no ImageNet ResNet weights, no block3 for an auxiliary head
AUX_LOSS_WEIGHT = 0.0
# No pooling after conv4 and conv5 (network.py L102: a group followed by a dilated one is not
# pooled); conv5 at dilation 2, fc6 at 4 (L76).
POOLS = (vgg.IMAGENET_POOL,) * 3 + (None, None)
DILATIONS = (1, 1, 1, 1, 2)
FC6_KERNEL_SIZE = 7
FC6_RATE = 4
CLASSIFIER_INIT_STD = 0.001  # `final`'s gaussian weight filler (network.py L126)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        width_divisor=1,  # divides every VGG-16 width (4 for CPU-sized runs)
        fc_channels=4096,  # fc6 and fc7 (VGG's; 256 for CPU-sized runs)
        dropout_rate=0.5,  # after fc6 and after fc7, in training (drop6, drop7)
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    del eval_stride  # 8, checked against OUTPUT_STRIDES
    vgg.check_config(config, "dilation_frontend", "the Dilation front end")


def build_kwargs(model_config: ml_collections.ConfigDict, block: ml_collections.ConfigDict
                 ) -> dict[str, Any]:
    """`DilationFrontEnd`'s fields from `block` (this model's or context_module's)."""
    return dict(width_divisor=block.width_divisor, fc_channels=block.fc_channels,
                dropout_rate=block.dropout_rate, atrous_impl=model_config.atrous_impl,
                dtype=compute_dtype(model_config))


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "DilationFrontEnd":
    return DilationFrontEnd(num_classes=num_classes,
                            **build_kwargs(model_config, model_config.dilation_frontend))


class DilationFrontEnd(nn.Module):
    """[B, H, W, 3] pixels in [0, 255] -> float32 logits [B, H, W, num_classes].

    `class_scores` is the network up to `final`, at stride 8 (what the context module reads).
    Training (`train=True`) applies dropout, so it needs `rngs={"dropout": key}`.
    """

    num_classes: int
    width_divisor: int = 1
    fc_channels: int = 4096
    dropout_rate: float = 0.5
    atrous_impl: str = "xla"
    dtype: Any = jnp.float32

    def class_scores(self, images: jax.Array, *, train: bool) -> jax.Array:
        """[B, H, W, 3] pixels -> [B, ceil(H/8), ceil(W/8), num_classes] (`final`'s output).

        Called from a compact method (this model's or a subclass's): its layers sit at the top
        of the parameter tree.
        """
        encoder = vgg.VGG16(width_divisor=self.width_divisor, dilations=DILATIONS, pools=POOLS,
                            atrous_impl=self.atrous_impl, dtype=self.dtype)
        nn.share_scope(self, encoder)  # conv1_1 ... conv5_3 beside fc6, as the reference's
        x, _ = encoder(normalize_pixels(images).astype(self.dtype), train=train)
        x = vgg.fully_connected_as_convolutions(
            x, channels=self.fc_channels, fc6_kernel_size=FC6_KERNEL_SIZE, fc6_rate=FC6_RATE,
            dropout_rate=self.dropout_rate, train=train, atrous_impl=self.atrous_impl,
            dtype=self.dtype)
        scores = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                         kernel_init=nn.initializers.normal(CLASSIFIER_INIT_STD),
                         name="final")(x)
        self.sow("intermediates", "logits_at_feature_resolution", scores)
        return scores

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        scores = self.class_scores(images, train=train)
        return resize_bilinear(scores.astype(jnp.float32), images.shape[1:3])
