"""Training curves: loss and validation mIoU against steps, read back from the event files.

    python -m deeplab_jax.curves --workdir=/tmp/deeplab_camvid   # -> WORKDIR/training_curve.png

The training loop writes this picture after every evaluation (`deeplab_jax/train.py`), so a
finished run has it; this command redraws it for any workdir, including one trained before
it existed.

The numbers come from the TensorBoard event files in WORKDIR/tensorboard, the record the run
already keeps (`writer.py`), read with tensorboard's own record reader (no TensorFlow). A
resumed run has one event file per process start, and each start marks the step it resumed
from with TensorBoard's `SessionLog.START`: the points an earlier start logged after that
step belong to work the checkpoint threw away, so they are dropped (as TensorBoard does),
and the curve shows exactly the steps that led to the final weights. Event files without a
start (`--mode=eval` runs) are left out. Runs written before `SessionLog.START` was used
marked their starts with the scalar `run/start_step`; it is read the same way.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Optional, Sequence

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

from deeplab_jax.errors import MissingFileError
from deeplab_jax.reporting.figures import save_figure

logger = logging.getLogger(__name__)

LEGACY_START_TAG = "run/start_step"  # the start marker of runs from before SessionLog.START
LOSS_TAG = "train/loss"
LEARNING_RATE_TAG = "train/learning_rate"
MIOU_TAG = "eval/miou"
PIXEL_ACCURACY_TAG = "eval/pixel_accuracy"
CURVE_FILE = "training_curve.png"

Scalars = dict[str, dict[int, float]]  # tag -> step -> value


def read_events(path: str) -> list[event_pb2.Event]:
    """The events of one event file, up to the first incomplete or corrupt record.

    A process killed mid-write leaves a partial last record; reading stops there with a
    warning instead of failing, since everything before it is intact (each record carries
    its own checksums).
    """
    reader = PyRecordReader_New(path)
    events = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return events
        except errors.DataLossError as error:
            logger.warning("%s: %s; reading stops there.", path, error.message)
            return events
        events.append(event_pb2.Event.FromString(reader.record()))


def _start_step(event: event_pb2.Event) -> Optional[int]:
    """The step a training start marked with this event, or None."""
    if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        return int(event.step)
    if any(value.tag == LEGACY_START_TAG for value in event.summary.value):
        return int(event.step)
    return None


def read_scalars(logdir: str) -> Scalars:
    """Every scalar in `logdir`'s event files, resumes resolved (see the module docstring).

    Events are replayed in the order they were written; a point logged again at the same
    step replaces the earlier one.
    """
    paths = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not paths:
        raise MissingFileError(
            f"No TensorBoard event file (events.out.tfevents.*) in {logdir}: point --workdir "
            "at a training run's folder (it holds tensorboard/).")
    # Files in the order their runs started (each file's first event, its version record);
    # within a file, records are in the order they were written.
    files = []
    for path in paths:
        events = read_events(path)
        if events:
            files.append((events[0].wall_time, path, events))
    files.sort(key=lambda item: item[:2])
    # Training starts mark themselves; an evaluation-only run (`--mode=eval`, perhaps at
    # another output stride) does not, and its numbers are not points of this training.
    training = [item for item in files
                if any(_start_step(event) is not None for event in item[2])]
    scalars: Scalars = {}
    for _, _, events in training or files:
        for event in events:
            start = _start_step(event)
            if start is not None:  # a (re)start: what was logged after it was not kept
                for points in scalars.values():
                    for step in [s for s in points if s > start]:
                        del points[step]
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value" and value.tag != LEGACY_START_TAG:
                    scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    return scalars


LEGEND_BAND_TOP = 1.16  # the validation panel's y-axis ends here: the legend's band > 1


def plot_training_curve(path: str, scalars: Scalars, title: Optional[str] = None) -> None:
    """Writes `training_curve_figure` to `path` (PNG)."""
    save_figure(training_curve_figure(scalars, title), path)


def training_curve_figure(scalars: Scalars, title: Optional[str] = None):
    """Two panels: training loss (and the learning rate) | validation mIoU (and pixel acc.).

    Nothing is drawn over the curves: the last mIoU's label sits to the right of its point,
    in a margin past the last step, and the legend in a band above 1.0, which neither metric
    can reach."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12.0, 4.2), layout="constrained")
    loss_axes, eval_axes = figure.subplots(1, 2)

    loss = sorted(scalars.get(LOSS_TAG, {}).items())
    if loss:
        loss_axes.plot(*zip(*loss), color="tab:blue", label="training loss")
        loss_axes.set_ylim(bottom=0)
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("cross-entropy (per labelled pixel)")
    loss_axes.set_title("Training loss" if loss else "Training loss (none logged)")
    learning_rate = sorted(scalars.get(LEARNING_RATE_TAG, {}).items())
    if learning_rate:
        lr_axes = loss_axes.twinx()
        lr_axes.plot(*zip(*learning_rate), color="tab:gray", linestyle=":",
                     label="learning rate")
        lr_axes.set_ylabel("learning rate", color="tab:gray")
        lr_axes.set_ylim(bottom=0)

    miou = sorted(scalars.get(MIOU_TAG, {}).items())
    if miou:
        eval_axes.plot(*zip(*miou), marker="o", color="tab:red", label="mIoU")
        step, value = miou[-1]
        best_step, best = max(miou, key=lambda point: point[1])
        eval_axes.annotate(f"{value:.4f}", (step, value), textcoords="offset points",
                           xytext=(7, 0), ha="left", va="center", color="tab:red")
        subtitle = f"last {value:.4f} at step {step}, best {best:.4f} at step {best_step}"
    else:
        subtitle = "no evaluation yet"
    pixel_accuracy = sorted(scalars.get(PIXEL_ACCURACY_TAG, {}).items())
    if pixel_accuracy:
        eval_axes.plot(*zip(*pixel_accuracy), marker=".", linestyle="--", color="tab:green",
                       label="pixel accuracy")
    eval_axes.set_ylim(0, LEGEND_BAND_TOP)
    eval_axes.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    eval_axes.set_xlabel("step")
    eval_axes.set_title(f"Validation: {subtitle}", fontsize=10)
    eval_axes.grid(alpha=0.3)
    if miou or pixel_accuracy:
        eval_axes.legend(loc="upper left", ncol=2, fontsize=9, frameon=False)
    # Both panels share the step range, so the evaluations line up with the loss; the margin
    # past the last step holds the last mIoU's label.
    steps = [step for points in (loss, miou) for step, _ in points]
    if steps:
        for axes in (loss_axes, eval_axes):
            axes.set_xlim(0, max(steps) * 1.14)
    if title:
        figure.suptitle(title)
    return figure


