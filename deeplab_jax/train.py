"""The training loop: the one place that holds iterators, writers and checkpoint managers.

`train_and_evaluate(config, workdir)` builds everything from the config, resumes from the
latest checkpoint in `workdir` if there is one, trains, evaluates and checkpoints; running the
same command again after an interruption continues where the last checkpoint left off.
`evaluate_checkpoint(config, workdir)` evaluates a saved checkpoint without training.

Faults the loop handles (README, "Faults and bad input"): SIGTERM or a preemption notice
(`preemption.py`: a checkpoint at the current step on every process, then
`preemption.Preempted`); steps with a non-finite loss or gradient (skipped inside the step,
counted and logged here, `NonFiniteTrainingError` after
`config.max_consecutive_nonfinite_steps` in a row); and a kill at any moment (orbax's
atomic step directories, `checkpoint.py`, plus a data order and augmentation RNG that are
pure functions of the seed and the step).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from typing import Any, Optional

import jax
import ml_collections

from deeplab_jax import (checkpoint, config_lib, curves, evaluate, parallel, preemption,
                         pretrained, reports, visualize)
from deeplab_jax import train_step as train_step_lib
from deeplab_jax.data import datasets, input_pipeline
from deeplab_jax.models import get_model
from deeplab_jax.writer import MetricWriter

SUM_METRICS = ("loss_sum", "valid_pixels", "correct_pixels", "skipped_steps")


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _log_devices() -> None:
    logging.info("JAX %s, process %d of %d, %d local / %d global devices: %s", jax.__version__,
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.devices()[0].device_kind)


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Saves the resolved config (derived values filled in) next to the checkpoints."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as file:
            file.write(config.to_json_best_effort(indent=2, sort_keys=True))


class _Setup:
    """What both training and evaluation build from a config: data, model, state, evaluator."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, read_only: bool):
        self.config = config
        self.mesh = parallel.make_mesh()
        parallel.check_global_batch_size(config.data.batch_size, self.mesh)
        parallel.check_global_batch_size(config.eval.batch_size, self.mesh,
                                         "config.eval.batch_size")
        self.eval_source = datasets.get_dataset(config.data, config.data.eval_split)
        self.num_classes = self.eval_source.num_classes
        model = get_model(config.model, self.num_classes)
        optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
        self.state_sharding = parallel.replicated_sharding(self.mesh)
        init = jax.jit(train_step_lib.create_train_state, static_argnums=(1, 2, 3),
                       out_shardings=self.state_sharding)
        self.state = init(jax.random.key(config.seed), model, optimizer,
                          tuple(config.data.crop_size))
        self.manager = checkpoint.create_manager(
            workdir, max_to_keep=config.max_checkpoints_to_keep,
            keep_best=config.keep_best_checkpoints, read_only=read_only)
        self.eval_step = evaluate.make_eval_step(
            get_model(config_lib.eval_model_config(config), self.num_classes),
            num_classes=self.num_classes, ignore_label=config.data.ignore_label,
            scales=config.eval.scales, flip=config.eval.flip)

    def run_evaluation(self, workdir: str, writer: MetricWriter, step: int) -> dict[str, Any]:
        """Evaluates the current state; writes the JSON, pictures and TensorBoard scalars."""
        config, split = self.config, self.config.data.eval_split
        batches = input_pipeline.eval_batches(
            self.eval_source, global_batch_size=config.eval.batch_size,
            canvas_size=tuple(config.data.canvas_size), ignore_label=config.data.ignore_label,
            process_index=jax.process_index(), process_count=jax.process_count(),
            num_workers=config.data.num_workers)
        variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        start = time.time()
        per_image = reports.PerImageStats()
        results, pictures = evaluate.evaluate(
            self.eval_step, variables,
            (parallel.to_global_batch(batch, self.mesh) for batch in batches),
            num_classes=self.num_classes, expected_num_images=len(self.eval_source),
            class_names=self.eval_source.class_names,
            num_visualizations=config.eval.num_visualizations, per_image=per_image)
        settings = {"output_stride": config.eval.output_stride,
                    "scales": list(config.eval.scales), "flip": config.eval.flip}
        extra = {**settings, "seconds": round(time.time() - start, 2)}
        writer.write_scalars(step, {f"eval/{key}": results[key] for key in
                                    ("miou", "pixel_accuracy", "mean_accuracy", "fwiou")})
        if jax.process_index() == 0:
            name = evaluate.evaluation_name(split, step, **settings)
            path = evaluate.write_metrics_json(workdir, name,
                                               {"step": step, "split": split, **extra, **results})
            logging.info("Evaluation on %s (%d images) at step %d: mIoU %.4f, written to %s",
                         split, results["num_images"], step, results["miou"], path)
            if pictures:
                palette = self.eval_source.palette
                panel = visualize.prediction_panel(pictures["image"], pictures["label"],
                                                   pictures["prediction"], palette)
                visualize.save_png(os.path.join(workdir, "predictions", f"{name}.png"), panel)
                writer.write_images(step, {"eval/image_truth_prediction": panel})
            try:  # Pictures are a reader's aid: never lose a training run over one.
                reports.write_evaluation_report(workdir, name, results, per_image,
                                                self.eval_source.class_names,
                                                self.eval_source.palette)
            except Exception:  # pylint: disable=broad-except
                logging.exception("Could not write the evaluation report of %s.", name)
        return {**results, **extra}


