"""Training progress: metric sums, the log line, a clock that pauses, and `timing.json`.

As clu's `ReportProgress`: rates and the ETA count training time only. Evaluations run
inside `paused()`, so they neither slow the reported steps/s nor inflate the ETA, and the
first step, which compiles, is timed on its own. The log line also says how much of the
interval the loop spent waiting for the host's input (`waiting_for_input()`): a run whose
input cannot keep up shows it there first.

Metric sums (loss, pixels, skipped steps) stay on the device and are fetched once per
logging interval. At the end, `write_timing` appends this start's figures, with the machine
they were measured on (`reporting/machine.py`), to WORKDIR/timing.json.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import time
from typing import Any, Iterator

import jax
import ml_collections

from deeplab_jax.evaluation.outputs import write_json
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.eta import format_duration
from deeplab_jax.reporting.writer import MetricWriter

SUM_METRICS = ("loss_sum", "aux_loss_sum", "valid_pixels", "correct_pixels", "skipped_steps")
TIMING_FILE = "timing.json"


class TrainingProgress:
    """Sums a logging interval's metrics and times training, evaluation and input waits."""

    def __init__(self, config: ml_collections.ConfigDict, writer: MetricWriter,
                 start_step: int):
        self.config, self.writer, self.start_step = config, writer, start_step
        self.started = time.time()
        self.first_step_seconds = self.evaluation_seconds = self.input_seconds = 0.0
        self._sums: dict[str, Any] | None = None
        self._interval_start, self._interval_step = time.time(), start_step
        self._interval_paused = self._interval_input = 0.0

    @contextlib.contextmanager
    def waiting_for_input(self) -> Iterator[None]:
        begin = time.time()
        yield
        waited = time.time() - begin
        self._interval_input += waited
        self.input_seconds += waited

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluations) is not training time."""
        begin = time.time()
        yield
        paused = time.time() - begin
        self._interval_paused += paused
        self.evaluation_seconds += paused

    def add(self, done: int, metrics: dict[str, jax.Array]) -> None:
        """Adds step `done`'s metrics (on device); times the first step, which compiles."""
        self._sums = metrics if self._sums is None else {
            key: self._sums[key] + value if key in SUM_METRICS else value
            for key, value in metrics.items()}
        if done == self.start_step + 1:
            jax.block_until_ready(metrics)
            self.first_step_seconds = time.time() - self._interval_start
            logging.info("First step (compilation included) took %.1f s.",
                         self.first_step_seconds)
            self._interval_start, self._interval_step = time.time(), done
            self._interval_paused = self._interval_input = 0.0

    def log(self, done: int, total_skipped: int) -> None:
        """Writes the interval's scalars and one log line, then starts a new interval."""
        fetched = jax.device_get(self._sums)
        valid = max(float(fetched["valid_pixels"]), 1.0)
        scalars = {
            "train/loss": fetched["loss_sum"] / valid,
            "train/pixel_accuracy": fetched["correct_pixels"] / valid,
            "train/weight_decay_loss": fetched["weight_decay_loss"],
            "train/grad_norm": fetched["grad_norm"],
            "train/learning_rate": fetched["learning_rate"],
            "train/skipped_steps": total_skipped,
        }
        if self.config.model.get("aux_loss_weight"):
            scalars["train/aux_loss"] = fetched["aux_loss_sum"] / valid
        progress = ""
        seconds = time.time() - self._interval_start - self._interval_paused
        if done > self._interval_step and seconds > 0:  # not the compilation step alone
            steps_per_second = (done - self._interval_step) / seconds
            scalars["train/steps_per_second"] = steps_per_second
            scalars["train/images_per_second"] = steps_per_second * self.config.data.batch_size
            scalars["train/input_wait_fraction"] = self._interval_input / seconds
            eta = (self.config.num_train_steps - done) / steps_per_second
            progress = (f", {steps_per_second:.2f} steps/s, input wait "
                        f"{100 * self._interval_input / seconds:.0f}%, ETA "
                        f"{format_duration(eta)}")
        if fetched["skipped_steps"]:
            progress += (f", {int(fetched['skipped_steps'])} step(s) skipped as non-finite "
                         f"({total_skipped} in this run)")
        self.writer.write_scalars(done, scalars, log=False)
        logging.info("step %d/%d: loss %.4f, pixel accuracy %.4f, lr %.4g%s", done,
                     self.config.num_train_steps, scalars["train/loss"],
                     scalars["train/pixel_accuracy"], scalars["train/learning_rate"], progress)
        self._sums = None
        self._interval_start, self._interval_step = time.time(), done
        self._interval_paused = self._interval_input = 0.0

    def timing_record(self, end_step: int) -> dict[str, Any]:
        """This start's wall time, compile time, evaluation time and training images/s.

        Wall time runs from the start of the training loop (after building and restoring
        the state); training time is that less the first step and the evaluations;
        images/s counts the steps after the first.
        """
        wall = time.time() - self.started
        steps = end_step - self.start_step
        train_seconds = wall - self.first_step_seconds - self.evaluation_seconds
        return {
            "start_step": self.start_step, "end_step": end_step,
            "wall_seconds": round(wall, 2),
            "first_step_seconds": round(self.first_step_seconds, 2),
            "evaluation_seconds": round(self.evaluation_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "input_wait_seconds": round(self.input_seconds, 2),
            "images_per_second": (round((steps - 1) * self.config.data.batch_size
                                        / train_seconds, 1)
                                  if steps > 1 and train_seconds > 0 else None),
            "global_batch_size": self.config.data.batch_size,
            "machine": machine.describe(),
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        }

    def write_timing(self, workdir: str, end_step: int) -> str | None:
        """Appends `timing_record` to WORKDIR/timing.json (one entry per start of the run).

        A file that is not a JSON list (damaged, or not ours) is moved aside, never
        overwritten. Process 0 writes; the others return None.
        """
        if jax.process_index() != 0:
            return None
        entry = self.timing_record(end_step)
        path = os.path.join(workdir, TIMING_FILE)
        entries = []
        if os.path.exists(path):
            try:
                with open(path) as file:
                    entries = json.load(file)
                if not isinstance(entries, list):
                    raise TypeError(f"a JSON {type(entries).__name__}")
            except (ValueError, TypeError):
                entries = []
                os.replace(path, path + ".unreadable")
                logging.warning("%s is not a JSON list; moved it to %s.unreadable and started "
                                "a new one.", path, path)
        entries.append(entry)
        write_json(path, entries)
        logging.info("Trained steps %d-%d in %s wall time (%s compiling the first step, %s "
                     "evaluating, %s waiting for input) on %s: %s images/s; appended to %s.",
                     self.start_step, end_step, format_duration(entry["wall_seconds"]),
                     format_duration(self.first_step_seconds),
                     format_duration(self.evaluation_seconds),
                     format_duration(self.input_seconds), machine.summary(entry["machine"]),
                     entry["images_per_second"], path)
        return path
