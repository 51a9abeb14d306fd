"""AtrousConv: every implementation computes nn.Conv's function with nn.Conv's parameters."""
import functools

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from deeplab_jax.models import get_model
from deeplab_jax.models.atrous import ATROUS_IMPLS, AtrousConv, atrous_conv
from deeplab_jax.models.deeplabv3 import DeepLabV3
from deeplab_jax.models.resnet import same_padding

RATES = (1, 2, 3, 6)
# (H, W): odd, not multiples of the rates, and smaller than most rates (taps in padding).
SIZES = ((7, 5), (2, 3), (9, 8))
PADDINGS = ("SAME", ((2, 0), (1, 3)), "VALID")


def _reference(x, kernel, rate, padding):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, rhs_dilation=(rate, rate),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def _inputs(height, width, seed=0, channels=(3, 4)):
    kx, kk = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, height, width, channels[0]), jnp.float32)
    kernel = jax.random.normal(kk, (3, 3) + channels, jnp.float32)
    return x, kernel


def _assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    if not expected.size:  # an empty output (VALID, input smaller than the kernel's reach)
        return
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("impl", ATROUS_IMPLS)
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("padding", PADDINGS, ids=("same", "explicit", "valid"))
def test_forward_matches_lax(impl, rate, padding):
    for height, width in SIZES:
        x, kernel = _inputs(height, width)
        fn = jax.jit(functools.partial(atrous_conv, rate=rate, padding=padding, impl=impl,
                                       precision=lax.Precision.HIGHEST))
        _assert_close(fn(x, kernel), _reference(x, kernel, rate, padding))


@pytest.mark.parametrize("impl", ATROUS_IMPLS)
@pytest.mark.parametrize("rate", (2, 3, 6))
@pytest.mark.parametrize("padding", PADDINGS[:2], ids=("same", "explicit"))
def test_gradients_match_lax(impl, rate, padding):
    for height, width in SIZES[:2]:
        x, kernel = _inputs(height, width, seed=1)
        out_shape = _reference(x, kernel, rate, padding).shape
        cotangent = jax.random.normal(jax.random.key(2), out_shape, jnp.float32)

        def loss(conv, x, kernel):
            return jnp.sum(conv(x, kernel) * cotangent)

        ours = functools.partial(atrous_conv, rate=rate, padding=padding, impl=impl,
                                 precision=lax.Precision.HIGHEST)
        theirs = functools.partial(_reference, rate=rate, padding=padding)
        grads = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1)))(x, kernel)
        expected = jax.grad(functools.partial(loss, theirs), argnums=(0, 1))(x, kernel)
        for actual, wanted in zip(grads, expected):
            _assert_close(actual, wanted)


