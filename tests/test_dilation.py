"""deeplab_jax.dilation: valid taps, receptive fields, gradients, gridding, output sizes.

Checks against hand-computed values first, then closed forms against enumeration, then
the analytic answers against what the package's own modules do.
"""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplab_jax.analysis import dilation
from deeplab_jax.models.deeplabv3 import DeepLabV3
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, ResNetV2, strides_and_rates


# ---------------------------------------------------------------- effective kernel, taps

def test_effective_kernel_size_by_hand():
    assert dilation.effective_kernel_size(3, 1) == 3
    assert dilation.effective_kernel_size(3, 2) == 5
    assert dilation.effective_kernel_size(3, 6) == 13
    assert dilation.effective_kernel_size(3, 18) == 37
    assert dilation.effective_kernel_size(7, 1) == 7
    assert dilation.effective_kernel_size(1, 12) == 1
    np.testing.assert_array_equal(dilation.tap_offsets(3, 4), [-4, 0, 4])
    with pytest.raises(ValueError):
        dilation.tap_offsets(2, 1)


# ---------------------------------------------------------------- valid taps (Fig. 4)

def test_rate_1_on_65_by_hand():
    fractions = dilation.valid_tap_fractions(65, 1)
    # All 9 taps are inside except on the border ring: 63 x 63 interior positions.
    assert fractions["all_valid"] == pytest.approx(63 * 63 / (65 * 65))
    assert fractions["centre_only"] == 0.0
    assert fractions["four_valid"] == pytest.approx(4 / (65 * 65))  # the 4 corners
    # Per axis the 3 taps are valid 3*65 - 2 times over 65 positions (two border misses).
    assert fractions["mean_valid"] == pytest.approx((193 / 195) ** 2)


def test_large_rates_degenerate_to_1x1_by_hand():
    # Rate >= size: no side tap is ever inside, the 3x3 filter is a 1x1 everywhere.
    assert dilation.valid_tap_fractions(65, 65)["centre_only"] == 1.0
    assert dilation.valid_tap_fractions(65, 65)["mean_valid"] == pytest.approx(1 / 9)
    # Rate 33 on 65: only the centre row/column (i = 32) misses both side taps.
    fractions = dilation.valid_tap_fractions(65, 33)
    assert fractions["all_valid"] == 0.0
    assert fractions["centre_only"] == pytest.approx(1 / 65 ** 2)
    # OS16 at 513 (33 x 33) with the ASPP's rate 18: no position sees all 9 taps, the
    # 3 x 3 positions around the centre see only the centre tap, and 30 x 30 see 4.
    fractions = dilation.valid_tap_fractions(33, 18)
    assert fractions["all_valid"] == 0.0
    assert fractions["centre_only"] == pytest.approx((3 / 33) ** 2)
    assert fractions["four_valid"] == pytest.approx((30 / 33) ** 2)
    # Rate 6 on 33: 21 positions per axis see 3 taps.
    assert dilation.valid_tap_fractions(33, 6)["all_valid"] == pytest.approx((21 / 33) ** 2)


def test_axis_counts_by_hand():
    assert dilation.axis_tap_counts(65, 1) == {1: 0, 2: 2, 3: 63}
    assert dilation.axis_tap_counts(33, 18) == {1: 3, 2: 30, 3: 0}
    assert dilation.axis_tap_counts(5, 100) == {1: 5, 2: 0, 3: 0}


@pytest.mark.parametrize("height,width", [(1, 1), (7, 7), (33, 33), (8, 13), (65, 65)])
def test_closed_form_matches_enumeration(height, width):
    for rate in range(1, max(height, width) + 3):
        counts = dilation.valid_tap_count_map((height, width), rate)
        histogram = dilation.valid_tap_histogram((height, width), rate)
        assert sum(histogram.values()) == pytest.approx(1.0)
        for taps, fraction in histogram.items():
            assert np.mean(counts == taps) == pytest.approx(fraction, abs=1e-12)
        fractions = dilation.valid_tap_fractions((height, width), rate)
        assert np.mean(counts) / 9 == pytest.approx(fractions["mean_valid"], abs=1e-12)


