"""Preemption: a SIGTERM ends a run with a checkpoint at the current step, on every process.

The training loop asks `Watcher.reached(step)` once per step, with the number of completed
steps, and on True saves a checkpoint at that step, waits for it and stops
(`deeplab_jax.train.train_and_evaluate` raises `Preempted`; the command line exits with
`EXIT_PREEMPTED`). Rerunning the same command resumes from that checkpoint.

- One process (no `jax.distributed`): a SIGTERM handler sets a flag; the step that is
  running when it arrives finishes and is saved.
- Several processes (`jax.distributed.initialize` was called): JAX's preemption service
  owns SIGTERM (its C++ handler is installed by `jax.distributed.initialize`; installing a
  Python handler on top would cut it out). A notice on any process reaches all of them,
  and `jax.experimental.multihost_utils.reached_preemption_sync_point(step)` turns True on
  every process at the same step (the largest step any process had reported, plus one),
  so all of them save the same step. It must be called at every step with the same step
  numbers on every process, which the loop does.

A SIGTERM that arrives during an evaluation is acted on after it: the evaluation runs to
its end, its results are written, then the next training step is saved and the run stops
(tests/test_faults.py sends one mid-evaluation). One that arrives after the last step (in
the final evaluation, or while a finished run is re-evaluated) stops the run with
`Preempted` once its results are written, so an experiment runner that trains one run
after another stops as well instead of going on to the next.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

import jax
from jax.experimental import multihost_utils

from deeplab_jax.errors import EXIT_PREEMPTED, Preempted  # pylint: disable=unused-import


class Watcher:
    """Answers "stop and save at this step?" once per step. Use as a context manager.

    Single process: installs a SIGTERM handler (restored on exit). Under `jax.distributed`:
    asks JAX's preemption sync point, so every process stops at the same step.
    """

    def __init__(self):
        self._requested = threading.Event()
        self._previous_handler = None
        self._installed = False
        self.mode = "none"

    def __enter__(self) -> "Watcher":
        if jax.distributed.is_initialized():
            if jax.config.jax_enable_preemption_service:  # read when initialize() ran
                self.mode = "jax"
            else:  # jax_enable_preemption_service=False
                logging.warning(
                    "JAX's preemption service is off: under jax.distributed a SIGTERM then "
                    "ends the process without a checkpoint; a rerun resumes from the last "
                    "periodic checkpoint.")
            return self
        if threading.current_thread() is not threading.main_thread():
            logging.warning("Not on the main thread: no SIGTERM handler, so a SIGTERM ends "
                            "the run without a preemption checkpoint.")
            return self
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True
        self.mode = "signal"
        return self

    def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
        if not self._requested.is_set():
            logging.warning("SIGTERM received: saving a checkpoint at the end of the current "
                            "step, then stopping.")
        self._requested.set()

    def request(self) -> None:
        """What the SIGTERM handler does (single process); for tests and embedding code."""
        self._requested.set()

    def signalled(self) -> bool:
        """Whether a SIGTERM arrived (single process; JAX's service answers only `reached`)."""
        return self.mode == "signal" and self._requested.is_set()

    def reached(self, step: int) -> bool:
        """True when the loop must save a checkpoint at `step` (steps completed) and stop.

        Call it at every step, with increasing steps, on every process.
        """
        if self.mode == "jax":
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self._requested.is_set()

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous_handler
                          if self._previous_handler is not None else signal.SIG_DFL)
            self._installed = False


def maybe_initialize_distributed(coordinator_address: Optional[str],
                                 num_processes: Optional[int], process_id: Optional[int], *,
                                 auto_detect: bool = False,
                                 heartbeat_timeout_seconds: int = 100) -> bool:
    """Calls `jax.distributed.initialize` when any of the arguments asks for it.

    Args:
      coordinator_address: 'host:port' of process 0's coordination service.
      num_processes, process_id: this job's process count and this process's index.
      auto_detect: initialise even with none of the above, letting JAX detect them (SLURM,
        Open MPI, TPU pods, or the JAX_COORDINATOR_ADDRESS environment variable).
      heartbeat_timeout_seconds: how long a process may go silent before the others abort
        (a SIGKILLed peer makes the survivors exit after about this long instead of hanging).

    Returns:
      Whether jax.distributed was initialised.
    """
    if not (auto_detect or coordinator_address or num_processes is not None
            or process_id is not None):
        return False
    # Cross-process collectives on CPU go through gloo over TCP (the default of jax 0.10.2,
    # set explicitly for older releases whose default was none).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    logging.info("jax.distributed: process %d of %d (coordinator %s).", jax.process_index(),
                 jax.process_count(), coordinator_address or "auto-detected")
    return True
