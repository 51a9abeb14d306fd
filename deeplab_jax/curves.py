"""Training curves: loss and validation mIoU against steps, read back from the event files.

    python -m deeplab_jax.curves --workdir=/tmp/deeplab_camvid   # -> WORKDIR/training_curve.png

The training loop writes this picture after every evaluation (`train.py`), so a finished run
has it; this command redraws it for any workdir, including one trained before it existed.

The numbers come from the TensorBoard event files in WORKDIR/tensorboard, the record the run
already keeps (`writer.py`), read here without TensorFlow: TFRecord framing (length, masked
CRC-32C, data, masked CRC-32C) around `Event` protos. A resumed run has one event file per
process start, and its first event marks the step it resumed from (`RESUMED_FROM_TAG`): the
points an earlier start logged after that step belong to work the checkpoint threw away, so
they are dropped, and the curve shows exactly the steps that led to the final weights.
Event files without that mark (`--mode=eval` runs) are left out.
"""
from __future__ import annotations

import glob
import logging
import os
import struct
from typing import Optional, Sequence

from absl import app, flags
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

logger = logging.getLogger(__name__)

RESUMED_FROM_TAG = "run/start_step"  # written by train.py at every start, at that step
LOSS_TAG = "train/loss"
LEARNING_RATE_TAG = "train/learning_rate"
MIOU_TAG = "eval/miou"
PIXEL_ACCURACY_TAG = "eval/pixel_accuracy"
CURVE_FILE = "training_curve.png"

Scalars = dict[str, dict[int, float]]  # tag -> step -> value


def read_records(path: str) -> list[bytes]:
    """The records of one TFRecord file, up to the first incomplete or corrupt one.

    A process killed mid-write leaves a partial last record; reading stops there with a
    warning instead of failing, since everything before it is intact (each record carries
    its own checksums).
    """
    records = []
    with open(path, "rb") as file:
        while True:
            header = file.read(12)
            if not header:
                break
            if len(header) < 12:
                logger.warning("%s: a truncated record header at the end; ignored.", path)
                break
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if masked_crc32c(length_bytes) != length_crc:
                logger.warning("%s: a corrupt record length at byte %d; reading stops there.",
                               path, file.tell() - 12)
                break
            (length,) = struct.unpack("<Q", length_bytes)
            data, footer = file.read(length), file.read(4)
            if len(data) < length or len(footer) < 4:
                logger.warning("%s: a truncated last record; ignored.", path)
                break
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                logger.warning("%s: a corrupt record at byte %d; reading stops there.", path,
                               file.tell() - length - 16)
                break
            records.append(data)
    return records


def read_scalars(logdir: str) -> Scalars:
    """Every scalar in `logdir`'s event files, resumes resolved (see the module docstring).

    Events are replayed in the order they were written; a point logged again at the same
    step replaces the earlier one.
    """
    paths = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not paths:
        raise FileNotFoundError(
            f"No TensorBoard event file (events.out.tfevents.*) in {logdir}: point --workdir "
            "at a training run's folder (it holds tensorboard/).")
    # Files in the order their runs started (each file's first event, its version record);
    # within a file, records are in the order they were written.
    files = []
    for path in paths:
        events = [event_pb2.Event.FromString(record) for record in read_records(path)]
        if events:
            files.append((events[0].wall_time, path, events))
    files.sort(key=lambda item: item[:2])
    # Training starts mark themselves; an evaluation-only run (`--mode=eval`, perhaps at
    # another output stride) does not, and its numbers are not points of this training.
    training = [item for item in files if any(_is_start_marker(e) for e in item[2])]
    events = [event for _, _, file_events in (training or files) for event in file_events
              if event.HasField("summary")]
    scalars: Scalars = {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") != "simple_value":
                continue
            if value.tag == RESUMED_FROM_TAG:
                # A (re)start at this step: what was logged after it was not kept.
                for points in scalars.values():
                    for step in [s for s in points if s > event.step]:
                        del points[step]
            scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    return scalars


def _is_start_marker(event: event_pb2.Event) -> bool:
    return any(value.tag == RESUMED_FROM_TAG for value in event.summary.value)


def plot_training_curve(path: str, scalars: Scalars, title: Optional[str] = None) -> None:
    """Two panels: training loss (and the learning rate) | validation mIoU (and pixel acc.)."""
    from matplotlib.figure import Figure

    from deeplab_jax.reports import save_figure

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
                           xytext=(-10, 8), ha="right")
        subtitle = f"last {value:.4f} at step {step}, best {best:.4f} at step {best_step}"
    else:
        subtitle = "no evaluation yet"
    pixel_accuracy = sorted(scalars.get(PIXEL_ACCURACY_TAG, {}).items())
    if pixel_accuracy:
        eval_axes.plot(*zip(*pixel_accuracy), marker=".", linestyle="--", color="tab:green",
                       label="pixel accuracy")
    eval_axes.set_ylim(0, 1)
    eval_axes.set_xlabel("step")
    eval_axes.set_title(f"Validation: {subtitle}", fontsize=10)
    eval_axes.grid(alpha=0.3)
    if miou or pixel_accuracy:
        eval_axes.legend(loc="lower right")
    # Both panels share the step range, so the evaluations line up with the loss.
    steps = [step for points in (loss, miou) for step, _ in points]
    if steps:
        for axes in (loss_axes, eval_axes):
            axes.set_xlim(0, max(steps) * 1.02)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)


def write_training_curve(workdir: str, path: Optional[str] = None) -> str:
    """Reads WORKDIR/tensorboard and writes the curve (default WORKDIR/training_curve.png)."""
    path = path or os.path.join(workdir, CURVE_FILE)
    scalars = read_scalars(os.path.join(workdir, "tensorboard"))
    plot_training_curve(path, scalars, title=os.path.basename(os.path.normpath(workdir)))
    return path


def main(argv: Sequence[str]) -> None:
    del argv
    print(write_training_curve(flags.FLAGS.workdir, flags.FLAGS.output))


if __name__ == "__main__":
    # Flags are defined here, not at import: train.py imports this module next to main.py's.
    flags.DEFINE_string("workdir", None, "A training run's folder (the one with tensorboard/).")
    flags.DEFINE_string("output", None,
                        "Where to write the PNG (default WORKDIR/training_curve.png).")
    flags.mark_flag_as_required("workdir")
    app.run(main)
