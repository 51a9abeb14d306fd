"""Tests for deeplab_jax.reporting.curves: scalars read back from event files, resumes, the picture."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeplab_jax.reporting import curves
from deeplab_jax.reporting.writer import MetricWriter

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(logdir, start_step, losses, mious=(), legacy_marker=False):
    """One process start: the marker train.py writes, then losses and evaluations.

    `legacy_marker`: the scalar that marked a start before SessionLog.START was used.
    """
    with MetricWriter(str(logdir)) as writer:
        if legacy_marker:
            writer.write_scalars(start_step, {curves.LEGACY_START_TAG: start_step}, log=False)
        else:
            writer.write_session_start(start_step)
        writer.write_text(start_step, "config", "ignored: not a scalar")
        for step, loss in losses:
            writer.write_scalars(step, {curves.LOSS_TAG: loss})
        for step, miou in mious:
            writer.write_scalars(step, {curves.MIOU_TAG: miou})


def test_scalars_round_trip(tmp_path):
    _start(tmp_path, 0, [(10, 2.0), (20, 1.5)], [(20, 0.25)])
    scalars = curves.read_scalars(str(tmp_path))
    assert scalars[curves.LOSS_TAG] == {10: 2.0, 20: 1.5}
    assert scalars[curves.MIOU_TAG] == {20: 0.25}
    assert curves.LEGACY_START_TAG not in scalars  # a start marker is not a chart


def test_a_resume_drops_what_the_killed_start_logged_after_its_checkpoint(tmp_path):
    # First start: logged to step 50, evaluated at 20 and 40, killed; the checkpoint was 30.
    _start(tmp_path, 0, [(10, 5.0), (20, 4.0), (30, 3.0), (40, 99.0), (50, 98.0)],
           [(20, 0.125), (40, 0.875)])
    # Second start, from 30, logs every 15 steps: 45 is new, 40 and 50 are gone for good.
    _start(tmp_path, 30, [(45, 2.0), (60, 1.0)], [(60, 0.5)])
    scalars = curves.read_scalars(str(tmp_path))
    assert scalars[curves.LOSS_TAG] == {10: 5.0, 20: 4.0, 30: 3.0, 45: 2.0, 60: 1.0}
    assert scalars[curves.MIOU_TAG] == {20: 0.125, 60: 0.5}


def test_starts_marked_the_old_way_are_read_the_same(tmp_path):
    _start(tmp_path, 0, [(10, 5.0), (20, 4.0), (30, 3.0), (40, 99.0)], legacy_marker=True)
    _start(tmp_path, 30, [(45, 2.0)], legacy_marker=True)
    scalars = curves.read_scalars(str(tmp_path))
    assert scalars[curves.LOSS_TAG] == {10: 5.0, 20: 4.0, 30: 3.0, 45: 2.0}
    assert curves.LEGACY_START_TAG not in scalars


def test_a_point_logged_again_replaces_the_earlier_one(tmp_path):
    _start(tmp_path, 0, [(10, 5.0), (20, 4.0)])
    _start(tmp_path, 10, [(20, 3.5)])
    assert curves.read_scalars(str(tmp_path))[curves.LOSS_TAG] == {10: 5.0, 20: 3.5}


def test_evaluation_only_runs_are_not_points_of_the_training_curve(tmp_path):
    _start(tmp_path, 0, [(10, 2.0), (20, 1.5)], [(20, 0.25)])
    with MetricWriter(str(tmp_path)) as writer:  # --mode=eval at another stride: no marker
        writer.write_scalars(20, {curves.MIOU_TAG: 0.75})
    assert curves.read_scalars(str(tmp_path))[curves.MIOU_TAG] == {20: 0.25}
    # A workdir from before the marker existed: every file counts.
    for name in os.listdir(tmp_path):
        os.remove(os.path.join(tmp_path, name))
    with MetricWriter(str(tmp_path)) as writer:
        writer.write_scalars(20, {curves.MIOU_TAG: 0.5})
    assert curves.read_scalars(str(tmp_path))[curves.MIOU_TAG] == {20: 0.5}


def test_a_truncated_or_corrupt_last_record_is_ignored(tmp_path, caplog):
    _start(tmp_path, 0, [(10, 2.0), (20, 1.5)])
    (path,) = [os.path.join(tmp_path, name) for name in os.listdir(tmp_path)]
    intact = open(path, "rb").read()
    with open(path, "ab") as file:  # a kill in the middle of the next record
        file.write(intact[-20:-3])
    assert curves.read_scalars(str(tmp_path))[curves.LOSS_TAG] == {10: 2.0, 20: 1.5}
    assert "truncated" in caplog.text or "corrupt" in caplog.text
    # A flipped byte inside the last record's data: that record and nothing before it goes.
    damaged = bytearray(intact)
    damaged[-6] ^= 0xFF
    with open(path, "wb") as file:
        file.write(bytes(damaged))
    assert curves.read_scalars(str(tmp_path))[curves.LOSS_TAG] == {10: 2.0}


def test_no_event_file_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        curves.read_scalars(str(tmp_path))


def test_the_picture_is_written_with_and_without_evaluations(tmp_path):
    logdir = tmp_path / "run" / "tensorboard"
    _start(logdir, 0, [(step, 3.0 / step) for step in range(1, 40)], [(20, 0.3), (39, 0.45)])
    path = curves.write_training_curve(str(tmp_path / "run"))
    assert path == str(tmp_path / "run" / curves.CURVE_FILE)
    picture = np.asarray(Image.open(path))
    assert picture.shape[0] > 200 and picture.shape[1] > 2 * picture.shape[0] // 2
    assert picture.std() > 10  # something is drawn
    other = str(tmp_path / "loss_only.png")
    curves.plot_training_curve(other, {curves.LOSS_TAG: {1: 1.0, 2: 0.5}})
    assert os.path.getsize(other) > 1000


def test_command_line(tmp_path):
    _start(tmp_path / "run" / "tensorboard", 0, [(1, 1.0), (2, 0.5)], [(2, 0.3)])
    output = str(tmp_path / "curve.png")
    completed = subprocess.run(
        [sys.executable, "-m", "deeplab_jax.curves", f"--workdir={tmp_path / 'run'}",
         f"--output={output}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == output and os.path.exists(output)


@pytest.mark.parametrize("mious, accuracies", [
    # The embedded default's shape: mIoU climbing to 0.94 under a pixel accuracy near 0.99.
    ([(step, 0.94 * (1 - np.exp(-step / 600))) for step in range(250, 2501, 250)],
     [(step, 0.99 - 0.3 * np.exp(-step / 400)) for step in range(250, 2501, 250)]),
    # Low and falling: the corner the legend used to take.
    ([(100, 0.12), (200, 0.08), (300, 0.05)], [(100, 0.5), (200, 0.3), (300, 0.1)]),
], ids=["rising_under_accuracy", "low_and_falling"])
def test_the_last_value_label_overlaps_neither_the_curves_nor_the_legend(mious, accuracies):
    scalars = {curves.LOSS_TAG: {step: 1.0 / step for step, _ in mious},
               curves.MIOU_TAG: dict(mious), curves.PIXEL_ACCURACY_TAG: dict(accuracies)}
    figure = curves.training_curve_figure(scalars)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(figure)  # how save_figure renders it
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = figure.axes[1]
    (label,) = axes.texts
    assert label.get_text() == f"{mious[-1][1]:.4f}"
    box = label.get_window_extent(renderer)
    legend = axes.get_legend().get_window_extent(renderer)
    assert not box.overlaps(legend)
    for line in axes.lines:  # every vertex and every segment between them, in pixels
        points = line.get_transform().transform(np.asarray(line.get_xydata()))
        for start, end in zip(points[:-1], points[1:]):
            for t in np.linspace(0, 1, 50):
                assert not box.contains(*(start + t * (end - start))), line.get_label()
        for point in points:
            assert not legend.contains(*point), line.get_label()
