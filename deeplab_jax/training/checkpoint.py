"""Orbax checkpoints of the train state in `workdir/checkpoints`.

Resuming is the same as re-running the command: `restore` finds the newest complete
checkpoint and restores it onto the current state's shardings. What can and cannot happen:

- A step directory appears only when complete: orbax writes `<step>.orbax-checkpoint-tmp`
  and renames it when every array and the metadata are written. A run killed mid-save
  leaves at most such a temporary directory, which the next run deletes before its manager
  starts (`create_manager`); the latest complete step is what resumes.
- Saves are asynchronous (the arrays are copied to host memory first, then written in a
  background thread); `close` waits for the last one and raises its error, if any.
- Old steps are deleted only after a newer one is complete. A run killed in the middle of
  a deletion leaves a partly deleted *old* step; the resumed run restores the latest step
  and deletes the remnant with the next old step.
- Retention keeps the latest `max_to_keep` steps, plus (with `keep_best` > 0) the
  `keep_best` steps of highest eval mIoU: the latest step is never deleted for being worse.
- Only finite values are ever saved (`save` checks), and a save at a step that is not
  after the latest one is an error rather than orbax's silent no-op.
- Restoring always passes the current state's shapes, dtypes and shardings, so a
  checkpoint written on 8 devices restores on 1 (and vice versa). A checkpoint whose tree
  differs from the config's model is refused with the leaves that differ and what that
  means (class count, depth) before anything is read.

Each step holds two items: `state` (the train state's arrays) and `run`, a small JSON
record of what the arrays do not say: the model's name and the count of non-finite steps
skipped in a row when it was saved, so a resumed run carries that count on (checkpoints
written before the record existed restore with an empty one). Prediction, export,
evaluation and `init_from` restore only the parameters and BN statistics
(`restore_variables`), never the optimizer state. Arrays are written by tensorstore with
JSON metadata; nothing here uses pickle.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Optional, Sequence

import jax
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from deeplab_jax.errors import CheckpointError, ConfigError, MissingFileError
from deeplab_jax.models.resnet import UNITS_PER_BLOCK
from deeplab_jax.training import freeze
from deeplab_jax.training.step import all_finite

PyTree = Any
BEST_METRIC = "miou"  # what `keep_best` ranks checkpoints by (higher is better)
STATE_ITEM, RUN_ITEM = "state", "run"  # the two items of a step (module docstring)
MAX_LISTED_DIFFERENCES = 8


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose tree does not fit the config's model; the message says how."""


class NonFiniteStateError(FloatingPointError):
    """A state with NaN or infinite values, refused by `save`."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, *, max_to_keep: int = 3, keep_best: int = 0,
                   read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of `workdir/checkpoints` (items `state` and `run`).

    Args:
      workdir: the run's folder (made absolute: orbax refuses relative paths).
      max_to_keep: how many of the latest steps to keep (>= 1).
      keep_best: how many steps of highest eval mIoU to keep besides them (saved with
        `metrics={'miou': ...}`); steps saved without metrics count only as latest.
      read_only: evaluation and prediction: no writes, no clean-up, no deletion.
    """
    if max_to_keep < 1:
        raise ConfigError(f"config.max_checkpoints_to_keep={max_to_keep} must be >= 1: the "
                          "latest checkpoint is what a rerun resumes from; set 1 or more.")
    policies = [checkpoint_managers.LatestN(n=max_to_keep)]
    if keep_best > 0:
        policies.append(checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[BEST_METRIC], reverse=False, n=keep_best,
            keep_checkpoints_without_metrics=False))
    if not read_only:
        _delete_unfinished_saves(checkpoint_dir(workdir))
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=not read_only,
        cleanup_tmp_directories=False,  # done above, synchronously
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies))
    # The handlers named up front: a fresh (read-only) manager can then read a step's
    # metadata before any save or restore has told it what the items are.
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=_item_handlers(ocp.StandardCheckpointHandler()))


def _item_handlers(state_handler: Any) -> dict[str, Any]:
    return {STATE_ITEM: state_handler, RUN_ITEM: ocp.JsonCheckpointHandler()}


