"""Checkpoints: other device counts, incompatible configs, retention, finite values only."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from configs import tiny
from deeplab_jax import config_lib, parallel
from deeplab_jax.training import checkpoint
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.models import get_model


def _model_and_optimizer(num_classes=5, depth=14):
    config = tiny.get_config()
    config.model.depth = depth
    config.model.multi_grid = (1,) * {14: 1, 26: 2}[depth]
    config = config_lib.resolve_config(config)
    return (get_model(config.model, num_classes),
            train_step_lib.create_optimizer(config.optim, config.num_train_steps),
            tuple(config.data.crop_size))


def _abstract(mesh, num_classes=5, depth=14):
    """The restore target of a config: shapes, dtypes and shardings, nothing computed."""
    model, optimizer, crop = _model_and_optimizer(num_classes, depth)
    shapes = jax.eval_shape(lambda key: train_step_lib.create_train_state(
        key, model, optimizer, crop), jax.random.key(0))
    sharding = parallel.replicated_sharding(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        shapes)


def _mesh(num_devices):
    return Mesh(np.asarray(jax.devices()[:num_devices]), (parallel.DATA_AXIS,))


def _assert_trees_equal(a, b):
    for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a),
                                 jax.tree_util.tree_leaves_with_path(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                      err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def saved_on_8_devices(tmp_path_factory):
    """A tiny model's train state saved from 8 devices at step 1, and that state."""
    assert jax.device_count() == 8
    workdir = str(tmp_path_factory.mktemp("eight"))
    rng = np.random.default_rng(3)  # random values in the state's shapes: no compilation
    state = jax.tree.map(
        lambda x: jax.device_put(rng.standard_normal(x.shape).astype(x.dtype), x.sharding),
        _abstract(_mesh(8)))
    manager = checkpoint.create_manager(workdir)
    checkpoint.save(manager, 1, state)
    manager.close()
    return workdir, jax.device_get(state)


def test_checkpoint_of_8_devices_restores_on_1_and_back(saved_on_8_devices, tmp_path):
    workdir, saved = saved_on_8_devices
    one = _mesh(1)
    manager = checkpoint.create_manager(workdir, read_only=True)
    restored, step, _ = checkpoint.restore(manager, _abstract(one))
    manager.close()
    assert step == 1
    assert {d for leaf in jax.tree.leaves(restored) for d in leaf.sharding.device_set} == {
        jax.devices()[0]}
    _assert_trees_equal(restored, saved)
    # ... and a checkpoint written on 1 device restores on 8.
    manager = checkpoint.create_manager(str(tmp_path))
    checkpoint.save(manager, 2, restored)
    manager.close()
    manager = checkpoint.create_manager(str(tmp_path), read_only=True)
    on_eight, _, _ = checkpoint.restore(manager, _abstract(_mesh(8)))
    manager.close()
    assert len(jax.tree.leaves(on_eight)[0].sharding.device_set) == 8
    _assert_trees_equal(on_eight, saved)


def test_other_class_count_is_refused_naming_the_arrays(saved_on_8_devices):
    workdir, _ = saved_on_8_devices
    manager = checkpoint.create_manager(workdir, read_only=True)
    with pytest.raises(checkpoint.CheckpointMismatchError) as error:
        checkpoint.restore(manager, _abstract(_mesh(8), num_classes=11))
    manager.close()
    message = str(error.value)
    assert "does not fit this config's model" in message
    assert "class count: saved 5, config 11" in message
    assert "params/logits/kernel: saved (1, 1, 16, 5) float32, config (1, 1, 16, 11)" in message


def test_other_depth_is_refused_naming_the_depths(saved_on_8_devices):
    workdir, _ = saved_on_8_devices
    manager = checkpoint.create_manager(workdir, read_only=True)
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"depth: saved 14, config 26(.|\n)*block1/unit02/conv1/kernel: "
                             r"not in the checkpoint"):
        checkpoint.restore(manager, _abstract(_mesh(8), depth=26))
    manager.close()


def _small_state(step):
    return {"params": {"w": jnp.arange(6.0).reshape(2, 3) + step}, "step": jnp.int32(step)}


def test_non_finite_state_is_never_saved(tmp_path):
    manager = checkpoint.create_manager(str(tmp_path))
    checkpoint.save(manager, 1, _small_state(1))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        poisoned = _small_state(2)
        poisoned["params"]["w"] = poisoned["params"]["w"].at[1, 2].set(bad)
        with pytest.raises(checkpoint.NonFiniteStateError, match="Refusing to save step 2"):
            checkpoint.save(manager, 2, poisoned)
    with pytest.raises(ValueError, match="already holds step 1"):
        checkpoint.save(manager, 1, _small_state(1))  # orbax alone would return False silently
    manager.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


def test_best_model_retention_never_deletes_the_latest(tmp_path):
    manager = checkpoint.create_manager(str(tmp_path), max_to_keep=1, keep_best=1)
    for step, miou in ((1, 0.5), (2, 0.7), (3, 0.4), (4, 0.3)):  # a declining run
        checkpoint.save(manager, step, _small_state(step), metrics={"miou": miou})
        manager.wait_until_finished()
    manager.close()
    # The best (2) and the latest (4) survive; orbax's best_fn alone would keep only 2.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    manager = checkpoint.create_manager(str(tmp_path), read_only=True)
    restored, step, _ = checkpoint.restore(manager, _small_state(0))
    manager.close()
    assert step == 4 and int(restored["step"]) == 4


def test_stale_temporary_checkpoint_is_cleaned_and_ignored(saved_on_8_devices, tmp_path):
    workdir, _ = saved_on_8_devices
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(workdir, copy)
    stale = copy / "checkpoints" / "2.orbax-checkpoint-tmp"
    stale.mkdir()
    (stale / "half_written").write_bytes(b"\0" * 10)
    manager = checkpoint.create_manager(str(copy))
    assert manager.latest_step() == 1
    manager.close()
    assert sorted(os.listdir(copy / "checkpoints")) == ["1"]