def _conv_primitives(fn, *args):
    """rhs_dilation of every convolution in fn's jaxpr (nested jaxprs included)."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                found.append(tuple(eqn.params["rhs_dilation"]))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("impl", ATROUS_IMPLS)
def test_alternatives_run_no_dilated_convolution(impl):
    """The point of the alternatives: XLA never sees a dilated convolution, forward or back."""
    x, kernel = _inputs(9, 8)
    fn = functools.partial(atrous_conv, rate=3, impl=impl)
    grad = jax.grad(lambda x, k: jnp.sum(fn(x, k)), argnums=(0, 1))
    dilations = _conv_primitives(fn, x, kernel) + _conv_primitives(grad, x, kernel)
    if impl == "xla":
        assert (3, 3) in dilations
    elif impl == "space_to_batch":
        assert dilations and all(d == (1, 1) for d in dilations), dilations
    else:
        assert dilations == [], dilations


def test_module_parameters_equal_nn_conv():
    x, _ = _inputs(7, 5)
    for use_bias in (False, True):
        expected = nn.Conv(4, (3, 3), kernel_dilation=2, use_bias=use_bias).init(
            jax.random.key(3), x)
        for impl in ATROUS_IMPLS:
            variables = AtrousConv(4, (3, 3), rate=2, use_bias=use_bias, impl=impl).init(
                jax.random.key(3), x)
            assert jax.tree.structure(variables) == jax.tree.structure(expected)
            for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", (1, 2, 6))
@pytest.mark.parametrize("stride", (1, 2))
def test_module_output_equals_nn_conv(rate, stride):
    """'xla' is bit-identical to nn.Conv; the alternatives equal it to float32 rounding.

    Padding as resnet.py gives it: SAME at stride 1, slim's explicit padding at stride 2
    (where every impl runs XLA's convolution, hence bit-identical too).
    """
    x, _ = _inputs(9, 7, seed=4)
    padding = same_padding(3, stride, rate)
    reference = nn.Conv(4, (3, 3), strides=stride, kernel_dilation=rate, padding=padding,
                        use_bias=True, precision=lax.Precision.HIGHEST)
    variables = reference.init(jax.random.key(5), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # a non-zero bias
    expected = reference.apply(variables, x)
    for impl in ATROUS_IMPLS:
        module = AtrousConv(4, (3, 3), strides=stride, rate=rate, padding=padding,
                            use_bias=True, impl=impl, precision=lax.Precision.HIGHEST)
        actual = module.apply(variables, x)
        if impl == "xla" or stride > 1 or rate == 1:
            np.testing.assert_array_equal(actual, expected)
        else:
            _assert_close(actual, expected)


@pytest.mark.parametrize("impl", ATROUS_IMPLS)
def test_bfloat16_computation(impl):
    x, _ = _inputs(9, 7, seed=6)
    module = AtrousConv(4, (3, 3), rate=3, use_bias=False, dtype=jnp.bfloat16, impl=impl)
    variables = module.init(jax.random.key(7), x)
    assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    y = jax.jit(module.apply)(variables, x)
    assert y.dtype == jnp.bfloat16
    expected = _reference(x, variables["params"]["kernel"], 3, "SAME")
    _assert_close(y, expected, rtol=3e-2)


def test_unknown_impl_is_an_error():
    x, kernel = _inputs(5, 5)
    with pytest.raises(ValueError, match=r"'bogus'.*xla.*space_to_batch.*taps"):
        atrous_conv(x, kernel, rate=1, impl="bogus")
    with pytest.raises(ValueError, match=r"'bogus'.*xla.*space_to_batch.*taps"):
        AtrousConv(4, (3, 3), rate=2, impl="bogus").init(jax.random.key(0), x)
    config = ml_collections.ConfigDict(dict(
        architecture="deeplabv3", dtype="float32", bn_momentum=0.9, bn_epsilon=1e-5, depth=14,
        output_stride=16, multi_grid=(1,), width=8, atrous_impl="bogus",
        deeplabv3=dict(atrous_rates=None, aspp_channels=8)))
    with pytest.raises(ValueError, match=r"atrous_impl='bogus'.*taps"):
        get_model(config, 3)
    config.atrous_impl = "taps"
    assert get_model(config, 3).atrous_impl == "taps"


# Both strides with -m slow (OS16: block4 and ASPP dilated; OS8 adds block3); the impls are
# compared op by op in the default suite above.
@pytest.mark.parametrize("output_stride", (pytest.param(8, marks=pytest.mark.slow),
                                           pytest.param(16, marks=pytest.mark.slow)))
def test_deeplab_logits_do_not_depend_on_impl(output_stride):
    images = jax.random.uniform(jax.random.key(8), (2, 33, 33, 3), jnp.float32, 0, 255)
    models = {impl: DeepLabV3(num_classes=3, depth=14, width=8, multi_grid=(1,),
                              aspp_channels=8, output_stride=output_stride, atrous_impl=impl)
              for impl in ATROUS_IMPLS}
    init = {impl: functools.partial(model.init, train=False) for impl, model in models.items()}
    trees = {impl: jax.eval_shape(fn, jax.random.key(9), images) for impl, fn in init.items()}
    for impl in ATROUS_IMPLS:  # the same tree, shapes and dtypes whichever impl builds it
        assert trees[impl] == trees["xla"]
    shared = jax.jit(init["xla"])(jax.random.key(9), images)
    for impl, model in models.items():  # the switch reaches the backbone and ASPP convs
        dilations = _conv_primitives(functools.partial(model.apply, train=False), shared,
                                     images)
        dilated = [d for d in dilations if d != (1, 1)]
        if impl == "xla":  # block4 (rate 2 or 4) and the three ASPP branches at least
            assert len(dilated) >= 4, dilations
        else:
            assert not dilated, (impl, dilations)
    outputs = {}
    for impl, model in models.items():
        logits, updates = jax.jit(functools.partial(model.apply, train=True,
                                                    mutable=["batch_stats"]))(shared, images)
        outputs[impl] = (logits, updates["batch_stats"])
    assert float(jnp.std(outputs["xla"][0])) > 1e-3  # not a constant map
    for impl in ("space_to_batch", "taps"):
        for actual, expected in zip(jax.tree.leaves(outputs[impl]),
                                    jax.tree.leaves(outputs["xla"])):
            _assert_close(actual, expected, rtol=1e-4)
