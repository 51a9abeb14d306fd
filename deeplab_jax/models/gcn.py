"""GCN (Peng et al. 2017, "Large Kernel Matters"): global convolution and boundary refinement.

The whole pipeline of the paper's Fig. 2A, on the un-dilated backbone (output stride 32):

    stage (stride 32, 16, 8, 4) -> GCN -> BR -> a score map per stage (num_classes channels)
    stride 32 -> Deconv -> + stride 16 -> BR -> Deconv -> + stride 8 -> BR
              -> Deconv -> + stride 4 -> BR -> Deconv -> BR (stride 2) -> Deconv -> BR (stride 1)

- Global Convolutional Network (Sec. 3.1, Fig. 2B; `GlobalConvolution`): two branches, k x 1
  then 1 x k, and 1 x k then k x 1, each straight to the classes, summed: dense connections
  within a k x k window at 2/k of a k x k conv's parameters. No nonlinearity and no BN
  between or after the convolutions (the paper: "we do not use any nonlinearity after
  convolution layers"); each convolution has a bias, as the reference's `nn.Conv2d`s do.
  k = 15 in the paper (Sec. 4.1.1, Table 1: the largest, "global" k for the 16x16 res-5 map
  of a 512x512 input); one k for all four stages, as the reference (one (7, 7) for all;
  an earlier version, @0295d53 models/gcn.py L64-66, sized k per stage to about the map's
  side, which one k cannot do at every stage).
- Boundary Refinement (Sec. 3.2, Fig. 2C; `BoundaryRefinement`): a residual block on the
  score map, S + conv3x3(ReLU(conv3x3(S))), with biases and no BN. Nine of them, where Fig.
  2A puts them: one after each GCN (`gcn{s}_refine`), one after each of the three sums
  (`refine16`, `refine8`, `refine4`), and one after each of the two last upsamplings, to
  stride 2 and to the image (`refine2`, `refine1`).
- Upsampling (Sec. 3.2: "score maps of lower resolution will be upsampled with a
  deconvolution layer, then added up with higher ones"; Fig. 2A's "Deconv"): five 2x
  deconvolutions (`upsample{s}`, s the stride they produce), learned, num_classes to
  num_classes, 3x3 with stride 2, without bias. Each is initialised to bilinear interpolation
  of each class on its own (the initialisation of FCN, whose upsampling the paper follows:
  shelhamer/fcn.berkeleyvision.org surgery.py `interp`), and produces 2n-1 pixels from n:
  with a 3x3 kernel that is exactly the aligned-corners 2x interpolation, the convention of
  every model here (`resize.py`), so at initialisation the deconvolutions are the bilinear
  upsampling of the reference, and training may change them. Where a stage's map is not 2n-1 (input sizes not
  of the form 32k+1) the deconvolution's output is resized to it (aligned corners); the last
  map, 4n-3 from the stride-4 size n, is the input size whenever that is 4m+1, and the base
  class resizes it to the input otherwise (by at most 3 pixels). `upsampling="bilinear"`
  replaces the deconvolutions by fixed bilinear resizing straight to each size (no
  parameters), as the reference does.

Reference implementations: zijundeng/pytorch-semantic-segmentation @4a1721f, models/gcn.py
(itself from ycszen/pytorch-ss gcn.py): `_GlobalConvModule` L11-33 (the two branches, in_dim
-> classes -> classes, padding (k-1)/2, biases: `nn.Conv2d`'s default), `_BoundaryRefineModule`
L36-48 (conv, ReLU, conv, + x, biases, no BN), L64-67 (one k for all four stages), L90-99 (the
nine BRs where Fig. 2A has them; it upsamples with `F.upsample_bilinear`, which aligns
corners, where the paper deconvolves). GeorgeSeif/Semantic-Segmentation-Suite @f7ae312,
models/GCN.py on TF-slim's resnet_v2 (our backbone): `ConvUpscaleBlock` L10-16 (the
deconvolution: `slim.conv2d_transpose`, 3x3, stride 2) and `build_gcn` (the same nine BRs and
five deconvolutions; its extra 1x1 "logits" conv at the end is not in the paper, nor here).
Both initialise the convolutions with Kaiming normal (zijundeng's utils/misc.py L16-25); here
they have flax's default (LeCun normal, zero bias), as every head of this codebase, but for
the second conv of each BR.

Initialisation of the BRs: nine residual blocks in a chain, with no BN and no nonlinearity
between the GCN and the scores, each add their full-scale branch to the scores. From
scratch in the CamVid protocol (depth-14 width-16 backbone, 65x97 crops, SGD with momentum)
the logits started at std 2.9 and training diverged within 12 steps at lr 0.01 (and 0.1, 0.03;
it trained at 0.001). With each BR's second conv at a tenth of LeCun's scale (std, i.e.
variance x 0.01: `BR_OUTPUT_INIT`) every BR starts near the identity, as the zero-initialised
last layer of a residual branch does in networks without normalisation (Fixup, Zhang et al.
2019; Goyal et al. 2017's zero-gamma), while every parameter keeps a gradient at the first
step: the logits start at std 1.5 and 600 steps at 0.01 train (mIoU 0.29 at 600 steps).
The GCN modules keep LeCun's scale: they are the score layers every level of the sum reads.

The backbone: the paper's (and the reference's) ResNet-152 is the original, post-activation
ResNet, whose stages end in a ReLU after BN'd branches. Ours is the pre-activation ResNet-v2,
whose stage outputs are raw residual sums, un-normalised and signed, their scale growing with
depth (`resnet.py`); each next unit normalises them first (its `preact_norm`). A GCN, linear
and without BN, fed those sums would see four stages on four different scales, and the sums
of score maps would be ruled by the largest. So, as unet_resnet.py, fcn.py and
deeplabv3plus.py do, each tapped stage (strides 16, 8, 4) gets its own BN+ReLU
(`stride{s}_preact_norm`, `segmenter.preactivate`): what the next unit's `preact_norm` would
apply, and the backbone's parameters stay TF-slim's, so its ImageNet weights load here as in
every ResNet-based model. The stride-32 map is the backbone's `out`, already through its
`postnorm`. The stride-4 tap is, as for every head here, the input of block1's last
(striding) unit (`resnet.py`), where the reference taps res-2's output (`layer1`, L59).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deeplab_jax.errors import ConfigError
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import ResNetSegmenter, backbone_kwargs

OUTPUT_STRIDES = (32,)  # the un-dilated backbone: a GCN on each of strides 32, 16, 8 and 4
AUX_LOSS_WEIGHT = 0.0  # the paper has none
STAGE_STRIDES = (32, 16, 8, 4)  # res-5 to res-2, coarse to fine (Fig. 2A)
FINAL_STRIDES = (2, 1)  # after the last sum: Deconv + BR to stride 2, then to the image
UPSAMPLINGS = ("deconv", "bilinear")
# A boundary refinement's second conv starts a tenth of LeCun's scale, so each of the nine
# (unnormalised, residual) BRs starts near the identity: module docstring, "Initialisation".
BR_OUTPUT_INIT = nn.initializers.variance_scaling(0.01, "fan_in", "normal")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        # k of every GCN module (odd): 15 in the paper, for the 16x16 res-5 map of a 512x512
        # input (Sec. 4.1.1); about the stride-32 map's side makes sense (e.g. 3-5 at 90x120).
        kernel_size=15,
        # "deconv": learned 2x deconvolutions that start as bilinear interpolation (Fig. 2A);
        # "bilinear": fixed bilinear upsampling, no parameters (the reference implementation).
        upsampling="deconv",
    ))


def resolve(config: ml_collections.ConfigDict, eval_stride: int) -> None:
    block = config.model.gcn
    kernel_size = block.kernel_size
    if (isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer))
            or kernel_size < 1 or kernel_size % 2 == 0):
        raise ConfigError(f"config.model.gcn.kernel_size={kernel_size!r} must be an odd integer "
                          ">= 1, so that the k x 1 and 1 x k kernels are centred on their pixel; "
                          "set e.g. --config.model.gcn.kernel_size=15 (the paper's) or 7.")
    if block.upsampling not in UPSAMPLINGS:
        raise ConfigError(f"config.model.gcn.upsampling={block.upsampling!r} is not one of "
                          f"{UPSAMPLINGS}; set 'deconv' (the paper's) or 'bilinear'.")
    for name, stride in (("model", config.model.output_stride), ("eval", eval_stride)):
        if stride not in OUTPUT_STRIDES:
            raise ConfigError(
                f"config.{name}.output_stride={stride}: GCN puts a GCN module on each of the "
                "un-dilated backbone's strides 4, 8, 16 and 32, so it needs output stride 32. "
                f"Set --config.{name}.output_stride=32.")


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> "GCN":
    block = model_config.gcn
    return GCN(num_classes=num_classes, kernel_size=int(block.kernel_size),
               upsampling=block.upsampling, **backbone_kwargs(model_config))


def bilinear_upsampling_kernel(key: jax.Array, shape: tuple[int, ...],
                               dtype: Any = jnp.float32) -> jax.Array:
    """[3, 3, C, C]: each class to itself with the 2x bilinear taps (0.5, 1, 0.5) per axis.

    FCN's deconvolution initialisation (surgery.py `interp`: the bilinear filter on the
    diagonal, zero across classes); with stride 2 and 2n-1 outputs it is aligned-corners
    interpolation.
    """
    del key
    height, width, in_features, out_features = shape
    if (height, width) != (3, 3):
        raise ValueError(f"the 2x bilinear kernel is 3x3, not {height}x{width}")
    taps = np.array([0.5, 1.0, 0.5])
    kernel = np.outer(taps, taps)[:, :, None, None] * np.eye(in_features, out_features)
    return jnp.asarray(kernel, dtype)


class GlobalConvolution(nn.Module):
    """Sec. 3.1, Fig. 2B: (k x 1 then 1 x k) + (1 x k then k x 1), all to the classes, linear."""

    num_classes: int
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        conv = functools.partial(nn.Conv, self.num_classes, padding="SAME", use_bias=True,
                                 dtype=self.dtype, param_dtype=jnp.float32)
        left = conv((k, 1), name="left_k_by_1")(x)
        left = conv((1, k), name="left_1_by_k")(left)
        right = conv((1, k), name="right_1_by_k")(x)
        right = conv((k, 1), name="right_k_by_1")(right)
        return left + right


class BoundaryRefinement(nn.Module):
    """Sec. 3.2, Fig. 2C: S + conv3x3(ReLU(conv3x3(S))) on a score map, at its width."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, scores: jax.Array) -> jax.Array:
        conv = functools.partial(nn.Conv, scores.shape[-1], (3, 3), padding="SAME",
                                 use_bias=True, dtype=self.dtype, param_dtype=jnp.float32)
        residual = conv(name="conv1")(scores)
        residual = conv(name="conv2", kernel_init=BR_OUTPUT_INIT)(nn.relu(residual))
        return scores + residual


