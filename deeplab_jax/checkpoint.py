"""Orbax checkpoints of the train state in `workdir/checkpoints`.

Resuming is the same as re-running the command: `restore_latest` finds the newest complete
checkpoint (orbax writes to a temporary directory and renames it when complete, so a run
killed mid-save leaves no half-written step behind) and restores it onto the current state's
shardings. Saves are asynchronous; `close` waits for the last one.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

PyTree = Any


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, *, max_to_keep: int = 3,
                   read_only: bool = False) -> ocp.CheckpointManager:
    """A manager keeping the last `max_to_keep` steps of the item `state`."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state",))


def save(manager: ocp.CheckpointManager, step: int, state: PyTree) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)


def restore(manager: ocp.CheckpointManager, state: PyTree,
            step: Optional[int] = None) -> tuple[PyTree, Optional[int]]:
    """Restores `step` (default: the latest) with `state`'s structure, shapes and shardings.

    Returns:
      (restored state, step), or (state unchanged, None) when there is no checkpoint.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return state, None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"The checkpoint at step {step} in {manager.directory} does not fit this "
            f"config's model (different depth, width or class count?): {error}") from error
    return restored["state"], step


def initialize_from(other_workdir: str, state: PyTree) -> PyTree:
    """Replaces `state`'s params and BN statistics by those of `other_workdir`'s latest checkpoint.

    The step and optimizer state stay fresh: this starts a new stage of training from an
    earlier one (the paper's OS8 fine-tuning starts from the OS16 run, Sec. 4.1), whereas
    `restore` continues the same run.
    """
    manager = create_manager(other_workdir, read_only=True)
    try:
        if manager.latest_step() is None:
            raise FileNotFoundError(
                f"config.init_from={other_workdir!r}: no checkpoint in "
                f"{checkpoint_dir(other_workdir)}.")
        restored, _ = restore(manager, state)
    finally:
        manager.close()
    return state.replace(params=restored.params, batch_stats=restored.batch_stats)
