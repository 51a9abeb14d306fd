"""A tiny run end to end: files written, exact resume, evaluation of a checkpoint."""
import json
import os
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from deeplab_jax import train
from deeplab_jax.evaluation import evaluate as evaluate_lib
from deeplab_jax.reporting import curves
from deeplab_jax.reporting.writer import MetricWriter
from deeplab_jax.training import preemption
from deeplab_jax.training.progress import TrainingProgress


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
    metrics = json.load(open(os.path.join(workdir, "eval", "val_step00000004_os8.json")))
    assert metrics["step"] == 4 and metrics["split"] == "val" and metrics["num_images"] == 10
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "per_class_iou"):
        assert key in metrics
    assert metrics["miou"] == results["miou"]
    assert os.path.exists(os.path.join(workdir, "eval", "val_step00000002_os8.json"))
    assert os.path.exists(os.path.join(workdir, "predictions", "val_step00000004_os8.png"))
    assert any(name.startswith("events") for name in
               os.listdir(os.path.join(workdir, "tensorboard")))
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"]["deeplabv3"]["atrous_rates"] == [2, 4, 6]  # resolved values are recorded
    # The training curve and the timing record.
    assert os.path.getsize(os.path.join(workdir, curves.CURVE_FILE)) > 1000
    scalars = curves.read_scalars(os.path.join(workdir, "tensorboard"))
    assert sorted(scalars[curves.LOSS_TAG]) == [2, 4]
    assert scalars[curves.MIOU_TAG][4] == pytest.approx(results["miou"])
    (timing,) = json.load(open(os.path.join(workdir, "timing.json")))
    assert (timing["start_step"], timing["end_step"], timing["global_batch_size"]) == (0, 4, 8)
    assert timing["images_per_second"] > 0 and timing["machine"]["device_count"] == 8
    # Every speed figure names its machine: CPU model and cores, JAX, XLA flags.
    assert timing["machine"]["cpu"] and timing["machine"]["cpu_cores"] >= 1
    assert timing["machine"]["jax"] == jax.__version__
    assert "xla_force_host_platform_device_count=8" in timing["machine"]["xla_flags"]
    assert 0 < timing["first_step_seconds"] < timing["wall_seconds"]
    assert timing["train_seconds"] + timing["first_step_seconds"] + \
        timing["evaluation_seconds"] == pytest.approx(timing["wall_seconds"], abs=0.02)


