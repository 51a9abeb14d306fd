"""Every model of the registry: shapes, parameter trees, gradients, 8 devices, bad configs.

Each check runs for every name in `models.MODELS` (at the tiny config's size), so a new model
gets them by adding its registry line.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from configs import tiny
from deeplab_jax import config_lib, models, parallel
from deeplab_jax.models import fcn, pspnet
from deeplab_jax.models.segmenter import AUX_COLLECTION, AUX_LOGITS
from deeplab_jax.training import step as train_step_lib

NAMES = sorted(models.MODELS)


def _config(name, output_stride=None, **model_fields):
    config = tiny.get_config()
    config.model.architecture = name
    config.model.output_stride = output_stride or models.MODELS[name].OUTPUT_STRIDES[0]
    config.model.update(model_fields)
    config.data.canvas_size = config.data.crop_size = (65, 65)
    return config_lib.resolve_config(config)


def _shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def _init_shapes(model, size=(65, 97)):
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))


# Slow checks, one per head (-m slow); the default suite trains DeepLabv3's step on 8 devices
# against 1 (tests/test_train_step.py) and checks that its loss falls.
SLOW_GRADIENT_CHECK = [pytest.param(name, marks=pytest.mark.slow) for name in NAMES]
SLOW_MESH_CHECK = [pytest.param(name, marks=pytest.mark.slow) for name in NAMES]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(65, 97), (64, 96)])
def test_logits_have_the_input_size_at_every_supported_output_stride(name, size):
    for output_stride in models.MODELS[name].OUTPUT_STRIDES:
        model = models.get_model(_config(name, output_stride).model, 5)
        variables = _init_shapes(model, size)
        for train in (False, True):
            logits = jax.eval_shape(
                lambda v, x, train=train: model.apply(
                    v, x, train=train, mutable=["batch_stats"] if train else False,
                    rngs={"dropout": jax.random.key(0)}),
                variables, jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
            logits = logits[0] if train else logits
            assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32, (
                name, output_stride, train)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_tree_does_not_depend_on_the_output_stride(name):
    trees = {stride: _shapes(_init_shapes(models.get_model(_config(name, stride).model, 5)))
             for stride in models.MODELS[name].OUTPUT_STRIDES}
    first = next(iter(trees.values()))
    for stride, tree in trees.items():
        assert tree == first, (name, stride)


def _loss_with_aux(model, variables, images, labels):
    logits, updates = model.apply(variables, images, train=True,
                                  mutable=["batch_stats", AUX_COLLECTION],
                                  rngs={"dropout": jax.random.key(1)})
    loss = jnp.mean(jax.nn.log_softmax(logits)[..., 0] * labels)
    if AUX_COLLECTION in updates:
        (aux,) = updates[AUX_COLLECTION][AUX_LOGITS]
        loss = loss + jnp.mean(jax.nn.log_softmax(aux)[..., 1] * labels)
    return loss


@pytest.mark.parametrize("name", SLOW_GRADIENT_CHECK)
def test_every_parameter_receives_a_gradient(name):
    """With the auxiliary head on (where the model has a backbone): no dead parameter."""
    weight = 0.4 if models.uses_resnet_backbone(name) else 0.0
    model = models.get_model(_config(name, aux_loss_weight=weight).model, 5)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 255, (2, 65, 65, 3)), jnp.float32)
    labels = jnp.asarray(rng.uniform(-1, 1, (2, 65, 65)), jnp.float32)
    variables = model.init(jax.random.key(0), images, train=False)
    batch_stats = variables.get("batch_stats", {})
    # A layer that starts at zero (FCN's skip scores) passes no gradient to its input at
    # the first step, by design; give it small weights so that the check sees through it.
    params = jax.tree.map(lambda x: x if np.any(np.asarray(x)) or x.ndim < 4 else
                          jnp.full_like(x, 0.01), variables["params"])
    grads = jax.jit(jax.grad(lambda params: _loss_with_aux(
        model, {"params": params, "batch_stats": batch_stats}, images, labels)))(params)
    dead = [jax.tree_util.keystr(path) for path, grad in jax.tree_util.tree_leaves_with_path(grads)
            if not np.any(np.asarray(grad))]
    assert not dead, f"{name}: no gradient reaches {dead}"


# Each compiles two full training steps (about 20-60 s on 2 cores): in the default suite for
@pytest.mark.parametrize("name", SLOW_MESH_CHECK)
def test_a_step_on_8_devices_equals_the_step_on_1(name):
    """Global BatchNorm (and the auxiliary head where the model has one) over the mesh."""
    config = _config(name)
    config.data.canvas_size = config.data.crop_size = (33, 33)
    source_rng = np.random.default_rng(1)
    host_batch = {"image": source_rng.integers(0, 256, (8, 33, 33, 3), np.uint8),
                  "label": source_rng.integers(0, 5, (8, 33, 33), np.uint8),
                  "size": np.full((8, 2), 33, np.int32)}
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
        replicated = parallel.replicated_sharding(mesh)
        model = models.get_model(config.model, 5)
        state = jax.jit(train_step_lib.create_train_state, static_argnums=(1, 2, 3),
                        out_shardings=replicated)(
            jax.random.key(0), model,
            train_step_lib.create_optimizer(config.optim, config.num_train_steps), (33, 33))
        step = train_step_lib.jit_train_step(config, replicated, parallel.data_sharding(mesh))
        state, metrics = step(state, parallel.to_global_batch(host_batch, mesh),
                              jax.random.key(3))
        results.append(jax.device_get((state.params, state.batch_stats, metrics)))
    # SegNet routes every gradient through 5 unpoolings to its window's argmax: a near-tie
    # that another reduction order breaks the other way moves a gradient to the neighbouring
    # pixel. Measured (2026-11-30): the last decoder layers agree to 3e-8, the differences
    # grow with each unpooling on the way back, to 9.5e-5 in the first encoder kernel; the BN
    # batch statistics agree to 1.2e-7 (per-device BN, one example per device, would differ
    # by tens of percent).
    atol = 2e-4 if name == "segnet" else 2e-5
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=atol, err_msg=name)


def test_deeplabv3_keeps_its_parameter_names():
    """Checkpoints written before the registry restore: the same tree, the same names."""
    params = _init_shapes(models.get_model(_config("deeplabv3").model, 5))["params"]
    assert sorted(params) == ["aspp", "backbone", "logits"]
    assert sorted(params["aspp"]) == sorted(
        f"{branch}{suffix}" for branch in ("branch0", "branch1", "branch2", "branch3",
                                           "image_pool", "project")
        for suffix in ("", "_norm"))


@pytest.mark.slow  # about 5 s idle
def test_the_auxiliary_head_runs_in_training_only():
    config = _config("pspnet")
    assert config.model.aux_loss_weight == 0.4  # PSPNet's own default
    model = models.get_model(config.model, 5)
    images = jnp.zeros((2, 65, 65, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    variables = {key: variables[key] for key in ("params", "batch_stats")}
    assert "aux_head" in variables["params"]
    # Evaluation, prediction and export apply the model without the collection: no aux.
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    assert AUX_COLLECTION not in state
    _, updates = model.apply(variables, images, train=True,
                             mutable=["batch_stats", AUX_COLLECTION],
                             rngs={"dropout": jax.random.key(0)})
    (aux,) = updates[AUX_COLLECTION][AUX_LOGITS]
    assert aux.shape == (2, 65, 65, 5)
    # DeepLabv3 has none by default: no parameters, nothing computed.
    assert _config("deeplabv3").model.aux_loss_weight == 0.0
    v3 = _init_shapes(models.get_model(_config("deeplabv3").model, 5))
    assert "aux_head" not in v3["params"]


def test_adaptive_pooling_has_pytorchs_bins():
    """Bin i of n over L covers [floor(iL/n), ceil((i+1)L/n)): 3 and 6 do not divide 45."""
    x = np.random.default_rng(0).normal(size=(1, 45, 60, 2)).astype(np.float32)
    for bins in (1, 2, 3, 6):
        expected = np.zeros((1, bins, bins, 2), np.float32)
        for i in range(bins):
            for j in range(bins):
                rows = slice(math.floor(i * 45 / bins), math.ceil((i + 1) * 45 / bins))
                cols = slice(math.floor(j * 60 / bins), math.ceil((j + 1) * 60 / bins))
                expected[0, i, j] = x[0, rows, cols].mean(axis=(0, 1))
        np.testing.assert_allclose(pspnet.adaptive_avg_pool(jnp.asarray(x), bins), expected,
                                   rtol=1e-5, atol=1e-6)
    # 6 bins over 45 rows: bins of 8 rows that overlap (PyTorch's), not 7 or 7.5.
    assert pspnet.adaptive_pool_matrix(45, 6)[1].nonzero()[0].tolist() == list(range(7, 15))


def test_fcn_skip_scores_start_at_zero():
    """FCN-8s starts as FCN-32s (the reference's zero-initialised score layers)."""
    model = models.get_model(_config("fcn").model, 5)
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images, train=False)
    for name in ("score16", "score8"):
        assert not np.any(np.asarray(variables["params"][name]["kernel"]))
    only_32 = models.get_model(_config("fcn", fcn={"variant": "32s"}).model, 5)
    kept = {key: value for key, value in variables["params"].items()
            if key in ("backbone", "score32")}
    np.testing.assert_allclose(
        model.apply(variables, images, train=False),
        only_32.apply({"params": kept, "batch_stats": variables["batch_stats"]}, images,
                      train=False), rtol=1e-5, atol=1e-5)


