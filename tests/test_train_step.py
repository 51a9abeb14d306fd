"""The jitted training step: data parallelism with global BatchNorm, and learning."""
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from configs import tiny
from deeplab_jax import config_lib, parallel
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.data import datasets, input_pipeline
from deeplab_jax.models import get_model


def _setup(config, mesh):
    model = get_model(config.model, 5)
    optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
    state = jax.jit(train_step_lib.create_train_state, static_argnums=(1, 2, 3),
                    out_shardings=parallel.replicated_sharding(mesh))(
        jax.random.key(0), model, optimizer, tuple(config.data.crop_size))
    step = train_step_lib.jit_train_step(config, parallel.replicated_sharding(mesh),
                                         parallel.data_sharding(mesh))
    return state, step


def _batch(config, step=0):
    source = datasets.get_dataset(config.data, "train")
    return next(input_pipeline.train_batches(
        source, global_batch_size=config.data.batch_size, seed=0, start_step=step,
        canvas_size=tuple(config.data.canvas_size)))


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8, "conftest.py simulates 8 CPU devices"
    config = config_lib.resolve_config(tiny.get_config())
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
        state, step = _setup(config, mesh)
        rng = jax.random.key(7)
        for index in range(2):
            batch = parallel.to_global_batch(_batch(config, index), mesh)
            state, metrics = step(state, batch, jax.random.fold_in(rng, index))
        assert batch["image"].sharding.num_devices == len(devices)
        results.append(jax.device_get((state.params, state.batch_stats, metrics)))
    single, sharded = results
    # BN statistics over the global batch: per-device statistics would differ from these.
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_loss_falls_when_overfitting_one_batch():
    config = tiny.get_config()
    config.data.min_scale = config.data.max_scale = 1.0
    config.data.flip = False
    config.optim.base_learning_rate = 0.05
    config.num_train_steps = 25
    config = config_lib.resolve_config(config)
    mesh = parallel.make_mesh()
    state, step = _setup(config, mesh)
    batch = parallel.to_global_batch(_batch(config), mesh)
    losses = []
    for index in range(config.num_train_steps):
        state, metrics = step(state, batch, jax.random.key(index))
        losses.append(float(metrics["loss_sum"] / metrics["valid_pixels"]))
    assert losses[-1] < 0.5 * losses[0], losses


def test_frozen_batch_norm_keeps_statistics():
    config = tiny.get_config()
    config.optim.freeze_bn = True
    config = config_lib.resolve_config(config)
    mesh = parallel.make_mesh()
    state, step = _setup(config, mesh)
    before = jax.device_get(state.batch_stats)
    params_before = jax.device_get(state.params)
    state, _ = step(state, parallel.to_global_batch(_batch(config), mesh), jax.random.key(0))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.batch_stats))):
        np.testing.assert_array_equal(a, b)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params_before),
                                                   jax.tree.leaves(jax.device_get(state.params)))]
    assert any(moved)


def test_metrics_are_sums_and_the_schedule_is_poly():
    config = config_lib.resolve_config(tiny.get_config())
    schedule = train_step_lib.create_learning_rate_schedule(config.optim, 10)
    base = config.optim.base_learning_rate
    np.testing.assert_allclose(schedule(5), base * 0.5**0.9, rtol=1e-6)
    assert float(schedule(10)) == 0.0
    mesh = parallel.make_mesh()
    state, step = _setup(config, mesh)
    batch = _batch(config)
    _, metrics = step(state, parallel.to_global_batch(batch, mesh), jax.random.key(0))
    crop_pixels = config.data.batch_size * np.prod(config.data.crop_size)
    assert 0 < float(metrics["valid_pixels"]) <= crop_pixels
    assert 0 <= float(metrics["correct_pixels"]) <= float(metrics["valid_pixels"])
    np.testing.assert_allclose(float(metrics["learning_rate"]), base, rtol=1e-6)


@pytest.mark.slow  # two compilations (about 6 s idle)
def test_the_state_is_donated_unless_asked_not_to():
    config = config_lib.resolve_config(tiny.get_config())
    mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
    batch = parallel.to_global_batch(_batch(config), mesh)
    state, step = _setup(config, mesh)
    new_state, _ = step(state, batch, jax.random.key(0))
    # Donated: the old buffers now hold the new state, so one copy lives on the device.
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
    kept = train_step_lib.jit_train_step(config, parallel.replicated_sharding(mesh),
                                         parallel.data_sharding(mesh), donate_state=False)
    newer_state, _ = kept(new_state, batch, jax.random.key(1))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state.params))
    assert int(newer_state.step) == int(new_state.step) + 1


@pytest.mark.parametrize("name", train_step_lib.OPTIMIZERS)
def test_the_optimizers_first_update(name):
    """SGD's first step is -lr * g; Adam's (bias-corrected) is -lr * g / (|g| + eps)."""
    config = tiny.get_config()
    config.optim.optimizer = name
    config.optim.base_learning_rate = 0.1
    optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
    params = {"kernel": np.zeros(4, np.float32)}
    grads = {"kernel": np.array([2.0, -0.5, 1e-3, 0.0], np.float32)}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    expected = -0.1 * (grads["kernel"] if name == "sgd"
                       else grads["kernel"] / (np.abs(grads["kernel"]) + 1e-8))
    np.testing.assert_allclose(updates["kernel"], expected, rtol=1e-5, atol=1e-7)
