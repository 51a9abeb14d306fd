"""A tiny run end to end: files written, exact resume, evaluation of a checkpoint."""
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from deeplab_jax import train


def _config(num_train_steps=4):
    config = tiny.get_config()
    config.num_train_steps = num_train_steps
    config.checkpoint_every_steps = 1
    config.eval_every_steps = 2
    config.log_every_steps = 2
    return config


def _load_checkpoint(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    return ocp.PyTreeCheckpointer().restore(path)


def _leaves(tree):
    import jax
    return jax.tree_util.tree_leaves_with_path(tree)


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run") / "workdir")
    results = train.train_and_evaluate(_config(), workdir)
    return workdir, results


def test_run_writes_checkpoints_metrics_pictures_and_config(trained_workdir):
    workdir, results = trained_workdir
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4"]
    metrics = json.load(open(os.path.join(workdir, "eval", "val_step00000004.json")))
    assert metrics["step"] == 4 and metrics["split"] == "val" and metrics["num_images"] == 10
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "per_class_iou"):
        assert key in metrics
    assert metrics["miou"] == results["miou"]
    assert os.path.exists(os.path.join(workdir, "eval", "val_step00000002.json"))
    assert os.path.exists(os.path.join(workdir, "predictions", "val_step00000004.png"))
    assert any(name.startswith("events") for name in
               os.listdir(os.path.join(workdir, "tensorboard")))
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"]["atrous_rates"] == [2, 4, 6]  # resolved values are recorded


def test_rerun_resumes_exactly_where_the_checkpoint_left_off(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    # A run killed after its step-2 checkpoint: steps 3 and 4 never happened.
    interrupted = str(tmp_path / "interrupted")
    shutil.copytree(workdir, interrupted)
    for step in ("3", "4"):
        shutil.rmtree(os.path.join(interrupted, "checkpoints", step))
    shutil.rmtree(os.path.join(interrupted, "eval"))
    train.train_and_evaluate(_config(), interrupted)
    assert not os.path.exists(os.path.join(interrupted, "eval", "val_step00000002.json"))
    final, resumed = _load_checkpoint(workdir, 4), _load_checkpoint(interrupted, 4)
    for (path, a), (_, b) in zip(_leaves(final), _leaves(resumed)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    a = json.load(open(os.path.join(workdir, "eval", "val_step00000004.json")))
    b = json.load(open(os.path.join(interrupted, "eval", "val_step00000004.json")))
    assert a["per_class_iou"] == b["per_class_iou"]


def test_rerun_of_a_finished_run_trains_nothing(trained_workdir):
    workdir, _ = trained_workdir
    before = _load_checkpoint(workdir, 4)
    train.train_and_evaluate(_config(), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4"]
    for (_, a), (_, b) in zip(_leaves(before), _leaves(_load_checkpoint(workdir, 4))):
        np.testing.assert_array_equal(a, b)


def test_evaluate_checkpoint_at_another_output_stride(trained_workdir):
    workdir, _ = trained_workdir
    config = _config()
    config.eval.output_stride = 16
    results = train.evaluate_checkpoint(config, workdir, step=3)
    assert results["output_stride"] == 16 and results["num_images"] == 10
    written = json.load(open(os.path.join(workdir, "eval", "val_step00000003.json")))
    assert written["output_stride"] == 16


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        train.evaluate_checkpoint(_config(), str(tmp_path / "empty"))


def test_checkpoint_of_another_model_is_refused(trained_workdir):
    workdir, _ = trained_workdir
    config = _config()
    config.model.width = 16
    with pytest.raises(ValueError, match="does not fit this config's model"):
        train.evaluate_checkpoint(config, workdir)