# -- Bad configs: each a clear error before anything compiles -----------------------------

def test_unknown_model_names_the_closest_one():
    config = tiny.get_config()
    config.model.architecture = "pspnet50"
    with pytest.raises(ValueError, match=r"'pspnet50' is not a model \(did you mean 'pspnet'\?\)"):
        config_lib.resolve_config(config)


def test_a_field_of_another_models_block_is_refused_on_the_command_line():
    config = tiny.get_config()
    with pytest.raises(ValueError, match=r"--config.model.pspnet.bins sets a field of model "
                                         r"'pspnet', but config.model.architecture='deeplabv3'"):
        config_lib.check_overrides(config, ["model.pspnet.bins", "model.depth"])
    config.model.architecture = "pspnet"
    config_lib.check_overrides(config, ["model.pspnet.bins", "model.depth"])  # fine


@pytest.mark.parametrize("name,stride", [("fcn", 16), ("fcn", 8), ("dilated_fcn", 32),
                                         ("deeplabv2", 32)])
def test_a_model_at_an_output_stride_it_cannot_run_at_is_refused(name, stride):
    config = tiny.get_config()
    config.model.architecture = name
    config.model.output_stride = stride
    with pytest.raises(ValueError, match=f"output_stride={stride} is not one of"):
        config_lib.resolve_config(config)
    if name == "fcn":  # ... and at the eval stride too, with why
        config.model.output_stride = 32
        config.eval.output_stride = 16
        with pytest.raises(ValueError, match="distinct stride-8, 16 and 32 features"):
            fcn.resolve(config, 16)


def test_resolved_config_keeps_only_the_chosen_block():
    config = _config("pspnet")
    assert [name for name in NAMES if name in config.model] == ["pspnet"]


@pytest.mark.slow  # trains one model, restores into another (under 16 s idle)
def test_a_checkpoint_of_one_model_is_refused_by_another_naming_both(tmp_path):
    from deeplab_jax import train  # pylint: disable=import-outside-toplevel
    from deeplab_jax.training.checkpoint import CheckpointMismatchError

    config = tiny.get_config()
    config.num_train_steps = 1
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    config.model.architecture = "pspnet"
    with pytest.raises(CheckpointMismatchError,
                       match="is of model 'deeplabv3', but this config's model is 'pspnet'"):
        train.train_and_evaluate(config, workdir)