class GCN(ResNetSegmenter):
    """ResNet-v2 at output stride 32 + GCN and BR on four stages, top-down (module docstring).

    Attributes:
      kernel_size: k of every GCN module (odd).
      upsampling: "deconv" (learned, Fig. 2A) or "bilinear" (fixed, no parameters).
    """

    kernel_size: int = 15
    upsampling: str = "deconv"

    def head(self, features: dict[str, jax.Array], *, train: bool) -> jax.Array:
        stage_scores = {}
        for stride in STAGE_STRIDES:  # Fig. 2A's columns: stage -> GCN -> BR
            if stride == 32:
                stage = features["out"]  # already through the backbone's postnorm
            else:
                stage = self.preactivate(features[f"stride{stride}"],
                                         f"stride{stride}_preact_norm", train=train)
            scores = GlobalConvolution(self.num_classes, self.kernel_size, dtype=self.dtype,
                                       name=f"gcn{stride}")(stage)
            stage_scores[stride] = BoundaryRefinement(dtype=self.dtype,
                                                      name=f"gcn{stride}_refine")(scores)
        scores = stage_scores[32]
        for stride in STAGE_STRIDES[1:]:  # Deconv, sum with the finer stage, BR
            finer = stage_scores[stride]
            scores = self.upsample(scores, stride, finer.shape[1:3]) + finer
            scores = BoundaryRefinement(dtype=self.dtype, name=f"refine{stride}")(scores)
        for stride in FINAL_STRIDES:  # Deconv, BR: to stride 2, then to the image
            scores = self.upsample(scores, stride)
            scores = BoundaryRefinement(dtype=self.dtype, name=f"refine{stride}")(scores)
        return scores

    def upsample(self, scores: jax.Array, stride: int,
                 size: Optional[tuple[int, int]] = None) -> jax.Array:
        """2x to stride `stride`: to `size`, or to 2n-1 (aligned corners) without one."""
        doubled = tuple(2 * side - 1 for side in scores.shape[1:3])
        if self.upsampling == "bilinear":
            return resize_bilinear(scores, size or doubled)
        if self.upsampling != "deconv":
            raise ValueError(f"upsampling={self.upsampling!r} is not one of {UPSAMPLINGS}")
        # Transposed 3x3 conv, stride 2, one pixel cropped per side: n -> 2n-1.
        scores = nn.ConvTranspose(self.num_classes, (3, 3), strides=(2, 2),
                                  padding=((1, 1), (1, 1)), use_bias=False,
                                  kernel_init=bilinear_upsampling_kernel, dtype=self.dtype,
                                  param_dtype=jnp.float32, name=f"upsample{stride}")(scores)
        return resize_bilinear(scores, size or doubled)
