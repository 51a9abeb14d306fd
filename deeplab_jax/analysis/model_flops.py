"""Model FLOPs: every convolution tap and matmul of a forward pass, counted from its jaxpr.

XLA's cost analysis (`xla_cost.py`) counts what the compiled program computes, which
depends on how the backend lowered it (taps that only read padding may be dropped). This
counts what the model asks for: 2 * output elements * kh * kw * C_in / groups per
convolution and 2 * M * N * K per dot_general, padding taps included, the convention of
torch's `FlopCounterMode` and of MFU figures. It is the same whichever atrous
implementation runs (build the model with "xla").
"""
from __future__ import annotations

from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np


def forward_flops(model: Any, height: int, width: int | None = None) -> float:
    """FLOPs of one image's training-mode forward of `model` at `height` x `width`."""
    jaxprs_in_params = getattr(jax.extend.core, "jaxprs_in_params", None)
    if jaxprs_in_params is None:  # older JAX
        jaxprs_in_params = jax.core.jaxprs_in_params
    images = jax.ShapeDtypeStruct((1, height, width or height, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}))(
            variables, images)
    total = 0.0

    def visit(jaxpr):
        nonlocal total
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
                taps = np.prod([rhs.shape[d] for d in spec[2:]])
                total += 2.0 * np.prod(out.shape) * taps * rhs.shape[spec[1]]
            elif eqn.primitive.name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
                total += 2.0 * np.prod(out.shape) * np.prod([lhs.shape[d] for d in lhs_contract])
            for sub in jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return total