def _delete_unfinished_saves(directory: str) -> None:
    """Deletes the temporary folders of saves a killed run left, before anything else runs.

    orbax's own clean-up (`cleanup_tmp_directories`) runs in a background thread that only
    a later save waits for; doing it here, synchronously on process 0 while the others
    wait, means a run always starts from a folder holding complete steps only.
    """
    if jax.process_index() == 0 and os.path.isdir(directory):
        for temporary in ocp.utils.tmp_checkpoints(directory):
            path = str(temporary.get())
            logging.warning("Deleting %s: a save that a killed run did not finish.", path)
            shutil.rmtree(path)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("deeplab_jax: unfinished saves deleted")


_all_finite = jax.jit(all_finite)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         metrics: Optional[dict[str, float]] = None,
         run: Optional[dict[str, Any]] = None) -> None:
    """Starts an asynchronous save of `state` at `step` (`manager.wait_until_finished` ends it).

    Args:
      metrics: {'miou': ...} for `keep_best` retention.
      run: the JSON record saved beside the state (module docstring).

    Raises:
      NonFiniteStateError: `state` holds a NaN or an infinity (nothing is written).
      CheckpointError: `step` is not after the latest saved step (two runs in one workdir).
    """
    if not bool(_all_finite(state)):
        raise NonFiniteStateError(
            f"Refusing to save step {step}: the train state holds NaN or infinite values. "
            f"The latest checkpoint ({manager.latest_step()}) is left as it is.")
    latest = manager.latest_step()
    if latest is not None and step <= latest:
        raise CheckpointError(f"Cannot save step {step}: {manager.directory} already holds "
                              f"step {latest}. A run's steps only go forward: is another run "
                              "writing to this --workdir? Give each run its own --workdir (a "
                              "new one starts over).")
    items = {STATE_ITEM: ocp.args.StandardSave(state),
             RUN_ITEM: ocp.args.JsonSave(dict(run or {}))}
    saved = manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    if not saved:
        raise RuntimeError(f"orbax declined to save step {step} in {manager.directory}.")


def _describe_leaf(leaf: Any) -> str:
    return f"{tuple(leaf.shape)} {jax.numpy.dtype(leaf.dtype).name}"


def _num_units(shapes: dict[str, Any]) -> Optional[tuple[int, ...]]:
    """Residual units per backbone block from parameter paths ('params/backbone/block2/unit03/...')."""
    units: dict[int, set[str]] = {}
    for path in shapes:
        parts = path.split("/")
        if len(parts) > 3 and parts[:2] == ["params", "backbone"] and parts[2].startswith("block"):
            units.setdefault(int(parts[2][len("block"):]), set()).add(parts[3])
    return tuple(len(units[block]) for block in sorted(units)) if units else None


def _model_summary(shapes: dict[str, Any]) -> dict[str, Any]:
    summary = {}
    logits = shapes.get("params/logits/kernel")
    if logits is not None:
        summary["class count"] = logits.shape[-1]
    units = _num_units(shapes)
    if units is not None:  # block1-4 give the depth; block5-7 are the cascade's copies
        depth = {tuple(v): k for k, v in UNITS_PER_BLOCK.items()}.get(units[:4])
        summary["depth"] = depth if depth is not None else f"units per block {units[:4]}"
        summary["cascaded blocks"] = len(units) - 4
    root = shapes.get("params/backbone/root_conv/kernel")
    if root is not None:
        summary["width"] = root.shape[-1]
    return summary


