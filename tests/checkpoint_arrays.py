"""Test helper: a saved checkpoint's arrays as numpy, whatever devices wrote it."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def load_checkpoint_arrays(workdir, step):
    """The `state` item of `workdir`'s checkpoint `step`, every array as np.ndarray."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    return checkpointer.restore(path, restore_args=restore_args)
