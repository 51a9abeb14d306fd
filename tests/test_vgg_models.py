"""The VGG-16 models: the shared encoder (`vgg.py`), SegNet unchanged by sharing it, DeepLab v1
LargeFOV, the Dilation front end, and the context module on that front end.

The models are built from their own files (`build` with their `default_config()` blocks); one
test registers them the way the registry will, through a patched `models.MODELS`.
"""
import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import config_lib, models
from deeplab_jax.errors import ConfigError
from deeplab_jax.models import context_module, deeplabv1, dilation_frontend, segnet, vgg
from deeplab_jax.models.atrous import AtrousConv
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.models.segmenter import normalize_pixels

MODULES = {"deeplabv1": deeplabv1, "dilation_frontend": dilation_frontend,
           "context_module": context_module}
CPU_SIZED = dict(width_divisor=16, fc_channels=32)  # the tests' size: seconds on 2 cores
# (model name, its block's fields): the three VGG-16 models of this file.
VGG_MODELS = [("deeplabv1", {}), ("dilation_frontend", {}),
              ("context_module", dict(front_end="dilation"))]
VGG_MODEL_IDS = ["deeplabv1", "dilation_frontend", "context_dilation"]
ODD_SIZES = [(65, 97), (33, 33)]
# Caffe's VGG_ILSVRC_16_layers, fc6 and fc7 as convolutions ([kh, kw, in, out]).
VGG16_KERNELS = {
    "conv1_1": (3, 3, 3, 64), "conv1_2": (3, 3, 64, 64),
    "conv2_1": (3, 3, 64, 128), "conv2_2": (3, 3, 128, 128),
    "conv3_1": (3, 3, 128, 256), "conv3_2": (3, 3, 256, 256), "conv3_3": (3, 3, 256, 256),
    "conv4_1": (3, 3, 256, 512), "conv4_2": (3, 3, 512, 512), "conv4_3": (3, 3, 512, 512),
    "conv5_1": (3, 3, 512, 512), "conv5_2": (3, 3, 512, 512), "conv5_3": (3, 3, 512, 512),
    "fc6": (7, 7, 512, 4096), "fc7": (1, 1, 4096, 4096)}
VGG16_IMAGENET_PARAMETERS = 138_357_544  # with its 1000-class fc8 (4096 * 1000 + 1000)


def _key(seed: int) -> jax.Array:
    """A key of XLA's RngBitGenerator: a model's initialisation compiles in a fraction of
    threefry's time on the CPU (a VGG-16's: 2 s against 11 s); the values do not matter here,
    and the models under comparison draw from the same keys."""
    return jax.random.key(seed, impl="rbg")


def _model_config(name: str, **fields) -> ml_collections.ConfigDict:
    block = MODULES[name].default_config()
    block.update(fields)
    return ml_collections.ConfigDict({name: block, "dtype": "float32", "atrous_impl": "xla",
                                      "output_stride": 8, "bn_momentum": 0.9997,
                                      "bn_epsilon": 1e-5})


def _build(name: str, num_classes: int = 5, **fields) -> nn.Module:
    return MODULES[name].build(_model_config(name, **fields), num_classes)


def _images(size: Sequence[int], batch: int = 2, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0, 255, (batch, *size, 3)), jnp.float32)


def _init_shapes(model: nn.Module, size: Sequence[int]) -> Any:
    return jax.eval_shape(lambda x: model.init(_key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))


def _flat(tree: Any) -> dict[str, Any]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shapes(tree: Any) -> dict[str, tuple]:
    return {path: (tuple(leaf.shape), jnp.dtype(leaf.dtype)) for path, leaf in _flat(tree).items()}


def _count(tree: Any) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


# -- SegNet, unchanged by the shared encoder ----------------------------------------------------


