"""Steps the training step skipped for a non-finite loss or gradient: counted, logged, bounded.

The jitted step (`training/step.py`) skips such a step itself: parameters, optimizer state
and BN statistics stay as they were, and `metrics["skipped_steps"]` is 1. The loop hands
that flag here, and this module does the host's part: it logs each skipped step with its
examples, counts them, and stops the run after `config.max_consecutive_nonfinite_steps` in a
row. Steps are numbered as in the logs and checkpoints: step N is the N-th update.

Each flag is fetched one step late, while the device already runs the next step, so the
host never waits on the device just to count; `check` catches up before anything is
logged, saved or evaluated. The count of skips in a row is saved with every checkpoint
(`checkpoint.py`'s `run` record) and carried on by a resumed run, so a preemption in the
middle of a bad stretch does not reset the limit.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import jax
import numpy as np

from deeplab_jax.errors import UserError


class NonFiniteTrainingError(UserError, FloatingPointError):
    """Too many consecutive training steps with a non-finite loss or gradient.

    A user error: training diverged under the config's settings, and the message says what
    to change (the learning rate, the dtype, the examples of the skipped steps).
    """


class SkippedSteps:
    """Counts skipped steps; `limit` in a row raise `NonFiniteTrainingError` naming them.

    Attributes:
      total: steps skipped since this start of the run.
      consecutive: steps skipped in a row up to the last checked step (carried over from
        the checkpoint a run resumed from).
    """

    def __init__(self, limit: int, example_ids: Callable[[int], np.ndarray], *,
                 consecutive: int = 0, first: Optional[int] = None):
        self.limit = limit
        self.example_ids = example_ids  # step -> the global batch's dataset indices
        self.total = 0
        self.consecutive = consecutive
        self.first = first  # the first step of the current run of skips
        self._pending: list[tuple[int, jax.Array]] = []

    def add(self, step: int, skipped: jax.Array) -> None:
        """Queues step `step`'s flag and checks the previous step's, which is ready by now."""
        self.check()
        self._pending.append((step, skipped))

    def check(self) -> None:
        """Checks every queued flag (waits for the device if needed).

        Raises:
          NonFiniteTrainingError: after `limit` skipped steps in a row.
        """
        while self._pending:
            step, flag = self._pending.pop(0)
            self._record(step, bool(jax.device_get(flag)))

    def _record(self, step: int, skipped: bool) -> None:
        if not skipped:
            self.consecutive, self.first = 0, None
            return
        self.total += 1
        self.consecutive += 1
        self.first = step if self.first is None else self.first
        logging.warning(
            "Step %d skipped: non-finite loss or gradient; parameters, optimizer state and BN "
            "statistics unchanged (%d in a row, %d in this run). Its examples (dataset "
            "indices): %s", step, self.consecutive, self.total, self.example_ids(step).tolist())
        if self.consecutive >= self.limit:
            raise NonFiniteTrainingError(
                f"Steps {self.first}-{step}: {self.consecutive} consecutive training steps had "
                "a non-finite loss or gradient and were skipped (config."
                f"max_consecutive_nonfinite_steps={self.limit}), so training stopped. No "
                "checkpoint holds non-finite values: a rerun resumes from the latest one. "
                "Lower the learning rate (config.optim.base_learning_rate), check those steps' "
                "examples (logged above) or use --config.model.dtype=float32.")

    def record(self) -> dict[str, Optional[int]]:
        """What a checkpoint saves so that a resumed run continues the count."""
        self.check()
        return {"consecutive_nonfinite_steps": self.consecutive,
                "first_nonfinite_step": self.first}