def _flat(tree: PyTree) -> dict[str, Any]:
    """{'params/backbone/root_conv/kernel': leaf, ...} of any pytree (dicts, TrainState)."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def tree_differences(saved: PyTree, target: PyTree) -> list[str]:
    """Lines naming every leaf whose shape or dtype differs, or that only one tree has."""
    saved, target = _flat(saved), _flat(target)
    lines = []
    order = {"params": 0, "batch_stats": 1}  # the model's own arrays first, then the rest
    for path in sorted(saved.keys() | target.keys(),
                       key=lambda path: (order.get(path.split("/")[0], 2), path)):
        if path not in target:
            lines.append(f"{path}: saved {_describe_leaf(saved[path])}, not in this config")
        elif path not in saved:
            lines.append(f"{path}: not in the checkpoint, config {_describe_leaf(target[path])}")
        elif (tuple(saved[path].shape) != tuple(target[path].shape)
              or jax.numpy.dtype(saved[path].dtype) != jax.numpy.dtype(target[path].dtype)):
            lines.append(f"{path}: saved {_describe_leaf(saved[path])}, "
                         f"config {_describe_leaf(target[path])}")
    return lines


def mismatch_message(directory: Any, step: int, saved: PyTree, target: PyTree) -> Optional[str]:
    """Why the checkpoint tree `saved` cannot restore into `target`, or None if it can."""
    differences = tree_differences(saved, target)
    if not differences:
        return None
    saved_model, config_model = _model_summary(_flat(saved)), _model_summary(_flat(target))
    summary = [f"{key}: saved {saved_model[key]}, config {config_model[key]}"
               for key in saved_model if key in config_model
               and saved_model[key] != config_model[key]]
    listed = differences[:MAX_LISTED_DIFFERENCES]
    if len(differences) > len(listed):
        listed.append(f"... and {len(differences) - len(listed)} more")
    return (f"The checkpoint at step {step} in {directory} does not fit this config's model "
            f"({'; '.join(summary) if summary else 'the parameter trees differ'}). "
            f"{len(differences)} arrays differ:\n  " + "\n  ".join(listed) +
            "\nUse a --workdir of this config's own runs (or a new one). To start a new model "
            "from another run's weights, see config.init_from.")


def _saved_items(manager: ocp.CheckpointManager, step: int) -> Any:
    try:
        return manager.item_metadata(step)
    except Exception as error:  # pylint: disable=broad-except
        logging.warning("Could not read the metadata of step %d (%s); restoring anyway.",
                        step, error)
        return None


def _check_fits(manager: ocp.CheckpointManager, step: int, saved_items: Any,
                abstract: PyTree, model_name: Optional[str]) -> None:
    """Raises CheckpointMismatchError, before anything is read, if `abstract` cannot take it."""
    saved_model = read_run_record(manager, step, saved_items).get("model")
    if model_name and saved_model and saved_model != model_name:
        raise CheckpointMismatchError(
            f"The checkpoint at step {step} in {manager.directory} is of model {saved_model!r}, "
            f"but this config's model is {model_name!r} (config.model.architecture). Use a "
            "--workdir of this model's own runs (or a new one).")
    saved = saved_items.get(STATE_ITEM) if saved_items is not None else None
    if saved is not None:
        if isinstance(abstract, dict):  # perhaps a part of the state: compare that part
            saved = {key: saved[key] for key in abstract if key in saved.keys()}
        message = mismatch_message(manager.directory, step, saved, abstract)
        if message:
            raise CheckpointMismatchError(message)


def read_run_record(manager: ocp.CheckpointManager, step: int,
                    saved_items: Any = None) -> dict[str, Any]:
    """The `run` record of `step` ({} for checkpoints written before it existed)."""
    saved_items = saved_items if saved_items is not None else _saved_items(manager, step)
    if saved_items is None or RUN_ITEM not in saved_items.keys():
        return {}
    restored = manager.restore(step, args=ocp.args.Composite(**{RUN_ITEM: ocp.args.JsonRestore()}))
    return dict(restored[RUN_ITEM] or {})


def restore(manager: ocp.CheckpointManager, state: PyTree, step: Optional[int] = None, *,
            model_name: Optional[str] = None,
            ) -> tuple[PyTree, Optional[int], dict[str, Any]]:
    """Restores `step` (default: the latest) with `state`'s structure, shapes and shardings.

    The shardings are those of `state` whatever the device count the checkpoint was
    written with.

    Returns:
      (restored state, step, run record), or (state unchanged, None, {}) when there is no
      checkpoint.

    Raises:
      CheckpointMismatchError: the saved model or tree differs from `model_name` or
        `state`'s, naming them.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return state, None, {}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    saved_items = _saved_items(manager, step)
    _check_fits(manager, step, saved_items, abstract, model_name)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract)}))
    except (ValueError, KeyError) as error:
        raise CheckpointMismatchError(
            f"The checkpoint at step {step} in {manager.directory} does not fit this "
            f"config's model (different depth, width or class count?): {error}. Use a "
            "--workdir of this config's own runs (or a new one).") from error
    return restored[STATE_ITEM], step, read_run_record(manager, step, saved_items)