class _SegNetBeforeTheSharedVGG(nn.Module):
    """`segnet.SegNet` as it was before its encoder became `vgg.VGG16` (commit f263fed),
    verbatim: the reference the refactored SegNet must equal in names, shapes, initial values
    and outputs."""

    num_classes: int
    blocks: Sequence[Sequence[int]] = segnet.VGG16_BLOCKS
    kernel_size: int = 3
    basic: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9997
    bn_epsilon: float = 1e-5

    def conv_bn(self, x, features, name, train, relu=True):
        x = nn.Conv(features, (self.kernel_size,) * 2, padding="SAME", use_bias=False,
                    dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                         name=f"{name}_norm")(x)
        return nn.relu(x) if relu else x

    @nn.compact
    def __call__(self, images, *, train):
        x = normalize_pixels(images).astype(self.dtype)
        pools = []
        for level, widths in enumerate(self.blocks, 1):
            for index, features in enumerate(widths, 1):
                x = self.conv_bn(x, features, f"encoder{level}_conv{index}", train)
            size = x.shape[1:3]
            x, argmax = segnet.max_pool_with_argmax(x)
            pools.append((argmax, size))
        for level in range(len(self.blocks), 0, -1):
            argmax, size = pools[level - 1]
            x = segnet.max_unpool(x, argmax, size)
            widths = list(reversed(self.blocks[level - 1]))
            outputs = widths[1:] + [self.blocks[level - 2][-1] if level > 1 else None]
            for index, features in enumerate(outputs, 1):
                name = f"decoder{level}_conv{index}"
                if features is None:
                    if self.basic:
                        x = self.conv_bn(x, widths[-1], name, train, relu=False)
                    else:
                        x = nn.Conv(self.num_classes, (self.kernel_size,) * 2, padding="SAME",
                                    dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
                else:
                    x = self.conv_bn(x, features, name, train, relu=not self.basic)
        if self.basic:
            x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                        name="logits")(x)
        return x.astype(jnp.float32)


def _segnet_pair(variant: str, divisor: int) -> tuple[nn.Module, nn.Module]:
    config = ml_collections.ConfigDict(dict(
        segnet=dict(variant=variant, width_divisor=divisor), dtype="float32",
        bn_momentum=0.9997, bn_epsilon=1e-5))
    model = segnet.build(config, 5)
    before = _SegNetBeforeTheSharedVGG(num_classes=5, blocks=model.blocks,
                                       kernel_size=model.kernel_size, basic=model.basic)
    return model, before


