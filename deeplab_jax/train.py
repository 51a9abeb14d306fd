"""The training loop: `train_and_evaluate` (resume, train, evaluate, checkpoint) on one screen.

    train_and_evaluate(config, workdir)   # python -m deeplab_jax.main --config=... --workdir=...
    evaluate_checkpoint(config, workdir)  # ... --mode=eval

Everything the loop needs is built by `training/experiment.py` (data, model, checkpoints,
writer, evaluator); the step itself is the pure function of `training/step.py`. Running the
same command again after an interruption continues where the last checkpoint left off: the
data order and the augmentation RNG are pure functions of the seed and the step.

Faults the loop handles (README, "Faults and bad input"): SIGTERM or a preemption notice
(`training/preemption.py`: a checkpoint at the current step on every process, then
`preemption.Preempted`; one during an evaluation is acted on when it ends); steps with a
non-finite loss or gradient (skipped inside the step, counted here, `NonFiniteTrainingError`
after `config.max_consecutive_nonfinite_steps` in a row); and a kill at any moment (orbax's
atomic step directories, `training/checkpoint.py`).
"""
from __future__ import annotations

from typing import Any, Optional

import ml_collections

from deeplab_jax import config_lib
from deeplab_jax.training import preemption
from deeplab_jax.training.experiment import Experiment
from deeplab_jax.training.progress import TrainingProgress
from deeplab_jax.training.step import model_variables


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

    Returns:
      The final evaluation's metrics.
    """
    config = config_lib.resolve_config(config)
    workdir = config_lib.check_workdir(workdir)
    with Experiment(config, workdir) as experiment, preemption.Watcher() as watcher:
        state, skipped = experiment.restore_or_start()
        start_step = int(state.step)
        batches = experiment.train_batches(start_step)
        train_step = experiment.jit_train_step()
        progress = TrainingProgress(config, experiment.writer, start_step)

        def evaluate(state, step: int) -> dict[str, Any]:
            with progress.paused():  # evaluation time is not training time
                return experiment.evaluate(model_variables(state), step, draw_curve=True)

        results = None
        watcher.reached(start_step)  # JAX's preemption sync point counts steps from here
        for step in range(start_step, config.num_train_steps):
            with progress.waiting_for_input():
                batch = next(batches)
            state, metrics = train_step(state, batch, experiment.augment_rng(step))
            done = step + 1
            skipped.add(done, metrics["skipped_steps"])  # checked while the next step runs
            progress.add(done, metrics)
            preempted = watcher.reached(done)  # every step, on every process, same numbers
            last = done == config.num_train_steps
            log_due = done % config.log_every_steps == 0 or last or preempted
            save_due = done % config.checkpoint_every_steps == 0 or last or preempted
            eval_due = (done % config.eval_every_steps == 0 or last) and not preempted
            if log_due or save_due or eval_due:
                skipped.check()  # raises NonFiniteTrainingError before anything is saved
            if log_due:
                progress.log(done, skipped.total)
            if eval_due and experiment.ranks_checkpoints:  # the save ranks by this mIoU
                results = evaluate(state, done)
            if save_due:
                experiment.save(done, state, skipped, results if eval_due else None)
            if preempted:
                experiment.stop_preempted(done)  # raises preemption.Preempted
            if eval_due and not experiment.ranks_checkpoints:
                results = evaluate(state, done)
        if results is None:  # nothing left to train: report on the restored state
            results = evaluate(state, start_step)
        experiment.finish()
        if config.num_train_steps > start_step:
            progress.write_timing(workdir, config.num_train_steps)
        if watcher.signalled():  # after the last step: everything is saved; stop the caller
            experiment.stop_preempted(int(state.step))
    return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> dict[str, Any]:
    """Evaluates the checkpoint at `step` (default: the latest) in `workdir`; trains nothing.

    The config's `eval` section applies (output stride, scales, flip), so a model trained at
    output stride 16 can be evaluated at 8 with --config.eval.output_stride=8. Only the
    parameters and BN statistics are read.
    """
    config = config_lib.resolve_config(config)
    workdir = config_lib.check_workdir(workdir)
    with Experiment(config, workdir, read_only=True) as experiment:
        variables, restored_step = experiment.restore_variables(step)
        return experiment.evaluate(variables, restored_step)