def restore_variables(workdir: str, variables: PyTree, step: Optional[int] = None, *,
                      model_name: Optional[str] = None,
                      fresh: Sequence[str] = ()) -> tuple[PyTree, int]:
    """The parameters and BN statistics of `workdir`'s checkpoint at `step` (default: latest).

    Only {'params', 'batch_stats'} are read: the optimizer state, which evaluation,
    prediction, export and `init_from` never use, stays on disk.

    Args:
      variables: {'params', 'batch_stats'} arrays or `jax.ShapeDtypeStruct`s (with the
        shardings to restore onto).
      fresh: glob patterns (`training/freeze.py`) of the arrays the checkpoint may lack,
        e.g. the new part of a staged model: those are returned from `variables` as given
        (pass arrays, not shapes), the rest restored; the saved model's name is not checked.

    Raises:
      MissingFileError (a FileNotFoundError): no complete checkpoint; CheckpointError (a
      ValueError): no checkpoint at `step`; CheckpointMismatchError: as `restore`.
    """
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise MissingFileError(f"No checkpoint in {directory}: train first, or point --workdir "
                               "(or config.init_from) at the folder of a trained run.")
    abstract = {key: jax.tree.map(ocp.utils.to_shape_dtype_struct, variables[key])
                for key in ("params", "batch_stats")}
    options = ocp.CheckpointManagerOptions(read_only=True)
    # PyTreeCheckpointHandler reads the same files as StandardCheckpointHandler and can
    # restore a part of the tree (`partial_restore`).
    with ocp.CheckpointManager(directory, options=options,
                               item_handlers=_item_handlers(ocp.PyTreeCheckpointHandler())
                               ) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise MissingFileError(f"No complete checkpoint in {directory} (a run stopped "
                                   "before its first save leaves none): train first, or point "
                                   "--workdir (or config.init_from) at the folder of a trained "
                                   "run.")
        if step is not None and step not in steps:
            raise CheckpointError(f"No checkpoint at step {step} in {directory}; there are "
                                  f"steps {steps}: pass one of them as --step, or leave --step "
                                  "out for the latest.")
        step = steps[-1] if step is None else step
        saved_items = _saved_items(manager, step)
        if fresh:
            target = _part_in_checkpoint(manager.directory, step, saved_items, abstract, fresh)
        else:
            target = abstract
            _check_fits(manager, step, saved_items, abstract, model_name)
        restored = manager.restore(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.PyTreeRestore(
                target, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target))}))
    if not fresh:
        return restored[STATE_ITEM], step
    merged = {**_flat(variables), **_flat(restored[STATE_ITEM])}
    return traverse_util.unflatten_dict({tuple(path.split("/")): leaf
                                         for path, leaf in merged.items()}), step


def _part_in_checkpoint(directory: Any, step: int, saved_items: Any, abstract: PyTree,
                        fresh: Sequence[str]) -> PyTree:
    """The part of `abstract` the checkpoint has; raises if it lacks anything but `fresh`,
    has arrays the model does not, or differs in a shape."""
    saved = saved_items.get(STATE_ITEM) if saved_items is not None else None
    if saved is None:
        raise CheckpointError(f"The checkpoint at step {step} in {directory} has no readable "
                              "tree metadata, so a part of it cannot be restored; restore it "
                              "whole (config.init_from_fresh=()).")
    saved = _flat({key: saved[key] for key in abstract if key in saved.keys()})
    target = _flat(abstract)
    unexpected = [f"{path}: not in the checkpoint, and config.init_from_fresh does not name "
                  "it" for path in target if path not in saved
                  and not freeze.matches(path.split("/", 1)[1], fresh)]
    lines = unexpected + [line for line in tree_differences(saved, target)
                          if "not in the checkpoint" not in line]
    if lines:
        listed = lines[:MAX_LISTED_DIFFERENCES] + (
            [f"... and {len(lines) - MAX_LISTED_DIFFERENCES} more"]
            if len(lines) > MAX_LISTED_DIFFERENCES else [])
        raise CheckpointMismatchError(
            f"The checkpoint at step {step} in {directory} cannot start this model's "
            f"stage:\n  " + "\n  ".join(listed) + "\nThe previous stage's parameters must "
            "keep their names and shapes; name the new ones in config.init_from_fresh "
            "(patterns such as 'context/*').")
    return traverse_util.unflatten_dict({tuple(path.split("/")): leaf
                                         for path, leaf in target.items() if path in saved})