def test_measured_on_the_aspp_matches_analytic():
    size, rates = 33, [1, 6, 12, 18, 33]
    validity = dilation.measured_tap_validity(size, rates)
    assert validity.shape == (len(rates), size, size, 9)
    rows = np.arange(size)
    for index, rate in enumerate(rates):
        np.testing.assert_array_equal(validity[index].sum(-1),
                                      dilation.valid_tap_count_map(size, rate))
        # Channel t is tap (t // 3, t % 3): check each tap's own footprint.
        for tap in range(9):
            dy, dx = (tap // 3 - 1) * rate, (tap % 3 - 1) * rate
            inside = np.outer((rows + dy >= 0) & (rows + dy < size),
                              (rows + dx >= 0) & (rows + dx < size))
            np.testing.assert_array_equal(validity[index, ..., tap], inside)


# ---------------------------------------------------------------- receptive field

def test_receptive_field_by_hand():
    assert dilation.receptive_field([]) == (1, 1)
    assert dilation.receptive_field([(3, 1, 1), (3, 1, 1)]) == (5, 1)
    assert dilation.receptive_field([(3, 1, 2)]) == (5, 1)
    assert dilation.receptive_field([(7, 2, 1), (3, 2, 1)]) == (11, 4)  # 7 + 2 * 2
    assert dilation.receptive_field([(3, 2, 1), (3, 1, 2)]) == (3 + 4 * 2, 2)


def test_resnet50_receptive_field_by_hand():
    # Root 7x7/2 and pool 3x3/2: 11 px at jump 4. Block1: 3 units, +2*4 each -> 35, jump 8.
    # Block2: 4 units, +2*8 -> 99, jump 16. Block3 (OS16): 6 units at rate 1, +2*16 -> 291.
    # Block4 rates (2, 4, 8) at jump 16: +(4 + 8 + 16) * 16 = 448 -> 739; (2, 2, 2): 483.
    layers = dilation.deeplab_layers(50, 16, (1, 2, 4))
    assert len(layers) == 2 + sum(UNITS_PER_BLOCK[50])
    assert dilation.receptive_field([layer[1:] for layer in layers]) == (739, 16)
    layers = dilation.deeplab_layers(50, 16, (1, 1, 1))
    assert dilation.receptive_field([layer[1:] for layer in layers]) == (483, 16)
    # The ASPP's rate 18 branch at jump 16: +36 * 16.
    layers = dilation.deeplab_layers(50, 16, (1, 2, 4), through="aspp")
    assert dilation.receptive_field([layer[1:] for layer in layers]) == (739 + 576, 16)
    assert [name for name, *_ in dilation.deeplab_layers(50, 16, (1, 2, 4), "max_pool")] == [
        "root_conv", "max_pool"]


@pytest.mark.parametrize("multi_grid", [(1, 1, 1), (1, 2, 4)])
def test_atrous_keeps_the_receptive_field_at_every_output_stride(multi_grid):
    sizes = {os: dilation.receptive_field(
        [layer[1:] for layer in dilation.deeplab_layers(50, os, multi_grid, "aspp")])[0]
        for os in (8, 16, 32)}
    assert len(set(sizes.values())) == 1, sizes


@pytest.mark.slow  # analysis behind the notebooks (under 16 s idle)
def test_gradient_support_is_the_theoretical_receptive_field():
    # Positive weights, positive pixels: every path adds, nothing cancels. Depth 14, OS8.
    model = DeepLabV3(num_classes=2, depth=14, width=2, aspp_channels=4, output_stride=8,
                      multi_grid=(1,))
    variables = dilation.positive_constant_variables(model, (1, 161, 161, 3))
    images = jnp.full((1, 161, 161, 3), 255.0)
    layers = [layer[1:] for layer in dilation.deeplab_layers(14, 8, (1,))]
    # From block1's input (the max pool's output, 41 x 41, centre 20) the support of the
    # gradient of block4's centre is exactly the theoretical receptive field:
    # 1 + 2 (block1 3x3/2) + 2*2 (block2) + 4*2 (block3, rate 2) + 8*2 (block4, rate 4).
    assert dilation.receptive_field(layers[2:]) == (31, 2)
    grad = dilation.input_gradient_map(model, variables, images, "backbone/block4/output",
                                       wrt="backbone/block1")
    expected = np.zeros((41, 41), bool)
    expected[20 - 15:20 + 16, 20 - 15:20 + 16] = True
    np.testing.assert_array_equal(grad > 0, expected)
    # From the image (131 px, centred on pixel 80) the support lies inside the theoretical
    # field but can be smaller: a max pool sends its gradient to one element of its window
    # (here ties, broken towards the top-left), whereas the field counts all of them.
    block4, aspp = dilation.input_gradient_maps(
        model, variables, images, ["backbone/block4/output", "aspp_output"])
    assert dilation.receptive_field(layers) == (131, 8)
    box = np.zeros((161, 161), bool)
    box[80 - 65:80 + 66, 80 - 65:80 + 66] = True
    assert np.all(box[block4 > 0]) and (block4 > 0).sum() >= 127 ** 2
    # The image-level branch of the ASPP sees every pixel.
    assert np.all(aspp > 0)


@pytest.mark.slow  # analysis behind the notebooks (under 16 s idle)
def test_atrous_features_are_the_strided_ones_sampled_densely():
    # Why notebook 02's OS8 and OS16 maps coincide: in inference mode block4 at OS8, taken at
    # every other position, is block4 at OS16 (and OS16's at every other is OS32's), for odd
    # and even input sizes alike, thanks to the symmetric padding of the strided convs.
    base = DeepLabV3(num_classes=3, depth=14, width=4, aspp_channels=8, multi_grid=(1,))
    for size in (65, 64):
        variables = dilation.random_variables(base, (1, size, size, 3))
        images = jax.random.uniform(jax.random.key(1), (1, size, size, 3), maxval=255.0)
        block4 = {}
        for output_stride in (8, 16, 32):
            _, state = base.clone(output_stride=output_stride).apply(
                variables, images, train=False, mutable=["intermediates"])
            block4[output_stride] = state["intermediates"]["backbone"]["block4"]["output"][0]
        np.testing.assert_allclose(block4[8][:, ::2, ::2], block4[16], atol=1e-5)
        np.testing.assert_allclose(block4[16][:, ::2, ::2], block4[32], atol=1e-5)


@pytest.mark.slow  # about 4 s idle
def test_input_gradient_map_names_a_missing_intermediate():
    model = ResNetV2(depth=14, width=2, multi_grid=(1,))
    variables = dilation.random_variables(model, (1, 33, 33, 3))
    with pytest.raises(KeyError, match="block5"):
        dilation.input_gradient_map(model, variables, jnp.ones((1, 33, 33, 3)), "block5/output")


def test_random_variables_have_the_init_tree():
    model = ResNetV2(depth=14, width=4, multi_grid=(1,))
    variables = dilation.random_variables(model, (1, 33, 33, 3), seed=1)
    reference = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3)), train=False))
    assert jax.tree.structure(variables) == jax.tree.structure(reference)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference)
    kernel = np.asarray(variables["params"]["block4"]["unit01"]["conv2"]["kernel"])
    assert kernel.std() * math.sqrt(math.prod(kernel.shape[:-1])) == pytest.approx(1, rel=0.1)


