"""experiments/cpu_speed/kernel_grads.py: per-tap kernel gradients equal XLA's, and apply."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments.cpu_speed import kernel_grads

NHWC = ("NHWC", "HWIO", "NHWC")


def _grads(kernel_size, rate, padding, height=7, width=5):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, height, width, 3))
    kernel = jax.random.normal(kk, (kernel_size, kernel_size, 3, 4))

    def loss(x, kernel):
        y = lax.conv_general_dilated(x, kernel, (1, 1), padding, rhs_dilation=(rate, rate),
                                     dimension_numbers=NHWC)
        return jnp.sum(y * jax.random.normal(kg, y.shape))

    reference = jax.grad(loss, argnums=(0, 1))(x, kernel)
    with kernel_grads.dot_kernel_grads():
        jaxpr = str(jax.make_jaxpr(loss)(x, kernel))
        ours = jax.grad(loss, argnums=(0, 1))(x, kernel)
    return reference, ours, jaxpr


@pytest.mark.parametrize("kernel_size, rate, padding", [
    (1, 1, "SAME"), (3, 1, "SAME"), (3, 2, "SAME"),
    (3, 6, "SAME"),  # the map is smaller than the rate: most taps read only padding
    (3, 2, ((2, 0), (1, 3))), (3, 1, "VALID")])
def test_per_tap_kernel_gradient_equals_xla(kernel_size, rate, padding):
    (dx_ref, dk_ref), (dx, dk), jaxpr = _grads(kernel_size, rate, padding)
    assert "custom_vjp" in jaxpr  # the swapped convolution was the one differentiated
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)


def test_strided_convolutions_are_left_to_xla():
    x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
    with kernel_grads.dot_kernel_grads():
        jaxpr = str(jax.make_jaxpr(lambda x: lax.conv_general_dilated(
            x, kernel, (2, 2), "SAME", dimension_numbers=NHWC))(x))
    assert "custom_vjp" not in jaxpr
    assert lax.conv_general_dilated is kernel_grads._XLA_CONV  # restored on exit
