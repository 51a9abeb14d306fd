"""DeepLabv3's cascaded model (Sec. 3.2): strides, rates, sizes, parameters, end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import config_lib, models, train
from deeplab_jax.analysis import dilation
from deeplab_jax.inference import export, predictor, restore
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates, valid_output_strides


def _config(num_cascaded_blocks=3, output_stride=16, **block):
    config = tiny.get_config()
    config.model.update(architecture="deeplabv3_cascade", output_stride=output_stride)
    config.model.deeplabv3_cascade.update(num_cascaded_blocks=num_cascaded_blocks, **block)
    return config


def test_the_papers_rates_at_output_stride_16_with_multi_grid_1_2_4():
    """Sec. 3.2: "when output_stride = 16 and Multi_Grid = (1, 2, 4), the three convolutions
    will have rates = 2 x (1, 2, 4) = (2, 4, 8) in the block4"; each later block doubles."""
    plan = strides_and_rates(16, UNITS_PER_BLOCK[50], (1, 2, 4), num_cascaded_blocks=3)
    assert [[rate for _, rate in block] for block in plan[3:]] == [
        [2, 4, 8], [4, 8, 16], [8, 16, 32], [16, 32, 64]]
    assert all(stride == 1 for block in plan[2:] for stride, _ in block)


def test_without_atrous_convolution_block7_sits_at_output_stride_256():
    plan = strides_and_rates(256, UNITS_PER_BLOCK[50], (1, 1, 1), num_cascaded_blocks=3)
    assert {rate for block in plan for _, rate in block} == {1}
    assert [block[-1][0] for block in plan] == [2, 2, 2, 2, 2, 2, 1]  # all but the last
    assert [block[-1][0] for block in strides_and_rates(
        32, UNITS_PER_BLOCK[50], (1, 1, 1))] == [2, 2, 2, 1]  # ResNet's, unchanged
    for cascaded in range(4):
        assert valid_output_strides(cascaded) == tuple(2**k for k in range(3, 6 + cascaded))


def test_no_cascade_is_resnet_exactly():
    for output_stride in (8, 16, 32):
        for depth in (14, 50, 101):
            units = UNITS_PER_BLOCK[depth]
            grid = (1,) * units[3]
            assert strides_and_rates(output_stride, units, grid, 0) == strides_and_rates(
                output_stride, units, grid)


@pytest.mark.parametrize("cascaded,stride", [(0, 64), (1, 128), (2, 256)])
def test_an_output_stride_beyond_the_cascade_is_an_error(cascaded, stride):
    with pytest.raises(ValueError, match=f"output_stride={stride} is not supported"):
        config_lib.resolve_config(_config(cascaded, stride))
    with pytest.raises(ValueError, match="num_cascaded_blocks=4 is not in 0...3"):
        config_lib.resolve_config(_config(4, 16))


# 20 s each on 2 busy cores: 65 in the default suite; notebook 04 (default suite too)
# checks 97 and 513 against the same formula.
@pytest.mark.parametrize("size", [65, pytest.param(97, marks=pytest.mark.slow),
                                  pytest.param(513, marks=pytest.mark.slow)])
def test_every_blocks_size_at_odd_inputs_is_the_formulas(size):
    """Each block's output size, measured on the model (shapes only), equals
    `theoretical_stage_sizes`, at every cascade depth and every output stride it allows."""
    for cascaded in range(4):
        for output_stride in valid_output_strides(cascaded):
            config = config_lib.resolve_config(_config(cascaded, output_stride))
            model = models.get_model(config.model, 5)
            measured = dilation.measured_stage_sizes(model, size)
            expected = dilation.theoretical_stage_sizes(size, output_stride, 14, (1,),
                                                        cascaded)
            assert [f"block{i}" for i in range(1, 5 + cascaded)] == [
                name for name in measured if name.startswith("block")]
            assert measured == {stage: expected[stage] for stage in measured}, (
                size, cascaded, output_stride)
            # The feature map at output stride S of an input of k * S + 1 pixels is k + 1.
            if (size - 1) % output_stride == 0:
                assert measured["logits"] == (size - 1) // output_stride + 1


