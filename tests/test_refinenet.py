"""RefineNet (deeplab_jax/models/refinenet.py): sizes, parameter names, gradients, config checks.

The models are built by the module's own `build` from the tiny config with a `refinenet`
block from `default_config()` (added when the registry does not put it there yet), so these
tests do not depend on the registry line; `test_the_registry_contract` puts the module in a
copy of the registry for one test, as that line will.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import config_lib, models
from deeplab_jax.errors import ConfigError
from deeplab_jax.models import deeplabv3, refinenet
from deeplab_jax.models.resnet import ResNetV2

TINY_CHANNELS = (16, 8, 8, 8)  # RefineNet-4 .. RefineNet-1 at the tiny backbone's width 8
RCU = {"conv1": {"kernel", "bias"}, "conv2": {"kernel"}}


def _config(**block_fields):
    config = tiny.get_config()
    if "refinenet" not in config.model:  # the registry does not have the model yet
        config.model.refinenet = refinenet.default_config()
    config.model.architecture = "refinenet"
    config.model.output_stride = 32
    config.model.refinenet.update({"channels": TINY_CHANNELS, **block_fields})
    return config


def _init_shapes(model, size=(65, 97)):
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))


def _names(tree):
    return {key: _names(value) if isinstance(value, dict) else value.shape
            for key, value in tree.items()}


def _keys(tree):
    """Module names down to each layer, whose value is the set of its parameter names."""
    if not any(isinstance(value, dict) for value in tree.values()):
        return set(tree)
    return {key: _keys(value) for key, value in tree.items()}


def _stage_channels(model_config):
    """The backbone's channels at strides 4, 8, 16 and 32 (the features RefineNet reads)."""
    backbone = ResNetV2(depth=model_config.depth, output_stride=32,
                        multi_grid=tuple(model_config.multi_grid), width=model_config.width)
    features, _ = jax.eval_shape(
        lambda x: backbone.init_with_output(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32))
    return {stride: features[f"stride{stride}"].shape[-1] for stride in (4, 8, 16, 32)}


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", [(65, 97), (33, 33)])
def test_logits_have_the_input_size(size):
    model = refinenet.build(_config().model, 5)
    variables = _init_shapes(model, size)
    images = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32
    logits, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(1)}), variables, images)
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32


def test_parameter_names_are_stable_and_the_backbone_is_deeplabv3s():
    config = _config()
    variables = _init_shapes(refinenet.build(config.model, 5))
    params = variables["params"]
    assert set(params) == {"backbone", "stride16_preact_norm", "stride8_preact_norm",
                           "stride4_preact_norm", "refinenet4", "refinenet3", "refinenet2",
                           "refinenet1", "final_rcu1", "final_rcu2", "logits"}
    assert set(variables["batch_stats"]) == {"backbone", "stride16_preact_norm",
                                             "stride8_preact_norm", "stride4_preact_norm"}
    # The backbone is DeepLabv3's, name for name and shape for shape (at its own stride 16:
    # the tree does not depend on the stride), so the ImageNet weights load into both.
    config.model.output_stride = 16
    v3 = _init_shapes(deeplabv3.build(config.model, 5))
    assert _names(params["backbone"]) == _names(v3["params"]["backbone"])
    assert _names(variables["batch_stats"]["backbone"]) == _names(
        v3["batch_stats"]["backbone"])
    # Each block: its backbone path, the coarser block's path (not in RefineNet-4), the
    # fusion convs (3x3, no bias), the chained residual pooling, the output RCU.
    keys = _keys(params)
    single_path = {"backbone_adapt": {"kernel"}, "backbone_rcu1": RCU, "backbone_rcu2": RCU,
                   "crp": {"conv1": {"kernel"}, "conv2": {"kernel"}}, "output_rcu": RCU}
    assert keys["refinenet4"] == single_path
    for name in ("refinenet3", "refinenet2", "refinenet1"):
        assert keys[name] == {**single_path, "coarser_rcu1": RCU, "coarser_rcu2": RCU,
                              "backbone_fusion": {"kernel"}, "coarser_fusion": {"kernel"}}
    assert keys["final_rcu1"] == keys["final_rcu2"] == RCU
    shapes = _names(params)
    stages = _stage_channels(config.model)
    for block, stride, channels in zip(("refinenet4", "refinenet3", "refinenet2",
                                        "refinenet1"), (32, 16, 8, 4), TINY_CHANNELS):
        assert shapes[block]["backbone_adapt"]["kernel"] == (3, 3, stages[stride], channels)
        assert shapes[block]["output_rcu"]["conv1"]["kernel"] == (3, 3, channels, channels)
    # The coarser path keeps the coarser block's width until its fusion conv: 16 -> 8.
    assert shapes["refinenet3"]["coarser_rcu1"]["conv1"]["kernel"] == (3, 3, 16, 16)
    assert shapes["refinenet3"]["coarser_fusion"]["kernel"] == (3, 3, 16, 8)
    assert shapes["logits"] == {"kernel": (3, 3, 8, 5), "bias": (5,)}
    # The number of pooling blocks names the CRP's convs; 0 removes it.
    four = _init_shapes(refinenet.build(_config(crp_blocks=4).model, 5))["params"]
    assert set(four["refinenet2"]["crp"]) == {"conv1", "conv2", "conv3", "conv4"}
    none = _init_shapes(refinenet.build(_config(crp_blocks=0).model, 5))["params"]
    assert "crp" not in none["refinenet2"]


