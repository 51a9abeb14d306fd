"""ResNet-v2, ASPP and DeepLabV3: strides and rates, shapes, parameter trees and counts."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax.models.aspp import default_atrous_rates
from deeplab_jax.models.deeplabv3 import DeepLabV3
from deeplab_jax.models.resize import interpolation_matrix, resize_bilinear
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, ResNetV2, same_padding, strides_and_rates

TINY = dict(depth=14, width=8, multi_grid=(1,))


def test_strides_and_rates_table():
    units = UNITS_PER_BLOCK[50]  # (3, 4, 6, 3)
    plan = strides_and_rates(16, units, (1, 2, 4))
    assert [s for s, _ in plan[0]] == [1, 1, 2]
    assert [s for s, _ in plan[1]] == [1, 1, 1, 2]
    # Block3's stride is the first one past OS16: it turns into rate 2 for the units after it.
    assert plan[2] == [(1, 1)] * 6
    assert plan[3] == [(1, 2), (1, 4), (1, 8)]  # base rate 2 times multi-grid (1, 2, 4)

    plan = strides_and_rates(8, units, (1, 2, 4))
    assert plan[1] == [(1, 1)] * 4
    assert plan[2] == [(1, 2)] * 6
    assert plan[3] == [(1, 4), (1, 8), (1, 16)]

    plan = strides_and_rates(32, units, (1, 2, 4))
    assert [s for s, _ in plan[2]] == [1] * 5 + [2]
    assert plan[3] == [(1, 1), (1, 2), (1, 4)]


@pytest.mark.parametrize("bad", [4, 12, 64])
def test_unsupported_output_stride_is_an_error(bad):
    with pytest.raises(ValueError, match=f"output_stride={bad}"):
        strides_and_rates(bad, UNITS_PER_BLOCK[50])


def test_multi_grid_must_match_block4():
    with pytest.raises(ValueError, match="multi_grid"):
        strides_and_rates(16, UNITS_PER_BLOCK[50], (1, 2))


def test_same_padding_matches_slim_conv2d_same():
    assert same_padding(3, 1, 2) == "SAME"
    assert same_padding(7, 2, 1) == [(3, 3), (3, 3)]
    assert same_padding(3, 2, 1) == [(1, 1), (1, 1)]
    assert same_padding(3, 2, 2) == [(2, 2), (2, 2)]  # effective kernel 5


def test_default_atrous_rates():
    assert default_atrous_rates(16) == (6, 12, 18)
    assert default_atrous_rates(8) == (12, 24, 36)
    assert default_atrous_rates(32) == (3, 6, 9)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(513, 513), (321, 481)])
def test_shapes(output_stride, size):
    model = DeepLabV3(num_classes=21, output_stride=output_stride, aspp_channels=16, **TINY)
    images = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    logits, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]),
        variables, images)
    assert logits.shape == (2, *size, 21) and logits.dtype == jnp.float32
    block4 = state["intermediates"]["backbone"]["block4"]["output"][0]
    expected = tuple(math.ceil(s / output_stride) for s in size)
    assert block4.shape[1:3] == expected


def _tree_shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def test_parameter_tree_does_not_depend_on_output_stride():
    images = jnp.zeros((1, 65, 65, 3))
    trees = []
    for output_stride in (8, 16, 32):
        model = DeepLabV3(num_classes=5, output_stride=output_stride, depth=26, width=8,
                          multi_grid=(1, 2), aspp_channels=16)
        trees.append(_tree_shapes(jax.eval_shape(
            lambda x: model.init(jax.random.key(0), x, train=False), images)))
    assert trees[0] == trees[1] == trees[2]
    names = set(trees[0]["params"]["aspp"])
    assert {"branch0", "branch1", "branch2", "branch3", "image_pool", "project"} <= names


@pytest.mark.parametrize("depth,expected_millions", [(50, 23.5), (101, 42.5)])
def test_backbone_parameter_counts_match_published(depth, expected_millions):
    # ResNet-50 / 101 without the 1000-way classifier: 25.6M - 2.05M and 44.5M - 2.05M.
    model = ResNetV2(depth=depth)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), jnp.zeros((1, 64, 64, 3)))
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert abs(count / 1e6 - expected_millions) < 0.1, count


def test_train_mode_updates_batch_stats_and_eval_mode_does_not():
    model = DeepLabV3(num_classes=3, aspp_channels=8, **TINY)
    images = jax.random.uniform(jax.random.key(1), (2, 33, 33, 3), maxval=255.0)
    variables = model.init(jax.random.key(0), images, train=False)
    _, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"],
                           updated["batch_stats"])
    assert all(jax.tree.leaves(changed))
    logits_a = model.apply(variables, images, train=False)
    logits_b = model.apply(variables, images, train=False)
    np.testing.assert_array_equal(logits_a, logits_b)


@pytest.mark.slow  # about 6 s idle
def test_bfloat16_computation_keeps_float32_parameters():
    model = DeepLabV3(num_classes=3, aspp_channels=8, dtype=jnp.bfloat16, **TINY)
    images = jnp.full((1, 33, 33, 3), 100.0)
    variables = model.init(jax.random.key(0), images, train=False)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    assert logits.dtype == jnp.float32  # cast for the loss
    assert state["intermediates"]["aspp_output"][0].dtype == jnp.bfloat16


@pytest.mark.slow  # about 7 s idle; tests/test_dilation.py measures receptive fields in the default suite
def test_atrous_rate_grows_the_receptive_field():
    """A block4 position's input gradient reaches further when block4's rate is larger."""
    # Large enough that rate-16 taps stay inside: on a small map they would fall into the
    # zero padding and the filter would degenerate to its centre tap (the paper's Fig. 4).
    images = jax.random.uniform(jax.random.key(1), (1, 385, 385, 3), maxval=255.0)

    def support(multi_grid):
        model = ResNetV2(depth=14, width=8, output_stride=8, multi_grid=multi_grid)
        variables = model.init(jax.random.key(0), images, train=False)

        def centre_feature(x):
            features = model.apply(variables, x, train=False)["out"]
            return features[0, 24, 24].sum()  # centre of the 49x49 OS8 map

        grad = np.abs(np.asarray(jax.grad(centre_feature)(images))).sum(axis=(0, 2, 3))
        rows = np.nonzero(grad)[0]
        return rows.max() - rows.min() + 1

    small, large = support((1,)), support((4,))
    # At OS8 block4's base rate is 4; its 3x3 conv at rate r adds 2r feature positions of
    # 8 pixels each to the field: rate 16 instead of 4 adds 2 * 12 * 8 pixels.
    assert large - small == 2 * (16 - 4) * 8, (small, large)


def test_resize_bilinear_aligns_corners():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    y = np.asarray(resize_bilinear(jnp.asarray(x), (17, 25)))
    # Corners land exactly on corners, and (17-1)/(5-1) = 4: every 4th row is an input row.
    np.testing.assert_allclose(y[:, ::4, ::4], x, rtol=1e-5, atol=1e-6)
    # Linear functions are reproduced exactly by linear interpolation.
    ramp = np.arange(5, dtype=np.float32)[None, :, None, None] * np.ones((1, 5, 7, 1))
    up = np.asarray(resize_bilinear(jnp.asarray(ramp), (9, 7)))
    np.testing.assert_allclose(up[0, :, 3, 0], np.arange(9) / 2, atol=1e-6)
    assert interpolation_matrix(4, 1).tolist() == [[1, 0, 0, 0]]