def write_training_curve(workdir: str, path: Optional[str] = None) -> str:
    """Reads WORKDIR/tensorboard and writes the curve (default WORKDIR/training_curve.png)."""
    path = path or os.path.join(workdir, CURVE_FILE)
    scalars = read_scalars(os.path.join(workdir, "tensorboard"))
    plot_training_curve(path, scalars, title=os.path.basename(os.path.normpath(workdir)))
    return path


def run_command() -> None:
    """`python -m deeplab_jax.curves --workdir=DIR [--output=PNG]`; flags defined only here."""
    from absl import app, flags  # pylint: disable=import-outside-toplevel

    from deeplab_jax import errors  # pylint: disable=import-outside-toplevel

    flags.DEFINE_string("workdir", None, "A training run's folder (the one with tensorboard/).")
    flags.DEFINE_string("output", None,
                        "Where to write the PNG (default WORKDIR/training_curve.png).")
    flags.mark_flag_as_required("workdir")

    def main(argv: Sequence[str]) -> None:
        from deeplab_jax.reporting.command_line import start_command  # pylint: disable=import-outside-toplevel
        start_command(argv)
        print(write_training_curve(flags.FLAGS.workdir, flags.FLAGS.output))

    errors.run_app(main, "python -m deeplab_jax.curves")


if __name__ == "__main__":
    run_command()
