"""Metric writer: TensorBoard scalars, images and text, plus log lines, without TensorFlow.

This module owns how training and evaluation report numbers and pictures. clu's writers
import TensorFlow, which our GPU machine does not have, so we write TensorBoard event files
ourselves from the `tensorboard` package's pure-Python pieces (as `torch.utils.tensorboard`
does): protos from `tensorboard.compat.proto`, the TFRecord framing from
`tensorboard.summary.writer.record_writer.RecordWriter`, and PNG encoding with PIL.

We deliberately do not use `tensorboard.summary.writer.event_file_writer.EventFileWriter`:
its constructor touches `tensorboard.compat.tf`, a lazy module that imports the real
TensorFlow whenever it is installed (seconds of start-up, and a second framework grabbing
the GPU). Our writer opens a plain local file instead, so it does not support gs:// paths.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import socket
import time
from types import TracebackType
from typing import Mapping

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

logger = logging.getLogger(__name__)

_WRITER_COUNT = itertools.count()  # event files this process has opened


def _to_float(value) -> float:
    """numpy, JAX or Python scalar -> float (np.asarray pulls JAX arrays to the host)."""
    return float(np.asarray(value))


def _format_value(value: float) -> str:
    """Compact: 6 significant digits, no trailing zeros (0.5, 1.23457e-05, 3)."""
    return f"{value:.6g}"


def _encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class MetricWriter:
    """Writes scalars, images and text to TensorBoard and scalars to the log.

    Usage:
      with MetricWriter(workdir, write_to_tensorboard=jax.process_index() == 0) as w:
        w.write_scalars(step, {"loss": loss, "lr": lr})

    Every process may log; only the one with `write_to_tensorboard=True` (and a logdir)
    creates an event file, so multi-host runs do not write duplicate files.
    """

    def __init__(self, logdir: str | None, *, write_to_tensorboard: bool = True):
        """Args:
          logdir: directory for the event file (created if missing); None: log only.
          write_to_tensorboard: False: log only (pass False on non-zero JAX processes).
        """
        self._record_writer: RecordWriter | None = None
        self.event_file: str | None = None
        if logdir is None or not write_to_tensorboard:
            return
        os.makedirs(logdir, exist_ok=True)
        # The file name pattern TensorBoard globs for. Host, pid and a per-process count
        # keep writers apart (an `id()` can be reused once a writer is gone, and a second
        # writer in the same second would then overwrite the first one's file); "xb"
        # refuses to open an existing file rather than truncate it.
        self.event_file = os.path.join(
            logdir, f"events.out.tfevents.{int(time.time()):010d}."
                    f"{socket.gethostname()}.{os.getpid()}.{next(_WRITER_COUNT)}")
        self._record_writer = RecordWriter(open(self.event_file, "xb"))
        # Every event file starts with its version; readers rely on it.
        self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    # -- public API ------------------------------------------------------------------------

    def write_scalars(self, step: int, scalars: Mapping[str, float], *,
                      log: bool = True) -> None:
        """Logs `[step] name=value, ...` at INFO and writes one simple_value per scalar.

        Args:
          step: the global step.
          scalars: name -> numpy, JAX or Python scalar.
          log: False writes TensorBoard only (the caller logs its own progress line).
        """
        values = {name: _to_float(value) for name, value in scalars.items()}
        if log:
                logger.info("[%d] %s", int(step),
                        ", ".join(f"{k}={_format_value(v)}" for k, v in values.items()))
        if self._record_writer is None:
            return
        self._write_summary(step, [summary_pb2.Summary.Value(tag=name, simple_value=value)
                                   for name, value in values.items()])

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Writes PNG-encoded images.

        Args:
          step: the global step.
          images: name -> uint8 [H, W, 3] or [N, H, W, 3]; a batch with N > 1 is written
            as name/0, name/1, ... (TensorBoard shows one image per tag and step).
        """
        if self._record_writer is None:
            return
        summary_values = []
        for name, image in images.items():
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
                raise ValueError(f"image {name!r}: expected uint8 [H, W, 3] or "
                                 f"[N, H, W, 3], got {image.dtype} {image.shape}")
            if image.ndim == 3:
                tagged = [(name, image)]
            elif image.shape[0] == 1:
                tagged = [(name, image[0])]
            else:
                tagged = [(f"{name}/{i}", im) for i, im in enumerate(image)]
            for tag, im in tagged:
                encoded = summary_pb2.Summary.Image(
                    height=im.shape[0], width=im.shape[1], colorspace=3,
                    encoded_image_string=_encode_png(im))
                summary_values.append(summary_pb2.Summary.Value(tag=tag, image=encoded))
        self._write_summary(step, summary_values)

    def write_text(self, step: int, name: str, text: str) -> None:
        """Writes a text summary (rendered as Markdown by TensorBoard's text plugin).

        Built by hand because `tensorboard.plugins.text.summary.pb` imports TensorFlow to
        make its TensorProto; the result is the same: a scalar DT_STRING tensor tagged with
        the text plugin's metadata.
        """
        if self._record_writer is None:
            return
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto())  # no dims: a scalar
        value = summary_pb2.Summary.Value(
            tag=name, tensor=tensor,
            metadata=text_metadata.create_summary_metadata(display_name=name,
                                                           description=None))
        self._write_summary(step, [value])

    def write_session_start(self, step: int) -> None:
        """Marks a (re)start of training at `step` with TensorBoard's own `SessionLog.START`.

        TensorBoard drops the points an earlier start wrote past `step` (they belong to work
        the checkpoint threw away), and so does `curves.read_scalars`.
        """
        if self._record_writer is None:
            return
        self._write_event(event_pb2.Event(
            wall_time=time.time(), step=int(step),
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self.flush()

    def flush(self) -> None:
        if self._record_writer is not None:
            self._record_writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file; later writes are logged but not recorded."""
        if self._record_writer is not None:
            self._record_writer.close()
            self._record_writer = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- event file ------------------------------------------------------------------------

    def _write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        if values:
            self._write_event(event_pb2.Event(
                wall_time=time.time(), step=int(step),
                summary=summary_pb2.Summary(value=values)))
            # Flush per call so TensorBoard sees progress live; calls are infrequent.
            self.flush()

    def _write_event(self, event: event_pb2.Event) -> None:
        # Synchronous writes: a few events per logging interval do not need the writer
        # thread and queue that EventFileWriter uses.
        self._record_writer.write(event.SerializeToString())
