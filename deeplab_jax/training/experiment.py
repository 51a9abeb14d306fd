"""What a run builds from its config, and the steps the training loop takes with it.

`Experiment` owns the long-lived pieces of one run: the device mesh, the data sources, the
model, the checkpoint manager, the TensorBoard writer and the evaluation step. The loop
(`deeplab_jax/train.py`) holds only the train state and the step counter, and calls:

- `restore_or_start`: the latest checkpoint of the workdir (the step, optimizer and BN
  state, and the count of non-finite steps in a row), else `config.init_from`'s weights,
  else a fresh state with the ImageNet backbone if one is configured;
- `train_batches`: the global batches from a step on (decoded and padded ahead, in a
  background thread);
- `evaluate`, `save`, `finish`.

Closing the experiment (it is a context manager) waits for a save in flight and raises
its error, if any, and closes the event file.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Iterator, Optional

import jax
import ml_collections

from deeplab_jax import config_lib, parallel
from deeplab_jax.data import datasets, input_pipeline
from deeplab_jax.evaluation import evaluate as evaluate_lib
from deeplab_jax.evaluation import intervals, outputs
from deeplab_jax.evaluation.per_image import PerImageStats
from deeplab_jax.models import get_model, model_module, pretrained
from deeplab_jax.reporting import curves
from deeplab_jax.reporting.writer import MetricWriter
from deeplab_jax.training import checkpoint, class_weights, freeze, preemption
from deeplab_jax.training import step as step_lib
from deeplab_jax.training.nonfinite import SkippedSteps

PyTree = Any


class Experiment:
    """One run's mesh, data, model, checkpoints, writer and evaluator (module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
                 read_only: bool = False):
        """Builds everything but the train state; `read_only`: evaluation of a finished run."""
        self.config, self.workdir = config, workdir
        logging.info("JAX %s, process %d of %d, %d local / %d global devices: %s",
                     jax.__version__, jax.process_index(), jax.process_count(),
                     jax.local_device_count(), jax.device_count(), jax.devices()[0].device_kind)
        self.mesh = parallel.make_mesh()
        parallel.check_global_batch_size(config.data.batch_size, self.mesh)
        parallel.check_global_batch_size(config.eval.batch_size, self.mesh,
                                         "config.eval.batch_size")
        self.eval_source = datasets.get_dataset(config.data, config.data.eval_split)
        self.num_classes = self.eval_source.num_classes
        self.model = get_model(config.model, self.num_classes)
        self.state_sharding = parallel.replicated_sharding(self.mesh)
        self.manager = None if read_only else checkpoint.create_manager(
            workdir, max_to_keep=config.max_checkpoints_to_keep,
            keep_best=config.keep_best_checkpoints)
        self.writer = MetricWriter(os.path.join(workdir, "tensorboard"),
                                   write_to_tensorboard=jax.process_index() == 0)
        self.eval_step = evaluate_lib.make_eval_step(
            get_model(config_lib.eval_model_config(config), self.num_classes),
            num_classes=self.num_classes, ignore_label=config.data.ignore_label,
            scales=config.eval.scales, flip=config.eval.flip,
            crf_params=evaluate_lib.crf_params(config.eval))
        self._train_source = None

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.manager is not None:
                self.manager.close()  # waits for a save in flight; raises its error
        finally:
            self.writer.close()

    @property
    def ranks_checkpoints(self) -> bool:
        """Whether saves are ranked by val mIoU (`keep_best`): then evaluation comes first."""
        return self.config.keep_best_checkpoints > 0

    @property
    def train_source(self):
        if self._train_source is None:
            self._train_source = datasets.get_dataset(self.config.data,
                                                      self.config.data.train_split)
        return self._train_source

    # -- the train state ------------------------------------------------------------------

    def _abstract_state(self) -> step_lib.TrainState:
        return step_lib.abstract_train_state(self.config, self.model, self.state_sharding)

    def restore_or_start(self) -> tuple[step_lib.TrainState, SkippedSteps]:
        """The state to train from and the non-finite step counter (module docstring)."""
        config = self.config
        frozen = tuple(config.optim.get("frozen") or ())
        if frozen:  # a pattern that names nothing is refused before anything runs
            count = freeze.check_patterns(self._abstract_state().params, frozen)
            logging.info("Frozen by config.optim.frozen=%s: %d parameter values (no gradient, "
                         "no decay, no optimizer state, BN statistics fixed).", frozen, count)
        state, restored_step, run = checkpoint.restore(
            self.manager, self._abstract_state(), model_name=config.model.architecture)
        if jax.process_index() == 0:  # after the restore: never over a refused run's config
            with open(os.path.join(self.workdir, "config.json"), "w") as file:
                file.write(config.to_json_best_effort(indent=2, sort_keys=True))
        if restored_step is not None:
            logging.info("Resumed from the checkpoint at step %d.", restored_step)
        else:
            state = jax.jit(step_lib.create_train_state, static_argnums=(1, 2, 3),
                            out_shardings=self.state_sharding)(
                jax.random.key(config.seed), self.model,
                step_lib.create_optimizer(config.optim, config.num_train_steps),
                tuple(config.data.crop_size))
            state = self._initial_weights(state)
            self.writer.write_text(0, "config", config.to_json_best_effort(indent=2))
        self.writer.write_session_start(int(state.step))  # curves drop what a killed start logged
        skipped = SkippedSteps(
            config.max_consecutive_nonfinite_steps,
            lambda step: input_pipeline.train_example_indices(
                config.seed, step - 1, config.data.batch_size, len(self.train_source),
                slice(None)),
            consecutive=run.get("consecutive_nonfinite_steps", 0),
            first=run.get("first_nonfinite_step"))
        return state, skipped

    def _initial_weights(self, state: step_lib.TrainState) -> step_lib.TrainState:
        """`config.init_from`'s weights, else the ImageNet backbone, else `state` as it is."""
        config = self.config
        if config.init_from:
            fresh = tuple(config.get("init_from_fresh") or ())
            variables, step = checkpoint.restore_variables(
                config.init_from, step_lib.model_variables(state),
                model_name=None if fresh else config.model.architecture, fresh=fresh)
            logging.info("Initialised parameters and BN statistics from step %d of %s%s.",
                         step, config.init_from,
                         f" (but {', '.join(fresh)}: initialised afresh)" if fresh else "")
            if config.model.pretrained_backbone:
                logging.warning("config.model.pretrained_backbone is ignored: config.init_from "
                                "already provides every parameter.")
            return state.replace(**variables)
        if config.model.pretrained_backbone:
            module = model_module(config.model.architecture)
            options = (module.pretrained_options(config.model)
                       if hasattr(module, "pretrained_options") else {})
            params, batch_stats = pretrained.load_backbone(
                config.model.pretrained_backbone, state.params, state.batch_stats, **options)
            state = state.replace(params=parallel.replicate(params, self.mesh),
                                  batch_stats=parallel.replicate(batch_stats, self.mesh))
        logging.info("Starting at step 0 (backbone: %s): %d parameters.",
                     config.model.pretrained_backbone or "random",
                     sum(x.size for x in jax.tree.leaves(state.params)))
        return state

    # -- training ------------------------------------------------------------------------

    def train_batches(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
        """Global batches from `start_step` on; the host builds them ahead in a thread."""
        config = self.config
        host_batches = input_pipeline.train_batches(
            self.train_source, global_batch_size=config.data.batch_size, seed=config.seed,
            start_step=start_step, canvas_size=tuple(config.data.canvas_size),
            ignore_label=config.data.ignore_label, process_index=jax.process_index(),
            process_count=jax.process_count(), num_workers=config.data.num_workers)
        for batch in input_pipeline.prefetch(host_batches):
            yield parallel.to_global_batch(batch, self.mesh)

    def jit_train_step(self):
        weights = class_weights.resolve(self.config.optim, self.workdir, self.train_source,
                                        self.num_classes)
        return step_lib.jit_train_step(self.config, self.state_sharding,
                                       parallel.data_sharding(self.mesh), class_weights=weights)

    def augment_rng(self, step: int) -> jax.Array:
        """Step `step`'s augmentation key: a pure function of the seed and the step."""
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.config.seed), 1), step)

    def save(self, step: int, state: step_lib.TrainState, skipped: SkippedSteps,
             results: Optional[dict[str, Any]]) -> None:
        checkpoint.save(self.manager, step, state,
                        metrics={checkpoint.BEST_METRIC: results["miou"]} if results else None,
                        run={"model": self.config.model.architecture, **skipped.record()})

    def stop_preempted(self, step: int) -> None:
        """Waits for the checkpoint of `step`, then raises `preemption.Preempted`."""
        self.manager.wait_until_finished()
        logging.warning("Preempted: the checkpoint at step %d is complete; stopping. Run the "
                        "same command again to continue from it.", step)
        raise preemption.Preempted(step)

    def finish(self) -> None:
        self.manager.wait_until_finished()

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, variables: PyTree, step: int, *, draw_curve: bool = False
                 ) -> dict[str, Any]:
        """Evaluates `variables` on the eval split; writes the outputs (`outputs.py`)."""
        config, split = self.config, self.config.data.eval_split
        batches = input_pipeline.eval_batches(
            self.eval_source, global_batch_size=config.eval.batch_size,
            canvas_size=tuple(config.data.canvas_size), ignore_label=config.data.ignore_label,
            process_index=jax.process_index(), process_count=jax.process_count(),
            num_workers=config.data.num_workers)
        per_image = PerImageStats()
        start = time.time()
        results, pictures = evaluate_lib.evaluate(
            self.eval_step, variables, batches,
            to_device=functools.partial(parallel.to_global_batch, mesh=self.mesh),
            num_classes=self.num_classes, expected_num_images=len(self.eval_source),
            class_names=self.eval_source.class_names,
            num_visualizations=config.eval.num_visualizations, per_image=per_image)
        crf = evaluate_lib.crf_params(config.eval)
        settings = {"output_stride": config.eval.output_stride,
                    "scales": list(config.eval.scales), "flip": config.eval.flip,
                    "crf": bool(crf), "crf_downsample": crf.downsample if crf else 1}
        record = {"step": step, "split": split, **settings,
                  "seconds": round(time.time() - start, 2), **results}
        if config.eval.interval_resamples:  # over the images: `evaluation/intervals.py`
            record["intervals"] = intervals.interval(
                per_image.confusions, num_resamples=config.eval.interval_resamples)
        ids = getattr(self.eval_source, "ids", None)
        outputs.write_evaluation(
            self.workdir, self.writer, name=outputs.evaluation_name(split, step, **settings),
            record=record, pictures=pictures, per_image=per_image,
            class_names=self.eval_source.class_names, palette=self.eval_source.palette,
            image_ids=None if ids is None else [str(ids[p]) for p in per_image.positions])
        if draw_curve and jax.process_index() == 0:
            try:  # A picture is a reader's aid: never lose a training run over one.
                curves.write_training_curve(self.workdir)
            except Exception:  # pylint: disable=broad-except
                logging.exception("Could not write the training curve of %s.", self.workdir)
        return record

    def restore_variables(self, step: Optional[int]) -> tuple[PyTree, int]:
        """The parameters and BN statistics of the workdir's checkpoint at `step`."""
        return checkpoint.restore_variables(
            self.workdir, step_lib.model_variables(self._abstract_state()), step,
            model_name=self.config.model.architecture)
