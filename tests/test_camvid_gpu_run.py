"""experiments/camvid/gpu_run.sh end to end at toy size on the real CamVid (-m slow).

The script is issue 9's one-call GPU run: calibrate, train for a time budget, pack the
evidence; or, at its deadline, checkpoint and stop with status 75. Both paths run here on
CPU with a tiny model at a quarter of the resolution, so the GPU call does not find a broken
script.
"""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CAMVID = REPO_ROOT.parent / "shared/data/camvid"
TOY = ("--config.data.image_scale=0.25 --config.data.canvas_size=(97,129) "
       "--config.data.crop_size=(65,97) --config.data.batch_size=8 --config.data.num_workers=2 "
       "--config.model.depth=14 --config.model.width=8 --config.model.deeplabv3.aspp_channels=16 "
       "--config.model.multi_grid=(1,) --config.model.deeplabv3.atrous_rates=(2,4,6) "
       "--config.model.dtype=float32 --config.log_every_steps=20")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"no CamVid at {REAL_CAMVID}")]


def _run(tmp_path, budget, **env):
    out = tmp_path / "out"
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "experiments/camvid/gpu_run.sh"), str(out), str(budget)],
        env={**os.environ, "PYTHON": sys.executable, "CAMVID_DIR": str(REAL_CAMVID),
             "WORKDIR": str(tmp_path / "run"), "JAX_CACHE_DIR": str(tmp_path / "cache"),
             "EXTRA_FLAGS": TOY, "XLA_FLAGS": "", **env},
        capture_output=True, text=True, timeout=900)
    return completed, out


def test_calibrated_run_packs_the_evidence(tmp_path):
    completed, out = _run(tmp_path, budget=3, CALIBRATION_STEPS="30")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    schedule = (out / "schedule.txt").read_text()
    assert "at the calibrated rate ->" in schedule
    steps = int(schedule.split("-> ")[1].split()[0])
    assert steps >= 100 and steps % 100 == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["num_train_steps"] == steps and config["eval_every_steps"] == steps // 8
    with tarfile.open(out / "camvid_run.tgz") as archive:
        names = set(archive.getnames())
    for expected in ("run/config.json", "run/timing.json", "run/training_curve.png",
                     "run/train.log", f"run/eval/val_step{steps:08d}_os16.json"):
        assert expected in names, sorted(names)
    assert not any("checkpoints" in name for name in names)


def test_deadline_checkpoints_and_stops_with_status_75(tmp_path):
    completed, out = _run(tmp_path, budget=0, STEPS="100000", DEADLINE_S="75")
    assert completed.returncode == 75, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "stopped at the deadline with a checkpoint" in completed.stdout
    assert os.listdir(tmp_path / "run" / "checkpoints")  # the step it reached is saved
    assert (out / "camvid_run.tgz").stat().st_size > 0