def _conv(in_channels, out_channels, bias=False):
    return 9 * in_channels * out_channels + (out_channels if bias else 0)


def _rcu(channels):
    return _conv(channels, channels, bias=True) + _conv(channels, channels)


def test_the_head_has_the_reference_ports_parameters_at_the_papers_widths():
    """DrSleep/refinenet-pytorch models/resnet.py `RefineNet.__init__` (4 CRP blocks, 21
    classes), layer by layer: the same count, only grouped the paper's way (docstring)."""
    reference = (
        _conv(2048, 512) + 2 * _rcu(512) + 4 * _conv(512, 512) + 3 * _rcu(512)  # g1
        + _conv(512, 256)  # mflow_conv_g1_b3_joint_varout_dimred
        + sum(_conv(stage, 256) + 2 * _rcu(256) + _conv(256, 256)  # adapt_stage{2,3}
              + 4 * _conv(256, 256) + 3 * _rcu(256) + _conv(256, 256)  # g2, g3
              for stage in (1024, 512))
        + _conv(256, 256) + 2 * _rcu(256) + _conv(256, 256)  # adapt_stage4
        + 4 * _conv(256, 256) + 3 * _rcu(256)  # mflow_conv_g4
        + _conv(256, 21, bias=True))  # clf_conv
    config = _config(channels=(512, 256, 256, 256), crp_blocks=4)
    # Two units per block and width 64: the taps are ResNet-50/101's stage outputs.
    config.model.update(depth=26, width=64, multi_grid=(1, 2))
    assert _stage_channels(config.model) == {4: 256, 8: 512, 16: 1024, 32: 2048}
    params = _init_shapes(refinenet.build(config.model, 21), (33, 33))["params"]
    preact_norms = 2 * (256 + 512 + 1024)  # our BN+ReLU on the tapped stages (docstring)
    head = {key: value for key, value in params.items() if key != "backbone"}
    assert _count(head) - preact_norms == reference == 75_552_277


