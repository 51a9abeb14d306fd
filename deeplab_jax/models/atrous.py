"""Atrous (dilated) 3x3 convolutions, three exact ways, behind one module.

XLA's GPU backend has been reported to run a dilated convolution as a dense convolution with
a zero-filled (k-1)*r+1 kernel instead of cuDNN's native dilation (openxla/xla PR 32231:
"JAX shows 15-23x slower performance than PyTorch for dilated convolutions"). DeepLabv3's
block4 and ASPP are mostly dilated 3x3 convolutions, so `AtrousConv` offers exact
alternatives that a config switch (`config.model.atrous_impl`) picks:

- "xla": `lax.conv_general_dilated` with `rhs_dilation` (what `nn.Conv` does; bit-identical).
- "space_to_batch": as TF's `atrous_conv2d`: pad, rearrange the r*r phases of the input into
  the batch, run a dense (undilated) convolution, rearrange back and crop.
- "taps": the sum over the kh*kw kernel taps of a shifted-input 1x1 convolution (an einsum
  accumulated in float32); taps that see only padding are skipped (exact: they add zeros).

All three compute the same function of the same parameters: `AtrousConv` creates exactly
the parameters `nn.Conv` creates (`kernel` [kh, kw, in, out], `bias` [out] if `use_bias`,
same initialisers and dtypes), so checkpoints and parameter trees do not depend on the
implementation. The alternatives only apply at stride 1 with a rate above 1; anything else
runs `lax.conv_general_dilated`, whatever `impl` says.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init
from jax import lax

ATROUS_IMPLS = ("xla", "space_to_batch", "taps")
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")  # what nn.Conv uses for 4-D inputs

IntPair = Union[int, Sequence[int]]
PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]


def check_impl(impl: str) -> str:
    """Returns `impl` if it names an implementation, else raises a ValueError naming both."""
    if impl not in ATROUS_IMPLS:
        raise ValueError(f"Unknown atrous convolution impl {impl!r}; choose one of "
                         f"{ATROUS_IMPLS}.")
    return impl


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value}.")
    return value


def explicit_padding(padding: PaddingLike, in_hw: Sequence[int], kernel_hw: Sequence[int],
                     rates: Sequence[int], strides: Sequence[int] = (1, 1),
                     ) -> list[tuple[int, int]]:
    """The (low, high) padding of H and W that `lax.conv_general_dilated` would apply."""
    padding = canonicalize_padding(padding, 2)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"AtrousConv supports 'SAME', 'VALID' or explicit padding, not "
                             f"{padding!r}.")
        dilated = [(k - 1) * r + 1 for k, r in zip(kernel_hw, rates)]
        return [tuple(p) for p in lax.padtype_to_pads(tuple(in_hw), dilated, tuple(strides),
                                                      padding)]
    return [tuple(int(v) for v in p) for p in padding]


def _pad(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
    """Zero-pads (or, for negative amounts, crops) H and W of an NHWC array."""
    config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _conv_xla(x, kernel, strides, padding, rates, precision):
    return lax.conv_general_dilated(
        x, kernel, strides, canonicalize_padding(padding, 2), lhs_dilation=(1, 1),
        rhs_dilation=rates, dimension_numbers=DIMENSION_NUMBERS, feature_group_count=1,
        precision=precision)


def _conv_space_to_batch(x, kernel, pads, rates, out_hw, precision):
    """Dense VALID conv over the rh*rw phase sub-images of the padded input (TF's way).

    With xp the padded input, output[h] = sum_i xp[h + i*r] k[i]. Writing h = m*r + a, the
    phase-a sub-image s[m] = xp[m*r + a] gives output[m*r + a] = sum_i s[m + i] k[i]: a dense
    convolution. The padded size is rounded up to a multiple of r; the extra zeros only reach
    outputs beyond out_hw, which are cropped.
    """
    batch, height, width, channels = x.shape
    (rh, rw), (kh, kw) = rates, kernel.shape[:2]
    padded_h = height + pads[0][0] + pads[0][1]
    padded_w = width + pads[1][0] + pads[1][1]
    hq, wq = -(-padded_h // rh), -(-padded_w // rw)
    xp = _pad(x, [(pads[0][0], pads[0][1] + hq * rh - padded_h),
                  (pads[1][0], pads[1][1] + wq * rw - padded_w)])
    xs = xp.reshape(batch, hq, rh, wq, rw, channels).transpose(2, 4, 0, 1, 3, 5)
    xs = xs.reshape(rh * rw * batch, hq, wq, channels)
    z = lax.conv_general_dilated(xs, kernel, (1, 1), "VALID",
                                 dimension_numbers=DIMENSION_NUMBERS, precision=precision)
    hz, wz, features = hq - kh + 1, wq - kw + 1, z.shape[-1]
    y = z.reshape(rh, rw, batch, hz, wz, features).transpose(2, 3, 0, 4, 1, 5)
    y = y.reshape(batch, hz * rh, wz * rw, features)
    return y[:, :out_hw[0], :out_hw[1], :]


def _conv_taps(x, kernel, pads, rates, out_hw, precision):
    """sum_{i,j} shift(x, i*rh - pad_top, j*rw - pad_left) @ kernel[i, j], in float32."""
    batch, height, width, channels = x.shape
    (rh, rw), (kh, kw) = rates, kernel.shape[:2]
    (top, _), (left, _) = pads
    out_h, out_w = out_hw
    xp = _pad(x, pads)
    total = None
    for i in range(kh):
        rows = (i * rh, i * rh + out_h)  # rows of xp this tap reads
        if rows[1] <= top or rows[0] >= top + height:
            continue  # the tap sees only padding: it adds zeros
        for j in range(kw):
            cols = (j * rw, j * rw + out_w)
            if cols[1] <= left or cols[0] >= left + width:
                continue
            shifted = lax.slice(xp, (0, rows[0], cols[0], 0),
                                (batch, rows[1], cols[1], channels))
            term = jnp.einsum("bhwc,co->bhwo", shifted, kernel[i, j], precision=precision,
                              preferred_element_type=jnp.float32)
            total = term if total is None else total + term
    out_dtype = jnp.result_type(x.dtype, kernel.dtype)
    if total is None:  # every tap in padding
        return jnp.zeros((batch, out_h, out_w, kernel.shape[-1]), out_dtype)
    return total.astype(out_dtype)


def atrous_conv(x: jax.Array, kernel: jax.Array, *, rate: IntPair = 1, strides: IntPair = 1,
                padding: PaddingLike = "SAME", impl: str = "xla",
                precision: Any = None) -> jax.Array:
    """A 2-D convolution with atrous rate `rate`: NHWC input, HWIO kernel, no bias.

    The same function as `lax.conv_general_dilated(x, kernel, strides, padding,
    rhs_dilation=rate, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))` whatever `impl`
    (see the module docstring); "space_to_batch" and "taps" only apply at stride 1 with a
    rate above 1 (on a kernel dimension above 1), otherwise this runs the XLA convolution.

    Args:
      x: [B, H, W, C_in].
      kernel: [kh, kw, C_in, C_out], same dtype as x.
      rate: the atrous (kernel dilation) rate, an int or (rate_h, rate_w).
      strides: an int or (stride_h, stride_w).
      padding: 'SAME', 'VALID', an int, or ((top, bottom), (left, right)) as nn.Conv takes.
      impl: one of ATROUS_IMPLS.
      precision: as lax.conv_general_dilated's.
    """
    check_impl(impl)
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"atrous_conv takes NHWC inputs and HWIO kernels, got shapes "
                         f"{x.shape} and {kernel.shape}.")
    rates, strides = _pair(rate, "rate"), _pair(strides, "strides")
    kernel_hw = kernel.shape[:2]
    # Dilation of a size-1 kernel dimension changes nothing.
    rates = tuple(r if k > 1 else 1 for r, k in zip(rates, kernel_hw))
    if impl == "xla" or strides != (1, 1) or rates == (1, 1):
        return _conv_xla(x, kernel, strides, padding, rates, precision)
    pads = explicit_padding(padding, x.shape[1:3], kernel_hw, rates)
    out_hw = tuple(size + lo + hi - (k - 1) * r
                   for size, (lo, hi), k, r in zip(x.shape[1:3], pads, kernel_hw, rates))
    if min(out_hw) <= 0:  # An empty output: let XLA raise or return it.
        return _conv_xla(x, kernel, strides, padding, rates, precision)
    if impl == "space_to_batch":
        return _conv_space_to_batch(x, kernel, pads, rates, out_hw, precision)
    return _conv_taps(x, kernel, pads, rates, out_hw, precision)


class AtrousConv(nn.Module):
    """A 2-D convolution with an atrous rate, a drop-in for `nn.Conv(kernel_dilation=rate)`.

    Creates exactly the parameters nn.Conv creates (`kernel` [kh, kw, in, features] with
    nn.Conv's default initialiser, `bias` [features] if use_bias, in `param_dtype`) and
    computes in `dtype` as nn.Conv does (flax's promote_dtype), so the parameter tree and
    checkpoints are the same whichever `impl` runs. Inputs are [B, H, W, C] (2-D only; an
    int kernel_size means a square kernel here, unlike nn.Conv's 1-D meaning).

    Attributes:
      features: output channels.
      kernel_size: (kh, kw) or an int for a square kernel.
      rate: atrous rate (nn.Conv's kernel_dilation), an int or a pair.
      strides: an int or a pair; the alternatives only apply at stride 1.
      padding: 'SAME', 'VALID', an int or explicit ((top, bottom), (left, right)).
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as nn.Conv's.
      impl: one of ATROUS_IMPLS ('xla', 'space_to_batch', 'taps').
    """

    features: int
    kernel_size: IntPair = (3, 3)
    rate: IntPair = 1
    strides: IntPair = 1
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()
    impl: str = "xla"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        check_impl(self.impl)
        if inputs.ndim != 4:
            raise ValueError(f"AtrousConv takes [B, H, W, C] inputs, got shape {inputs.shape}.")
        kernel_shape = _pair(self.kernel_size, "kernel_size") + (inputs.shape[-1],
                                                                  self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = atrous_conv(inputs, kernel, rate=self.rate, strides=self.strides,
                        padding=self.padding, impl=self.impl, precision=self.precision)
        if bias is not None:
            y += bias.reshape((1, 1, 1, -1))
        return y