def test_centred_mass_side():
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    assert dilation.centred_mass_side(delta) == 1
    assert dilation.centred_mass_side(np.ones((5, 5)), fraction=1.0) == 5
    assert dilation.centred_mass_side(np.ones((5, 5)), fraction=0.3) == 3  # 9/25 >= 0.3


# ---------------------------------------------------------------- gridding

def test_gridding_by_hand():
    np.testing.assert_array_equal(dilation.reachable_offsets([1, 2, 4]), np.arange(-7, 8))
    np.testing.assert_array_equal(dilation.reachable_offsets([2, 2, 2]), np.arange(-6, 7, 2))
    assert dilation.gridding_mask([1, 1, 1]).all()
    assert dilation.count_holes(dilation.gridding_mask([1, 1, 1])) == 0
    assert dilation.count_holes(dilation.gridding_mask([2, 2, 2])) == 13 ** 2 - 7 ** 2
    assert dilation.count_holes(dilation.gridding_mask([2, 4, 8])) == 29 ** 2 - 15 ** 2
    # Per axis, equal rates reach the centre 7 of 27 ways (trinomial); multi-grid spreads
    # its 27 tap combinations over 15 offsets, the centre once (a + 2b + 4c = 0 only at 0).
    np.testing.assert_array_equal(dilation.path_counts([1, 1, 1])[3], 7 * np.array(
        [1, 3, 6, 7, 6, 3, 1]))
    np.testing.assert_array_equal(dilation.path_counts([1, 2, 4])[7],
                                  [1, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 1, 2, 1, 1])
    assert dilation.path_counts([2, 4, 8]).sum() == 27 ** 2
    assert dilation.count_holes(np.zeros((3, 3), bool)) == 0