class NonFiniteTrainingError(FloatingPointError):
    """Too many consecutive training steps with a non-finite loss or gradient."""


class _SkippedSteps:
    """Counts the steps the training step skipped (non-finite loss or gradient).

    Each skipped step is logged with its examples; `limit` skipped steps in a row raise
    `NonFiniteTrainingError` naming the step range. Steps are numbered as in the logs and
    checkpoints: step N is the N-th update (from checkpoint N - 1 to checkpoint N).
    """

    def __init__(self, limit: int, example_ids: Any):
        self.limit = limit
        self.example_ids = example_ids  # step -> the global batch's dataset indices
        self.total = 0
        self.consecutive = 0
        self.first = None

    def record(self, step: int, skipped: bool) -> None:
        if not skipped:
            self.consecutive = 0
            return
        self.total += 1
        self.consecutive += 1
        if self.consecutive == 1:
            self.first = step
        logging.warning(
            "Step %d skipped: non-finite loss or gradient; parameters, optimizer state and BN "
            "statistics unchanged (%d in a row, %d in this run). Its examples (dataset "
            "indices): %s", step, self.consecutive, self.total,
            self.example_ids(step).tolist())
        if self.consecutive >= self.limit:
            raise NonFiniteTrainingError(
                f"Steps {self.first}-{step}: {self.consecutive} consecutive training steps had "
                "a non-finite loss or gradient and were skipped (config."
                f"max_consecutive_nonfinite_steps={self.limit}), so training stopped. No "
                "checkpoint holds non-finite values: a rerun resumes from the latest one. "
                "Lower the learning rate, check those steps' examples (logged above) or use "
                "float32 (config.model.dtype).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

    Faults: a SIGTERM (or, under jax.distributed, a preemption notice to any process) saves a
    checkpoint at the end of the current step and raises `preemption.Preempted`; a step with
    a non-finite loss or gradient changes nothing and is counted, and
    `config.max_consecutive_nonfinite_steps` of them in a row raise `NonFiniteTrainingError`.
    Only finite states are ever checkpointed.

    Returns:
      The final evaluation's metrics.
    """
    config = config_lib.resolve_config(config)
    workdir = config_lib.check_workdir(workdir)
    _log_devices()
    setup = _Setup(config, workdir, read_only=False)
    try:
        with preemption.Watcher() as watcher:
            return _train(config, workdir, setup, watcher)
    finally:
        setup.manager.close()  # waits for a save in flight and raises its error, if any


def _train(config: ml_collections.ConfigDict, workdir: str, setup: "_Setup",
           watcher: preemption.Watcher) -> dict[str, Any]:
    # Resume: the latest complete checkpoint decides the step, the data position and the RNG.
    setup.state, restored_step = checkpoint.restore(setup.manager, setup.state)
    _write_config(workdir, config)  # after the restore: never over a refused run's config
    with MetricWriter(os.path.join(workdir, "tensorboard"),
                      write_to_tensorboard=jax.process_index() == 0) as writer:
        return _train_loop(config, workdir, setup, watcher, writer, restored_step)


def _train_loop(config: ml_collections.ConfigDict, workdir: str, setup: "_Setup",
                watcher: preemption.Watcher, writer: MetricWriter,
                restored_step: Optional[int]) -> dict[str, Any]:
    initial_step = int(setup.state.step)
    started = time.time()
    # Marks where this start picks up, so the training curve drops what a killed earlier
    # start logged past its last checkpoint (curves.read_scalars).
    writer.write_scalars(initial_step, {curves.RESUMED_FROM_TAG: initial_step}, log=False)
    if restored_step is not None:
        logging.info("Resumed from the checkpoint at step %d.", restored_step)
    elif config.init_from:
        setup.state = checkpoint.initialize_from(config.init_from, setup.state)
        logging.info("Initialised parameters and BN statistics from %s.", config.init_from)
        if config.model.pretrained_backbone:
            logging.warning("config.model.pretrained_backbone is ignored: config.init_from "
                            "already provides every parameter.")
    else:
        if config.model.pretrained_backbone:  # ImageNet weights; a resumed run never reloads.
            params, batch_stats = pretrained.load_backbone(
                config.model.pretrained_backbone, setup.state.params, setup.state.batch_stats)
            setup.state = setup.state.replace(
                params=parallel.replicate(params, setup.mesh),
                batch_stats=parallel.replicate(batch_stats, setup.mesh))
        num_params = sum(x.size for x in jax.tree.leaves(setup.state.params))
        logging.info("Starting at step 0 (backbone: %s): %d parameters.",
                     config.model.pretrained_backbone or "random", num_params)
        writer.write_text(0, "config", config.to_json_best_effort(indent=2))

    train_source = datasets.get_dataset(config.data, config.data.train_split)
    host_batches = input_pipeline.prefetch(input_pipeline.train_batches(
        train_source, global_batch_size=config.data.batch_size, seed=config.seed,
        start_step=initial_step, canvas_size=tuple(config.data.canvas_size),
        ignore_label=config.data.ignore_label, process_index=jax.process_index(),
        process_count=jax.process_count(), num_workers=config.data.num_workers))
    step_fn = train_step_lib.jit_train_step(config, setup.state_sharding,
                                            parallel.data_sharding(setup.mesh))
    augment_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
    skipped = _SkippedSteps(
        config.max_consecutive_nonfinite_steps,
        lambda step: input_pipeline.train_example_indices(
            config.seed, step - 1, config.data.batch_size, len(train_source), slice(None)))
    # Whether each step was skipped is fetched one step late, while the next step runs, so
    # the host never waits on the device just to count; `flush` catches up before anything
    # is logged, saved or evaluated.
    pending: list[tuple[int, jax.Array]] = []

    def flush() -> None:
        while pending:
            step, flag = pending.pop(0)
            skipped.record(step, bool(jax.device_get(flag)))

    timing = {"first_step_seconds": 0.0, "evaluation_seconds": 0.0}

    def run_evaluation(step: int) -> dict[str, Any]:
        begin = time.time()
        results = setup.run_evaluation(workdir, writer, step)
        if jax.process_index() == 0:
            _write_training_curve(workdir)
        timing["evaluation_seconds"] += time.time() - begin
        return results

    # Train: metric sums stay on device and are fetched once per logging interval.
    sums, last_log_step, last_log_time = None, initial_step, time.time()
    results = None
    watcher.reached(initial_step)  # JAX's preemption sync counts steps from here
    for step in range(initial_step, config.num_train_steps):
        batch = parallel.to_global_batch(next(host_batches), setup.mesh)
        setup.state, metrics = step_fn(setup.state, batch,
                                       jax.random.fold_in(augment_rng, step))
        done = step + 1
        flush()  # the previous step's flag; this step is already queued behind it
        pending.append((done, metrics["skipped_steps"]))
        sums = metrics if sums is None else {
            key: sums[key] + metrics[key] if key in SUM_METRICS else metrics[key]
            for key in metrics}
        if step == initial_step:
            jax.block_until_ready(metrics)
            timing["first_step_seconds"] = time.time() - last_log_time
            logging.info("First step (compilation included) took %.1f s.",
                         timing["first_step_seconds"])
            last_log_time = time.time()
            last_log_step = done
        # Every step, on every process, with the same step number (JAX's sync point).
        preempted = watcher.reached(done)
        is_last = done == config.num_train_steps
        log_due = done % config.log_every_steps == 0 or is_last or preempted
        save_due = done % config.checkpoint_every_steps == 0 or is_last or preempted
        eval_due = (done % config.eval_every_steps == 0 or is_last) and not preempted
        if log_due or save_due or eval_due:
            flush()  # raises NonFiniteTrainingError before anything is saved
        if log_due:
            _log_training(config, writer, jax.device_get(sums), done, last_log_step,
                          last_log_time, skipped.total)
            sums, last_log_step, last_log_time = None, done, time.time()
        evaluated = False
        if eval_due and config.keep_best_checkpoints:  # the save ranks by this mIoU
            results, evaluated = run_evaluation(done), True
            last_log_time = time.time()  # Evaluation time is not training time.
        if save_due:
            checkpoint.save(setup.manager, done, setup.state,
                            metrics={checkpoint.BEST_METRIC: results["miou"]}
                            if evaluated else None)
        if preempted:
            setup.manager.wait_until_finished()
            logging.warning("Preempted: the checkpoint at step %d is complete; stopping. "
                            "Run the same command again to continue from it.", done)
            raise preemption.Preempted(done)
        if eval_due and not evaluated:
            results = run_evaluation(done)
            last_log_time = time.time()

    if results is None:  # Nothing left to train: report on the restored state.
        results = setup.run_evaluation(workdir, writer, initial_step)
    setup.manager.wait_until_finished()
    if config.num_train_steps > initial_step and jax.process_index() == 0:
        _record_timing(config, workdir, initial_step, time.time() - started, **timing)
    return results


def _write_training_curve(workdir: str) -> None:
    try:  # A picture is a reader's aid: never lose a training run over one.
        curves.write_training_curve(workdir)
    except Exception:  # pylint: disable=broad-except
        logging.exception("Could not write the training curve of %s.", workdir)


def _record_timing(config: ml_collections.ConfigDict, workdir: str, initial_step: int,
                   wall_seconds: float, first_step_seconds: float,
                   evaluation_seconds: float) -> None:
    """Appends this start's wall time and training throughput to WORKDIR/timing.json.

    Wall time runs from the start of the training loop (after building and restoring the
    state); training time is that less the first step (compilation) and the evaluations;
    images/s counts the steps after the first. A resumed run adds one entry per start.
    """
    steps = config.num_train_steps - initial_step
    train_seconds = wall_seconds - first_step_seconds - evaluation_seconds
    entry = {
        "start_step": initial_step, "end_step": config.num_train_steps,
        "wall_seconds": round(wall_seconds, 2),
        "first_step_seconds": round(first_step_seconds, 2),
        "evaluation_seconds": round(evaluation_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "images_per_second": (round((steps - 1) * config.data.batch_size / train_seconds, 1)
                              if steps > 1 and train_seconds > 0 else None),
        "global_batch_size": config.data.batch_size,
        "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
        "process_count": jax.process_count(), "jax": jax.__version__,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }
    path = os.path.join(workdir, "timing.json")
    entries = []
    if os.path.exists(path):
        try:
            with open(path) as file:
                entries = json.load(file)
            if not isinstance(entries, list):
                raise TypeError(f"a JSON {type(entries).__name__}")
        except (ValueError, TypeError):  # not ours, or damaged: kept aside, never overwritten
            entries = []
            os.replace(path, path + ".unreadable")
            logging.warning("%s is not a JSON list; moved it to %s.unreadable and started a "
                            "new one.", path, path)
    entries.append(entry)
    evaluate.write_json(path, entries)
    logging.info("Trained steps %d-%d in %s wall time (%s compiling the first step, %s "
                 "evaluating): %s images/s; appended to %s.", initial_step,
                 config.num_train_steps, _format_duration(wall_seconds),
                 _format_duration(first_step_seconds), _format_duration(evaluation_seconds),
                 entry["images_per_second"], path)


def _log_training(config: ml_collections.ConfigDict, writer: MetricWriter,
                  fetched: dict[str, Any], done: int, last_log_step: int,
                  last_log_time: float, total_skipped: int) -> None:
    """Writes the logging interval's scalars and one log line."""
    valid = max(float(fetched["valid_pixels"]), 1.0)
    scalars = {
        "train/loss": fetched["loss_sum"] / valid,
        "train/pixel_accuracy": fetched["correct_pixels"] / valid,
        "train/weight_decay_loss": fetched["weight_decay_loss"],
        "train/grad_norm": fetched["grad_norm"],
        "train/learning_rate": fetched["learning_rate"],
        "train/skipped_steps": total_skipped,
    }
    progress = ""
    if done > last_log_step:  # Not just the compilation step: a rate is meaningful.
        steps_per_second = (done - last_log_step) / (time.time() - last_log_time)
        scalars["train/steps_per_second"] = steps_per_second
        scalars["train/images_per_second"] = steps_per_second * config.data.batch_size
        eta = (config.num_train_steps - done) / steps_per_second
        progress = f", {steps_per_second:.2f} steps/s, ETA {_format_duration(eta)}"
    if fetched["skipped_steps"]:
        progress += (f", {int(fetched['skipped_steps'])} step(s) skipped as non-finite "
                     f"({total_skipped} in this run)")
    writer.write_scalars(done, scalars, log=False)
    logging.info("step %d/%d: loss %.4f, pixel accuracy %.4f, lr %.4g%s", done,
                 config.num_train_steps, scalars["train/loss"],
                 scalars["train/pixel_accuracy"], scalars["train/learning_rate"], progress)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> dict[str, Any]:
    """Evaluates the checkpoint at `step` (default: the latest) in `workdir`; trains nothing.

    The config's `eval` section applies (output stride, scales, flip), so a model trained at
    output stride 16 can be evaluated at 8 with --config.eval.output_stride=8.
    """
    config = config_lib.resolve_config(config)
    workdir = config_lib.check_workdir(workdir)
    if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
        raise FileNotFoundError(
            f"No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first, or point "
            "--workdir at the folder of a trained run.")
    _log_devices()
    setup = _Setup(config, workdir, read_only=True)
    if setup.manager.latest_step() is None:
        raise FileNotFoundError(f"No complete checkpoint in {checkpoint.checkpoint_dir(workdir)}.")
    setup.state, restored_step = checkpoint.restore(setup.manager, setup.state, step)
    with MetricWriter(os.path.join(workdir, "tensorboard"),
                      write_to_tensorboard=jax.process_index() == 0) as writer:
        results = setup.run_evaluation(workdir, writer, restored_step)
    setup.manager.close()
    return results