def test_the_parameter_tree_is_block4s_copied_and_does_not_change_with_the_stride():
    def tree(config):
        model = models.get_model(config_lib.resolve_config(config).model, 5)
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                                jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32))
        return jax.tree.map(lambda x: x.shape, shapes)

    trees = {stride: tree(_config(3, stride)) for stride in valid_output_strides(3)}
    assert all(t == trees[16] for t in trees.values())
    backbone = trees[16]["params"]["backbone"]
    assert backbone["block5"] == backbone["block6"] == backbone["block7"]
    # A copy of block4, but for what reads its input (block4's output, twice block3's).
    assert backbone["block5"]["unit01"]["conv1"]["kernel"][2] == 2 * backbone["block4"][
        "unit01"]["conv1"]["kernel"][2]
    assert "shortcut" in backbone["block4"]["unit01"] and "shortcut" not in backbone[
        "block5"]["unit01"]
    assert backbone["block5"]["unit01"]["conv2"] == backbone["block4"]["unit01"]["conv2"]
    # No cascade: DeepLabv3's backbone exactly, so every old checkpoint's backbone fits.
    deeplabv3 = tiny.get_config()
    assert tree(_config(0, 16))["params"]["backbone"] == tree(deeplabv3)["params"]["backbone"]
    with_aspp = tree(_config(1, 16, aspp=True, atrous_rates=(2, 4, 6)))["params"]
    assert sorted(with_aspp) == ["aspp", "backbone", "logits"]
    assert with_aspp["aspp"] == tree(deeplabv3)["params"]["aspp"]


def test_the_receptive_field_grows_with_the_cascade_not_with_the_stride():
    """Atrous rates keep what each unit sees: block7's receptive field is the same at output
    stride 16 as without atrous convolution (256); each cascaded block enlarges it."""
    def side(cascaded, stride):
        layers = dilation.deeplab_layers(50, stride, (1, 1, 1), through=f"block{4 + cascaded}",
                                         num_cascaded_blocks=cascaded)
        return dilation.receptive_field([layer[1:] for layer in layers])[0]

    assert side(3, 16) == side(3, 256) == side(3, 8)
    assert side(0, 16) < side(1, 16) < side(2, 16) < side(3, 16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The cascade to block6 at output stride 64, trained for 2 steps on 65x65 images."""
    config = _config(2, 64)
    config.data.synthetic.update(image_size=65)
    config.data.canvas_size = config.data.crop_size = (65, 65)
    workdir = str(tmp_path_factory.mktemp("cascade") / "run")
    return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow  # its fixture trains, evaluates and exports: 100 s on 2 busy cores
def test_the_cascade_trains_evaluates_predicts_and_exports(trained, tmp_path):
    config, workdir, results = trained
    assert results["step"] == 2 and results["output_stride"] == 64
    assert results["intervals"]["miou"]["low"] <= results["intervals"]["miou"]["high"]
    restored = restore.restore_model(config, workdir)
    prediction = predictor.Predictor.from_restored(restored)
    assert prediction.bucket == 64  # padded to k * 64 + 1: aligned at this stride
    image = np.random.default_rng(0).integers(0, 256, (70, 50, 3), np.uint8)
    (labels,) = prediction.predict([image])
    assert labels.shape == (70, 50) and labels.max() < 5
    exported, info = export.export_restored(restored, height=65, width=65)
    path = export.save_exported(str(tmp_path / "cascade.jaxexport"), exported, info)
    out = export.load_exported(path)(np.zeros((1, 65, 65, 3), np.uint8))
    assert np.asarray(out).shape == (1, 65, 65)
    # Evaluated at another output stride (block4's rates then double): the same checkpoint.
    other = config.copy_and_resolve_references()
    other.eval.output_stride = 32
    assert train.evaluate_checkpoint(other, workdir)["output_stride"] == 32