@pytest.mark.parametrize("variant", ["vgg16_bn", "basic"])
def test_segnet_is_what_it_was_before_it_shared_the_vgg(variant):
    """Names, shapes, initial values, outputs and BN updates, bit for bit."""
    model, before = _segnet_pair(variant, 1)
    assert _shapes(_init_shapes(model, (33, 45))) == _shapes(_init_shapes(before, (33, 45)))
    model, before = _segnet_pair(variant, 16)

    @jax.jit  # one compilation for both models (op by op: a minute on 2 busy cores)
    def run(images):
        results = []
        for network in (model, before):
            variables = network.init(_key(0), images, train=False)
            results.append((variables, network.apply(variables, images, train=False),
                            network.apply(variables, images, train=True,
                                          mutable=["batch_stats"])))
        # The earlier SegNet applied to the refactored one's variables, too.
        results.append(before.apply(results[0][0], images, train=False))
        return results

    (variables, *outputs), (variables_before, *outputs_before), crossed = run(
        _images((33, 45)))
    assert _shapes(variables) == _shapes(variables_before)
    for path, leaf in _flat(variables).items():
        np.testing.assert_array_equal(leaf, _flat(variables_before)[path], err_msg=path)
    for a, b in zip(jax.tree.leaves(outputs), jax.tree.leaves(outputs_before), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(outputs[0], crossed)


# -- the shared VGG-16 ------------------------------------------------------------------------


def test_pooling_windows_and_strides():
    """An impulse spreads over the window; SAME padding rounds the size up."""
    x = jnp.zeros((1, 7, 7, 1)).at[0, 3, 3, 0].set(1.0)
    spread = vgg.max_pool(x, vgg.Pool(3, 1))[0, ..., 0]
    assert spread.shape == (7, 7)
    np.testing.assert_array_equal(np.argwhere(np.asarray(spread) == 1.0).tolist(),
                                  [[r, c] for r in (2, 3, 4) for c in (2, 3, 4)])
    assert vgg.max_pool(x, vgg.Pool(3, 2)).shape[1:3] == (4, 4)
    assert vgg.max_pool(x, vgg.Pool(2, 2)).shape[1:3] == (4, 4)
    # -inf padding: a negative map pools to its own values, never to the padding's 0.
    assert float(vgg.max_pool(-jnp.ones((1, 5, 5, 1)), vgg.Pool(3, 2)).max()) == -1.0
    # What the two front ends ask for (DeepLab v1 Sec. 3.1; fyu/dilation network.py L102).
    assert deeplabv1.POOLS == (vgg.Pool(3, 2),) * 3 + (vgg.Pool(3, 1),) * 2
    assert dilation_frontend.POOLS == (vgg.Pool(2, 2),) * 3 + (None, None)
    assert deeplabv1.DILATIONS == dilation_frontend.DILATIONS == (1, 1, 1, 1, 2)


def test_vgg16_widths_norms_and_argmax():
    x = jnp.zeros((1, 33, 33, 3))
    plain = vgg.VGG16(width_divisor=16)
    variables = jax.eval_shape(lambda x: plain.init(_key(0), x, train=False), x)
    params = variables["params"]
    assert sorted(params) == sorted(VGG16_KERNELS)[:13] and "batch_stats" not in variables
    assert params["conv5_3"]["kernel"].shape == (3, 3, 32, 32)
    assert params["conv1_1"]["bias"].shape == (4,)  # biases without BN
    with_bn = vgg.VGG16(width_divisor=16, batch_norm=True, pool_argmax=True)
    sizes = []  # the sizes before each pooling: static, read while tracing

    def init(x):
        (features, indices), variables = with_bn.init_with_output(_key(0), x, train=False)
        sizes.extend(tuple(index.size) for index in indices)
        return features, [index.argmax for index in indices], variables

    features, argmaxes, variables = jax.eval_shape(init, x)
    assert sorted(variables["params"]["conv1_1"]) == ["kernel"]  # no bias before BN
    assert sorted(variables["params"]["conv1_1_norm"]) == ["bias", "scale"]
    assert features.shape == (1, 2, 2, 32)  # 33 -> 17, 9, 5, 3, 2
    assert sizes == [(33, 33), (17, 17), (9, 9), (5, 5), (3, 3)]
    assert [a.shape[1:3] for a in argmaxes] == [(17, 17), (9, 9), (5, 5), (3, 3), (2, 2)]
    assert all(a.dtype == jnp.int32 for a in argmaxes)
    with pytest.raises(ValueError, match="pool_argmax pools 2x2"):
        jax.eval_shape(lambda x: vgg.VGG16(pools=deeplabv1.POOLS, pool_argmax=True).init(
            _key(0), x, train=False), x)


# -- DeepLab v1, the Dilation front end, the context module on it ---------------------------


@pytest.mark.parametrize("name,fields", VGG_MODELS, ids=VGG_MODEL_IDS)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_logits_have_the_input_size_and_features_stride_8(name, fields, size):
    model = _build(name, **fields)
    variables = _init_shapes(model, size)
    for train in (False, True):
        logits, state = jax.eval_shape(
            lambda v, x, train=train: model.apply(
                v, x, train=train, mutable=["intermediates"],
                rngs={"dropout": _key(1)}),
            variables, jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
        assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32, (name, train)
        (scores,) = state["intermediates"]["logits_at_feature_resolution"]
        assert scores.shape == (2, -(-size[0] // 8), -(-size[1] // 8), 5), (name, train)


def _convolutions(model: nn.Module, size: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Every convolution the model runs, by name: its rate, its input and output shapes (a
    forward hook on the flax modules, under eval_shape)."""
    layers = {}

    def record(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (AtrousConv, nn.Conv)):
            rate = module.rate if isinstance(module, AtrousConv) else module.kernel_dilation
            layers[module.name] = dict(rate=rate or 1, input=args[0].shape,
                                       output=output.shape)
        return output

    variables = _init_shapes(model, size)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
    for name, layer in layers.items():
        layer["kernel"] = variables["params"][name]["kernel"].shape
    return layers


@pytest.mark.parametrize("name,fc6,fc_channels,classifier", [
    ("deeplabv1", dict(kernel=3, rate=12), 1024, "fc8"),  # LargeFOV, Table 2
    ("dilation_frontend", dict(kernel=7, rate=4), 4096, "final"),  # Sec. 4, network.py
])
def test_strides_dilations_and_kernels(name, fc6, fc_channels, classifier):
    height, width = 65, 97
    layers = _convolutions(_build(name), (height, width))
    assert list(layers) == [*VGG16_KERNELS][:13] + ["fc6", "fc7", classifier]
    for layer_name, layer in layers.items():
        if layer_name.startswith("conv"):
            group = int(layer_name[4])
            stride = 2 ** min(group - 1, 3)  # no subsampling after pool3
            assert layer["kernel"] == VGG16_KERNELS[layer_name], layer_name
            assert layer["rate"] == (2 if group == 5 else 1), layer_name
        else:
            stride = 8
        side = (-(-height // stride), -(-width // stride))
        assert layer["input"][1:3] == layer["output"][1:3] == side, layer_name
    assert layers["fc6"]["rate"] == fc6["rate"]
    assert layers["fc6"]["kernel"] == (fc6["kernel"], fc6["kernel"], 512, fc_channels)
    assert layers["fc7"]["kernel"] == (1, 1, fc_channels, fc_channels)
    assert layers[classifier]["kernel"] == (1, 1, fc_channels, 5)


def test_parameter_counts_are_the_papers():
    """DeepLab-LargeFOV: Table 2's 20.5M; the Dilation front end: VGG-16 without its ImageNet
    classifier (so conv1_1 ... fc7 have ImageNet's shapes, fc6 as a 7x7 kernel)."""
    largefov = _init_shapes(_build("deeplabv1", num_classes=21), (33, 33))["params"]
    assert round(_count(largefov) / 1e6, 1) == 20.5
    front = _init_shapes(_build("dilation_frontend", num_classes=21), (33, 33))["params"]
    assert {name: front[name]["kernel"].shape for name in VGG16_KERNELS} == VGG16_KERNELS
    assert _count(front) == VGG16_IMAGENET_PARAMETERS - (4096 * 1000 + 1000) + (4096 * 21 + 21)


@pytest.mark.parametrize("fields", [{}, CPU_SIZED])
def test_the_context_models_front_end_is_the_standalone_front_end(fields):
    """By name and shape: a trained front end initialises the context model by name."""
    standalone = _init_shapes(_build("dilation_frontend", **fields), (33, 33))
    stacked = _init_shapes(_build("context_module", front_end="dilation", **fields), (33, 33))
    params = dict(stacked["params"])
    context = params.pop("context")
    assert _shapes(params) == _shapes(standalone["params"])
    assert sorted(context) == sorted([f"layer{i}" for i in range(1, 8)] + ["output"])
    assert "batch_stats" not in stacked


def test_the_context_module_passes_the_front_ends_scores_through_at_initialisation():
    """Identity initialisation on the front end's scores; the standalone front end's weights
    in, by name."""
    images = _images((33, 41))
    front_end = _build("dilation_frontend", **CPU_SIZED)
    stacked = _build("context_module", front_end="dilation", **CPU_SIZED)

    @jax.jit
    def run(images):
        front_params = front_end.init(_key(0), images, train=False)["params"]
        context_params = stacked.init(_key(1), images, train=False)["params"]["context"]
        params = {**front_params, "context": context_params}
        return (stacked.apply({"params": params}, images, train=False,
                              mutable=["intermediates"]),
                front_end.apply({"params": front_params}, images, train=False,
                                mutable=["intermediates"]))

    (logits, state), (front_logits, front_state) = run(images)
    (scores,) = state["intermediates"]["logits_at_feature_resolution"]
    (front_scores,) = front_state["intermediates"]["logits_at_feature_resolution"]
    np.testing.assert_array_equal(scores, front_scores)
    assert np.any(scores < 0) and np.any(scores > 0)
    scale = float(jnp.abs(scores).max())
    np.testing.assert_allclose(logits, resize_bilinear(jnp.maximum(scores, 0), (33, 41)),
                               rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(front_logits, resize_bilinear(scores, (33, 41)),
                               rtol=1e-5, atol=1e-5 * scale)


def test_the_other_context_front_ends_keep_their_parameter_trees():
    for front_end, top, leaves in (("resnet", ["backbone", "context", "front_end_logits"], 96),
                                   ("deeplabv3", ["aspp", "backbone", "context", "logits"],
                                    126)):
        config = tiny.get_config()
        config.model.update(architecture="context_module", output_stride=8)
        config.model.context_module.front_end = front_end
        model = models.get_model(config_lib.resolve_config(config).model, 5)
        variables = _init_shapes(model, (33, 33))
        assert sorted(variables["params"]) == top, front_end
        assert sorted(variables["params"]["context"]) == sorted(
            [f"layer{i}" for i in range(1, 8)] + ["output"])
        assert len(jax.tree.leaves(variables)) == leaves, front_end


# The front end's gradients are checked inside the context model's (the same layers).
GRADIENT_CHECKS = [pytest.param(*VGG_MODELS[0], id=VGG_MODEL_IDS[0]),
                   pytest.param(*VGG_MODELS[1], id=VGG_MODEL_IDS[1], marks=pytest.mark.slow),
                   pytest.param(*VGG_MODELS[2], id=VGG_MODEL_IDS[2])]


@pytest.mark.slow  # 13-18 s each on 2 busy cores; tests/test_heads.py's check covers them too
@pytest.mark.parametrize("name,fields", GRADIENT_CHECKS)
def test_every_parameter_gets_a_finite_gradient(name, fields):
    """A training step's gradient (dropout on) reaches every parameter and is finite."""
    model = _build(name, **fields, **CPU_SIZED)
    images = _images((33, 33))
    labels = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 33, 33)), jnp.float32)

    def loss(params):
        logits = model.apply({"params": params}, images, train=True,
                             rngs={"dropout": _key(2)})
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * labels)

    value, grads = jax.jit(lambda images: jax.value_and_grad(loss)(
        model.init(_key(0), images, train=False)["params"]))(images)
    assert np.isfinite(float(value))
    for path, grad in _flat(grads).items():
        assert np.all(np.isfinite(grad)), (name, path)
        assert np.any(np.asarray(grad) != 0), (name, path)


def test_dropout_runs_in_training_only():
    model = _build("deeplabv1", **CPU_SIZED)

    @jax.jit
    def run(images):
        variables = model.init(_key(0), images, train=False)
        return [model.apply(variables, images, train=False) for _ in range(2)] + [
            model.apply(variables, images, train=True, rngs={"dropout": _key(seed)})
            for seed in (1, 2)]

    evaluation, again, first, second = run(_images((17, 17), batch=1))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(evaluation, again)


# -- configs ----------------------------------------------------------------------------------


def _config(name: str, **fields) -> ml_collections.ConfigDict:
    """The tiny config with `name`'s block (the registry will put it in every config)."""
    config = tiny.get_config()
    config.model.output_stride = 8
    config.model[name] = MODULES[name].default_config()
    config.model[name].update(fields)
    return config


@pytest.mark.parametrize("name,fields,shared,match", [
    ("deeplabv1", {}, dict(aux_loss_weight=0.4),
     r"config.model.aux_loss_weight=0.4: DeepLab v1 .*set it to 0"),
    ("deeplabv1", {}, dict(pretrained_backbone="resnet_v2_101.npz"),
     r"config.model.pretrained_backbone='resnet_v2_101.npz': DeepLab v1 .*leave it unset"),
    ("deeplabv1", dict(width_divisor=0), {},
     r"config.model.deeplabv1.width_divisor=0 must be .*--config.model.deeplabv1.width_divisor"),
    ("deeplabv1", dict(fc_channels=0), {}, r"config.model.deeplabv1.fc_channels=0 must be"),
    ("deeplabv1", dict(dropout_rate=1.0), {},
     r"config.model.deeplabv1.dropout_rate=1.0 must be in \[0, 1\): set 0.5"),
    ("deeplabv1", dict(fc6_rate=0), {},
     r"config.model.deeplabv1.fc6_rate=0 must be .*--config.model.deeplabv1.fc6_rate=12"),
    ("dilation_frontend", dict(fc_channels=-4), {},
     r"config.model.dilation_frontend.fc_channels=-4 must be a whole number >= 1"),
    ("dilation_frontend", dict(dropout_rate=-0.1), {},
     r"config.model.dilation_frontend.dropout_rate=-0.1 must be in"),
    ("dilation_frontend", {}, dict(atrous_impl="fast"),
     r"config.model.atrous_impl='fast' is not one of .*set one of them"),
    ("context_module", dict(front_end="vgg"), {},
     r"front_end='vgg' is not one of \('resnet', 'deeplabv3', 'dilation'\)"),
    ("context_module", dict(front_end="dilation"), dict(output_stride=16),
     r"config.model.output_stride=16: the Dilation front end .*output_stride=8"),
    ("context_module", dict(front_end="dilation", width_divisor=-1), {},
     r"config.model.context_module.width_divisor=-1 must be"),
    ("context_module", dict(front_end="dilation"), dict(aux_loss_weight=0.4),
     r"config.model.aux_loss_weight=0.4: the context module on the Dilation front end"),
])
def test_resolve_names_the_field_the_value_and_the_fix(name, fields, shared, match):
    config = _config(name, **fields)
    config.model.update(shared)
    with pytest.raises(ConfigError, match=match):
        MODULES[name].resolve(config, config.model.output_stride)


def test_resolve_accepts_the_defaults_and_checks_the_eval_stride(caplog):
    for name in MODULES:
        MODULES[name].resolve(_config(name), 8)
    with pytest.raises(ConfigError, match=r"config.eval.output_stride=16: .*output_stride=8"):
        context_module.resolve(_config("context_module", front_end="dilation"), 16)
    with caplog.at_level(logging.WARNING):
        deeplabv1.resolve(_config("deeplabv1"), 8)  # 33x33 crops: a 5x5 map, rate 12
    assert "fc6_rate=12" in caplog.text and "1x1 convolution" in caplog.text


def test_the_registry_lines_to_come(monkeypatch):
    """As the lead will register them: schema, resolve_config, get_model, the model contract."""
    for name in ("deeplabv1", "dilation_frontend"):
        monkeypatch.setitem(models.MODELS, name, MODULES[name])
        module = MODULES[name]
        assert module.OUTPUT_STRIDES == (8,) and module.AUX_LOSS_WEIGHT == 0.0
        assert not models.uses_resnet_backbone(name)
    for name, fields in VGG_MODELS:
        config = tiny.get_config()  # every registered model's block, ours included
        config.model.architecture = name
        config.model[name].update(fields, **CPU_SIZED)
        config.model.output_stride = 16  # voc.py's default
        with pytest.raises(ConfigError, match=r"output_stride=16\b.*output_stride=8"):
            config_lib.resolve_config(config)
        config.model.output_stride = 8
        resolved = config_lib.resolve_config(config)
        assert resolved.model.aux_loss_weight == 0.0
        model = models.get_model(resolved.model, 5)
        logits = jax.eval_shape(lambda x: model.init_with_output(_key(0), x, train=False)[0],
                                jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32))
        assert logits.shape == (1, 33, 33, 5)