def test_rerun_resumes_exactly_where_the_checkpoint_left_off(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    # A run killed after its step-2 checkpoint: steps 3 and 4 never happened.
    interrupted = str(tmp_path / "interrupted")
    shutil.copytree(workdir, interrupted)
    for step in ("3", "4"):
        shutil.rmtree(os.path.join(interrupted, "checkpoints", step))
    shutil.rmtree(os.path.join(interrupted, "eval"))
    train.train_and_evaluate(_config(), interrupted)
    assert not os.path.exists(os.path.join(interrupted, "eval", "val_step00000002_os8.json"))
    final, resumed = _load_checkpoint(workdir, 4), _load_checkpoint(interrupted, 4)
    for (path, a), (_, b) in zip(_leaves(final), _leaves(resumed)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    a = json.load(open(os.path.join(workdir, "eval", "val_step00000004_os8.json")))
    b = json.load(open(os.path.join(interrupted, "eval", "val_step00000004_os8.json")))
    assert a["per_class_iou"] == b["per_class_iou"]
    # The resumed curve is the uninterrupted one; timing.json has one entry per start.
    assert curves.read_scalars(os.path.join(interrupted, "tensorboard"))[curves.LOSS_TAG] == \
        curves.read_scalars(os.path.join(workdir, "tensorboard"))[curves.LOSS_TAG]
    timing = json.load(open(os.path.join(interrupted, "timing.json")))
    assert [(t["start_step"], t["end_step"]) for t in timing] == [(0, 4), (2, 4)]


@pytest.mark.slow  # two tiny training runs with Adam's step to compile (about 19 s idle)
def test_an_adam_run_resumes_exactly(tmp_path):
    """The embedded default trains with Adam: its moments are saved and restored too."""
    config = _config(num_train_steps=2)
    config.eval_every_steps = 2  # one evaluation, at the end
    config.optim.optimizer = "adam"
    config.optim.base_learning_rate = 5e-3
    workdir, interrupted = str(tmp_path / "run"), str(tmp_path / "interrupted")
    train.train_and_evaluate(config, workdir)
    shutil.copytree(workdir, interrupted)
    shutil.rmtree(os.path.join(interrupted, "checkpoints", "2"))
    train.train_and_evaluate(config, interrupted)
    final, resumed = _load_checkpoint(workdir, 2), _load_checkpoint(interrupted, 2)
    paths = [jax.tree_util.keystr(path) for path, _ in _leaves(final)]
    assert "['opt_state'][0]['nu']['aspp']['branch0']['kernel']" in paths  # Adam's moments
    for (path, a), (_, b) in zip(_leaves(final), _leaves(resumed)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))


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
    written = json.load(open(os.path.join(workdir, "eval", "val_step00000003_os16.json")))
    assert written["output_stride"] == 16
    # The training-time evaluation at OS8 is untouched.
    assert os.path.exists(os.path.join(workdir, "eval", "val_step00000004_os8.json"))


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        train.evaluate_checkpoint(_config(), str(tmp_path / "empty"))


def test_checkpoint_of_another_model_is_refused(trained_workdir):
    workdir, _ = trained_workdir
    config = _config()
    config.model.width = 16
    with pytest.raises(ValueError, match="does not fit this config's model"):
        train.evaluate_checkpoint(config, workdir)


@pytest.mark.slow  # a second training run (under 16 s idle)
def test_init_from_starts_a_new_stage_from_another_run(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    config = _config(num_train_steps=1)
    config.init_from = workdir
    # With lr 0 and frozen BN a step changes nothing: the new run holds the imported weights.
    config.optim.base_learning_rate = 0.0
    config.optim.freeze_bn = True
    config.model.output_stride = 16  # a second stage at another stride, as in the paper
    config.model.deeplabv3.atrous_rates = (1, 2, 3)
    second = str(tmp_path / "second_stage")
    train.train_and_evaluate(config, second)
    assert os.listdir(os.path.join(second, "checkpoints")) == ["1"]
    first, new = _load_checkpoint(workdir, 4), _load_checkpoint(second, 1)
    for key in ("params", "batch_stats"):
        for (path, a), (_, b) in zip(_leaves(first[key]), _leaves(new[key])):
            np.testing.assert_array_equal(a, b, err_msg=str(path))
    assert int(new["step"]) == 1


def test_init_from_a_folder_without_checkpoints_is_refused(tmp_path):
    config = _config(num_train_steps=1)
    config.init_from = str(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match="config.init_from"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_an_unreadable_timing_record_is_kept_aside_not_overwritten(tmp_path):
    (tmp_path / "timing.json").write_text('{"not": "a list"}')
    progress = TrainingProgress(_config(), MetricWriter(None), start_step=0)
    progress.started -= 10.0  # a 10 s run: 4 s compiling, 1 s evaluating
    progress.first_step_seconds, progress.evaluation_seconds = 4.0, 1.0
    progress.write_timing(str(tmp_path), 4)
    assert (tmp_path / "timing.json.unreadable").read_text() == '{"not": "a list"}'
    (entry,) = json.loads((tmp_path / "timing.json").read_text())
    assert entry["train_seconds"] == pytest.approx(5.0, abs=0.05)
    assert entry["images_per_second"] == pytest.approx(3 * 8 / 5.0, rel=0.02)


@pytest.mark.slow  # a training run with a signal in its evaluation (under 16 s idle)
def test_sigterm_during_an_evaluation_is_acted_on_when_it_ends(tmp_path, monkeypatch):
    """The evaluation in flight runs to its end and is written; the next step is saved as
    the preemption checkpoint, and the run stops there."""
    config = _config(num_train_steps=6)
    config.checkpoint_every_steps = 100  # the only checkpoint is the preemption one
    evaluate = evaluate_lib.evaluate
    calls = []

    def evaluate_during_a_sigterm(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 1:  # the evaluation at step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_lib, "evaluate", evaluate_during_a_sigterm)
    workdir = str(tmp_path / "run")
    with pytest.raises(preemption.Preempted) as stopped:
        train.train_and_evaluate(config, workdir)
    assert stopped.value.step == 3 and calls == [0]
    record = json.load(open(os.path.join(workdir, "eval", "val_step00000002_os8.json")))
    assert record["num_images"] == 10  # the interrupted evaluation completed
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]


@pytest.mark.slow  # a 2-step training run, then its re-evaluation with a signal (under 15 s)
def test_sigterm_after_the_last_step_stops_the_caller_once_the_results_are_written(
        tmp_path, monkeypatch):
    """A runner that trains run after run (experiments/*/run.py) must stop on SIGTERM even
    when it arrives while a finished run is re-evaluated: no training step is left to save,
    so the results are written and `Preempted` is raised at the finished step."""
    config = _config(num_train_steps=2)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    evaluate = evaluate_lib.evaluate
    eval_file = os.path.join(workdir, "eval", "val_step00000002_os8.json")
    os.remove(eval_file)

    def evaluate_during_a_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_lib, "evaluate", evaluate_during_a_sigterm)
    with pytest.raises(preemption.Preempted) as stopped:
        train.train_and_evaluate(config, workdir)
    assert stopped.value.step == 2
    assert json.load(open(eval_file))["num_images"] == 10  # written before it stopped