@pytest.mark.parametrize("multi_grid", [pytest.param((1, 1, 1), marks=pytest.mark.slow),
                                        pytest.param((1, 2, 4), marks=pytest.mark.slow)])
def test_real_block4_reaches_the_analytic_mask(multi_grid):
    model = ResNetV2(depth=50, width=1, output_stride=16, multi_grid=multi_grid)
    variables = dilation.positive_constant_variables(model, (1, 513, 513, 3))
    grad = dilation.input_gradient_map(model, variables, jnp.ones((1, 513, 513, 3)),
                                       "block4/output", wrt="block4")
    assert grad.shape == (33, 33)
    rates = [rate for _, rate in strides_and_rates(16, UNITS_PER_BLOCK[50], multi_grid)[3]]
    mask = dilation.gridding_mask(rates)
    reach = (mask.shape[0] - 1) // 2
    expected = np.zeros((33, 33), bool)
    expected[16 - reach:16 + reach + 1, 16 - reach:16 + reach + 1] = mask
    np.testing.assert_array_equal(grad > 0, expected)


# ---------------------------------------------------------------- output sizes

def test_conv_output_size_by_hand():
    assert dilation.conv_output_size(513, 7, 2, padding=3) == 257  # (513 + 6 - 7) // 2 + 1
    assert dilation.conv_output_size(512, 7, 2, padding=[(3, 3), (3, 3)]) == 256
    assert dilation.conv_output_size(128, 3, 2, padding="SAME") == 64
    assert dilation.padding_total(128, 3, 2, padding="SAME") == 1  # TF pads (0, 1)
    assert dilation.padding_total(129, 3, 2, padding="SAME") == 2
    assert dilation.conv_output_size(33, 3, 1, 18, padding="SAME") == 33
    assert dilation.conv_output_size(33, 3, 1, 6, padding="VALID") == 33 - 12
    assert dilation.conv_output_size(10, 3, 1, padding=(0, 1)) == 9
    with pytest.raises(ValueError):
        dilation.conv_output_size(5, 3, 1, 4, padding="VALID")


def test_theoretical_stage_sizes_by_hand():
    assert dilation.theoretical_stage_sizes(513, 16) == {
        "root_conv": 257, "max_pool": 129, "block1": 65, "block2": 33, "block3": 33,
        "block4": 33, "aspp": 33, "logits": 33, "output": 513}
    assert dilation.theoretical_stage_sizes(512, 8)["block4"] == 64
    assert dilation.theoretical_stage_sizes(57, 32)["block4"] == 2


@pytest.mark.parametrize("size,output_stride", list(itertools.product(
    [513, 512, 57, 30], [8, 16, 32])))
def test_theoretical_sizes_match_the_modules(size, output_stride):
    model = DeepLabV3(num_classes=3, depth=14, width=2, aspp_channels=4,
                      output_stride=output_stride, multi_grid=(1,))
    assert dilation.measured_stage_sizes(model, size) == dilation.theoretical_stage_sizes(
        size, output_stride, depth=14)


def test_aligned_corners_error():
    assert dilation.aligned_corners_error(513, 33, 16) == 0.0
    assert dilation.aligned_corners_error(57, 8, 8) == 0.0
    # 512 at OS16: feature 31 is placed at 511 rather than 496.
    assert dilation.aligned_corners_error(512, 32, 16) == pytest.approx(15.0)
    assert dilation.aligned_corners_error(57, 4, 16) > 0