def test_chained_residual_pooling_pools_then_convolves_in_a_chain():
    """With identity convs: relu(x) + pool(relu(x)) + pool(pool(relu(x))), 5x5/1 max pools."""
    x = np.random.default_rng(0).normal(size=(1, 7, 9, 2)).astype(np.float32)
    crp = refinenet.ChainedResidualPooling(num_blocks=2)
    variables = crp.init(jax.random.key(0), jnp.asarray(x))
    identity = np.zeros((3, 3, 2, 2), np.float32)
    identity[1, 1] = np.eye(2)
    variables = {"params": {name: {"kernel": jnp.asarray(identity)}
                            for name in variables["params"]}}

    def pool(y):  # 5x5 max, stride 1, padding that never wins
        padded = np.pad(y, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-np.inf)
        return np.max([padded[:, i:i + y.shape[1], j:j + y.shape[2]]
                       for i in range(5) for j in range(5)], axis=0)

    rectified = np.maximum(x, 0)
    expected = rectified + pool(rectified) + pool(pool(rectified))
    np.testing.assert_allclose(crp.apply(variables, jnp.asarray(x)), expected, rtol=1e-6,
                               atol=1e-6)


# XLA's backend optimisations off for the one test that compiles the model: the same
# function, compiled in about a third of the time (init and gradient: 54 s -> 19 s on 2
# cores at load 10); the test checks that values are finite and nonzero, not their speed.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.mark.slow  # 13-34 s on 2 busy cores; tests/test_heads.py's check covers it too
def test_every_parameter_gets_a_finite_nonzero_gradient():
    model = refinenet.build(_config().model, 5)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 255, (2, 33, 33, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, (2, 33, 33)), jnp.int32)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False),
                        compiler_options=QUICK_COMPILE)(images)

    def loss_fn(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(1)})
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn),
                          compiler_options=QUICK_COMPILE)(variables["params"])
    # The reference's initial scale: the logits start near 0, the loss near log(5) = 1.61.
    assert abs(float(loss) - np.log(5)) < 0.1
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == len(jax.tree.leaves(variables["params"]))
    bad = [jax.tree_util.keystr(path) for path, grad in leaves
           if not np.all(np.isfinite(grad)) or not np.any(np.asarray(grad))]
    assert not bad, f"no finite nonzero gradient reaches {bad}"


@pytest.mark.parametrize("field, value, eval_stride, message", [
    ("channels", (16, 8, 8), 32, r"refinenet\.channels=\(16, 8, 8\).*give 4"),
    ("channels", (16, 0, 8, 8), 32, r"refinenet\.channels=\(16, 0, 8, 8\).*positive"),
    ("crp_blocks", -1, 32, r"refinenet\.crp_blocks=-1.*set 2"),
    ("dropout_rate", 1.0, 32, r"refinenet\.dropout_rate=1\.0.*set 0\.5"),
    ("output_stride", 16, 32, r"config\.model\.output_stride=16.*Set "
                              r"config\.model\.output_stride=32"),
    (None, None, 16, r"config\.eval\.output_stride=16.*needs output stride 32"),
])
def test_resolve_names_the_field_the_value_and_the_fix(field, value, eval_stride, message):
    config = _config()
    if field == "output_stride":
        config.model.output_stride = value
    elif field:
        config.model.refinenet[field] = value
    with pytest.raises(ConfigError, match=message):
        refinenet.resolve(config, eval_stride)


def test_resolve_accepts_the_defaults_and_the_tiny_widths():
    refinenet.resolve(_config(), 32)
    config = _config()
    config.model.refinenet = refinenet.default_config()
    refinenet.resolve(config, 32)
    assert tuple(config.model.refinenet.channels) == (512, 256, 256, 256)


def test_the_registry_contract(monkeypatch):
    """What the registry line will do: the config resolves, keeps the block, builds."""
    monkeypatch.setitem(models.MODELS, "refinenet", refinenet)
    config = config_lib.resolve_config(_config())
    assert config.model.aux_loss_weight == refinenet.AUX_LOSS_WEIGHT == 0.0
    assert tuple(config.model.refinenet.channels) == TINY_CHANNELS
    assert "deeplabv3" not in config.model  # only the chosen model's block is kept
    assert isinstance(models.get_model(config.model, 5), refinenet.RefineNet)
    bad = _config()
    bad.model.output_stride = 16
    with pytest.raises(ConfigError, match=r"output_stride=16"):
        config_lib.resolve_config(bad)
