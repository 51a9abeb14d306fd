"""Tests for deeplab_jax.writer: event files readable by TensorBoard, log lines, no TF."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from deeplab_jax.reporting.writer import MetricWriter

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reload(logdir):
    # Imported here: the accumulator may import TensorFlow, which the module under test
    # must not, and the subprocess test below checks that in a fresh interpreter anyway.
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_event_file_round_trip(tmp_path):
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[1, 2] = (255, 0, 0)
    batch = np.stack([image, 255 - image])
    with MetricWriter(str(tmp_path)) as writer:
        writer.write_scalars(1, {"loss": np.float32(2.5), "lr": 0.1})
        writer.write_scalars(7, {"loss": np.asarray(1.25)})
        writer.write_images(7, {"panel": image, "batch": batch})
        writer.write_text(7, "config", "lr: 0.1")

    acc = _reload(tmp_path)
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [1, 7]
    assert [e.value for e in loss] == pytest.approx([2.5, 1.25])
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([0.1])

    tags = acc.Tags()
    assert set(tags["images"]) == {"panel", "batch/0", "batch/1"}
    (panel,) = acc.Images("panel")
    assert (panel.step, panel.width, panel.height) == (7, 6, 4)
    # The PNG decodes back to the pixels we wrote.
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(panel.encoded_image_string))),
                                  image)
    (second,) = acc.Images("batch/1")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(second.encoded_image_string))), 255 - image)

    (text,) = acc.Tensors("config")
    assert text.step == 7
    assert text.tensor_proto.string_val == [b"lr: 0.1"]
    assert acc.summary_metadata["config"].plugin_data.plugin_name == "text"


def test_scalars_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="deeplab_jax.reporting.writer"):
        MetricWriter(None).write_scalars(12, {"loss": np.float32(0.5), "miou": 0.123456789})
    assert "[12] loss=0.5, miou=0.123457" in caplog.text


@pytest.mark.parametrize("kwargs", [{"logdir": None},
                                    {"logdir": "SUBDIR", "write_to_tensorboard": False}])
def test_log_only_writer_writes_no_files(tmp_path, kwargs, caplog):
    if kwargs["logdir"] == "SUBDIR":
        kwargs = {**kwargs, "logdir": str(tmp_path / "logs")}
    with caplog.at_level(logging.INFO, logger="deeplab_jax.reporting.writer"):
        with MetricWriter(**kwargs) as writer:
            writer.write_scalars(0, {"loss": 1.0})
            writer.write_images(0, {"panel": np.zeros((2, 2, 3), np.uint8)})
            writer.write_text(0, "note", "hello")
    assert writer.event_file is None
    assert list(tmp_path.rglob("*")) == []
    assert "[0] loss=1" in caplog.text


def test_rejects_non_uint8_images(tmp_path):
    with MetricWriter(str(tmp_path)) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write_images(0, {"bad": np.zeros((2, 2, 3), np.float32)})


def test_no_tensorflow_import(tmp_path):
    # A fresh interpreter: this test process may already have TF loaded. Writing as well as
    # importing matters, because tensorboard's own EventFileWriter imports TF lazily on use.
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import deeplab_jax.reporting.writer, deeplab_jax.reporting.visualize
        with deeplab_jax.reporting.writer.MetricWriter({str(tmp_path)!r}) as w:
            w.write_scalars(0, {{"x": 1.0}})
            w.write_images(0, {{"im": np.zeros((2, 2, 3), np.uint8)}})
            w.write_text(0, "t", "hello")
        bad = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        assert not bad, bad
    """)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
