"""A trained model restored for inference: its module, variables and class descriptions.

Nothing is trained or initialised: the variables' shapes come from `jax.eval_shape`, only
the parameters and BN statistics are read from the checkpoint (never the optimizer state),
and no dataset is generated or loaded (`datasets.dataset_info`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from deeplab_jax import config_lib
from deeplab_jax.data import datasets
from deeplab_jax.models import get_model
from deeplab_jax.training import checkpoint
from deeplab_jax.training import step as step_lib

PyTree = Any


@dataclasses.dataclass
class RestoredModel:
    """A checkpoint's model at the evaluation output stride, with what describes its classes."""

    model: Any  # flax module: [B, H, W, 3] pixels in [0, 255] -> float32 logits
    variables: PyTree  # {'params', 'batch_stats'}
    config: ml_collections.ConfigDict  # resolved
    step: int
    class_names: tuple[str, ...]
    palette: np.ndarray  # uint8 [256, 3]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def restore_model(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None) -> RestoredModel:
    """Restores the checkpoint at `step` (default: the latest) of `workdir` onto one device.

    Raises:
      FileNotFoundError: `workdir` holds no (complete) checkpoint.
      ValueError: `step` is not one of its checkpoints, or the checkpoint does not fit the
        config's model.
    """
    config = config_lib.resolve_config(config)
    info = datasets.dataset_info(config.data)
    abstract = step_lib.abstract_train_state(
        config, get_model(config.model, info["num_classes"]),
        jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    variables, restored_step = checkpoint.restore_variables(
        os.path.expanduser(workdir), step_lib.model_variables(abstract), step,
        model_name=config.model.architecture)
    model = get_model(config_lib.eval_model_config(config), info["num_classes"])
    return RestoredModel(model=model, variables=variables, config=config,
                         step=int(restored_step), class_names=tuple(info["class_names"]),
                         palette=info["palette"])
