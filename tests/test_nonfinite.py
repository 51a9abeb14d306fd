"""Non-finite losses and gradients: the step is skipped, counted, logged, and bounded.

One training run (in this process, 8 devices) whose step function is wrapped to feed NaN
images at chosen steps (inside the jit, from the step counter) and an all-ignore batch at
another: what the loop and the step do with them is read back from the checkpoints.
"""
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import train
from deeplab_jax.training import nonfinite
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.data import input_pipeline
from checkpoint_arrays import load_checkpoint_arrays

NAN_STEPS = (2, 4, 5, 6)  # 1-based, as in the logs: step N makes checkpoint N
ALL_IGNORED_STEP = 3


def _poison(original):
    def poisoned(state, batch, rng, **kwargs):
        step = state.step + 1
        image = jnp.where(jnp.isin(step, jnp.asarray(NAN_STEPS)), jnp.nan,
                          batch["image"].astype(jnp.float32))
        label = jnp.where(step == ALL_IGNORED_STEP, jnp.uint8(255), batch["label"])
        return original(state, {**batch, "image": image, "label": label}, rng, **kwargs)
    return poisoned


_load = load_checkpoint_arrays


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    config = tiny.get_config()
    config.num_train_steps = 8
    config.eval_every_steps = 100
    config.log_every_steps = 1
    config.max_checkpoints_to_keep = 8
    config.max_consecutive_nonfinite_steps = 3
    config.optim.weight_decay = 0.0  # so that an all-ignored batch has exactly zero gradient
    workdir = str(tmp_path_factory.mktemp("poisoned") / "run")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_step_lib, "train_step", _poison(train_step_lib.train_step))
        try:
            train.train_and_evaluate(config, workdir)
            error = None
        except nonfinite.NonFiniteTrainingError as raised:
            error = raised
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    return config, workdir, error, [record.getMessage() for record in records]


def test_too_many_non_finite_steps_in_a_row_stop_the_run_naming_them(poisoned_run):
    _, workdir, error, _ = poisoned_run
    assert error is not None and str(error).startswith("Steps 4-6: 3 consecutive")
    # Stopped before checkpoint 6: checkpoints 1-5 only, every value finite.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == [
        "1", "2", "3", "4", "5"]
    for step in range(1, 6):
        state = _load(workdir, step)
        assert int(state["step"]) == step
        for leaf in jax.tree.leaves(state):
            assert np.isfinite(leaf).all(), step


def test_a_skipped_step_changes_nothing_but_the_step(poisoned_run):
    _, workdir, _, _ = poisoned_run
    states = {step: _load(workdir, step) for step in range(1, 6)}
    for before, after in ((1, 2), (3, 4), (3, 5)):  # steps 2, 4 and 5 were skipped
        for key in ("params", "opt_state", "batch_stats"):  # BN statistics included
            for a, b in zip(jax.tree.leaves(states[before][key]),
                            jax.tree.leaves(states[after][key]), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"{key}, step {after}")
    # ... and training went on after step 2: step 3 changed the state again.
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(states[2]["batch_stats"]), jax.tree.leaves(states[3]["batch_stats"])))


def test_skipped_steps_are_logged_with_their_examples_and_counted(poisoned_run):
    config, _, _, messages = poisoned_run
    skipped = [message for message in messages if "skipped: non-finite" in message]
    assert [message.split()[1] for message in skipped] == ["2", "4", "5", "6"]
    ids = input_pipeline.train_example_indices(
        config.seed, 1, config.data.batch_size, config.data.synthetic.num_train_examples,
        slice(None))
    assert str(ids.tolist()) in skipped[0]  # step 2's examples are named
    assert any(message.startswith("step 5/8:") and "(3 in this run)" in message
               for message in messages)


def test_all_ignored_batch_gives_finite_loss_and_zero_gradients(poisoned_run):
    _, workdir, _, messages = poisoned_run
    # Step 3 (every label 255) was not skipped: its loss was finite, logged as 0.
    assert any(message.startswith("step 3/8: loss 0.0000") for message in messages)
    # SGD momentum: trace_3 = grad_3 + 0.9 * trace_2, so grad_3 == 0 exactly iff:
    trace2 = jax.tree.leaves(_load(workdir, 2)["opt_state"][0]["trace"])
    trace3 = jax.tree.leaves(_load(workdir, 3)["opt_state"][0]["trace"])
    assert any(np.abs(t).max() > 0 for t in trace2)
    for t2, t3 in zip(trace2, trace3, strict=True):
        np.testing.assert_array_equal(t3, np.float32(0.9) * t2)


def test_all_finite_sees_nan_and_both_infinities_in_any_leaf():
    check = jax.jit(train_step_lib.all_finite)
    tree = {"a": jnp.ones((3, 4)), "b": jnp.zeros(5, jnp.bfloat16), "step": jnp.int32(3),
            "big": jnp.full((2,), 3e38)}  # large but finite: no false alarm
    assert bool(check(tree))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        for key in ("a", "b", "big"):
            poisoned = {**tree, key: tree[key].at[1].set(bad)}
            assert not bool(check(poisoned)), (key, bad)


@pytest.mark.slow  # two runs (under 16 s idle)
def test_the_count_of_skips_in_a_row_survives_a_resume(tmp_path):
    """Skips at steps 4 and 5, then the run ends with a checkpoint at 5 ("2 in a row"); the
    resumed run skips step 6: three in a row across the restart, and it stops there."""
    config = tiny.get_config()
    config.num_train_steps = 5
    config.eval_every_steps = 100
    config.max_consecutive_nonfinite_steps = 3
    workdir = str(tmp_path / "run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_step_lib, "train_step", _poison(train_step_lib.train_step))
        train.train_and_evaluate(config, workdir)
        config.num_train_steps = 8
        with pytest.raises(nonfinite.NonFiniteTrainingError, match="^Steps 4-6: 3 consecutive"):
            train.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)[-1] == "5"
