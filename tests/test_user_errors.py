"""A user's mistake reads as one line with its fix, on every command (deeplab_jax/errors.py).

Each case runs a command as a user would, in a subprocess, on a bad input, and checks the
exit status (1), that no traceback is printed, and that the last line of stderr is
`PROGRAM: error: ...` naming the fix. Most fail before anything compiles (a few seconds
each); the ones that need a trained checkpoint or a training start are marked slow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeplab_jax import errors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--config=configs/tiny.py"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key != errors.VERBOSE_ENVIRONMENT}
    environment.update({"JAX_PLATFORMS": "cpu", **(env or {})})
    environment["XLA_FLAGS"] = environment.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "").strip()
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env=environment)


def assert_one_line_with_fix(completed: subprocess.CompletedProcess, program: str,
                             *fixes: str) -> str:
    assert completed.returncode == errors.EXIT_USER_ERROR, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m {program}: error: "), last
    for fix in fixes:
        assert fix in last, (fix, last)
    assert last.endswith(f"(add {errors.VERBOSE_FLAG} for the traceback)")
    return last


def _membrane_folder(root) -> str:
    """The ISBI 2012 membrane layout a user tried: grey images, labels 0 (membrane) / 255."""
    folder = root / "membranes"
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (folder / split / sub).mkdir(parents=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8)).save(
            folder / split / "images" / "slice0.png")
        Image.fromarray((rng.random((16, 16)) > 0.5).astype(np.uint8) * 255).save(
            folder / split / "labels" / "slice0.png")
    (folder / "dataset.json").write_text(json.dumps(
        {"classes": ["membrane", "cell"], "label_values": [0, 255]}))
    return str(folder)


CASES = {
    "output stride 12": (["-m", "deeplab_jax.main", TINY, "--workdir={tmp}/run",
                          "--config.model.output_stride=12"], "deeplab_jax.main",
                         ["config.model.output_stride=12", "--config.model.output_stride=16"]),
    "batch 0": (["-m", "deeplab_jax.main", TINY, "--workdir={tmp}/run",
                 "--config.data.batch_size=0"], "deeplab_jax.main",
                ["config.data.batch_size=0", "multiple of the device count"]),
    "a typo in a field": (["-m", "deeplab_jax.main", TINY, "--workdir={tmp}/run",
                           "--config.model.dpeth=50"], "deeplab_jax.main",
                          ["--config.model.dpeth=50", 'Did you mean "depth"']),
    "a missing config file": (["-m", "deeplab_jax.main", "--config=configs/vco.py",
                               "--workdir={tmp}/run"], "deeplab_jax.main",
                              ["--config=configs/vco.py", "--config=configs/voc.py"]),
    "a workdir that is a file": (["-m", "deeplab_jax.main", TINY, "--workdir={tmp}/a_file"],
                                 "deeplab_jax.main", ["is a file", "give a folder"]),
    "eval without a checkpoint": (["-m", "deeplab_jax.main", TINY, "--workdir={tmp}/empty",
                                   "--mode=eval"], "deeplab_jax.main",
                                  ["No checkpoint", "train first"]),
    "predict without a checkpoint": (["-m", "deeplab_jax.predict", TINY,
                                      "--workdir={tmp}/empty", "--input={tmp}/photo.png",
                                      "--output={tmp}/out"], "deeplab_jax.predict",
                                     ["No checkpoint", "train first"]),
    "export without a checkpoint": (["-m", "deeplab_jax.export", TINY, "--workdir={tmp}/empty",
                                     "--output={tmp}/model.jaxexport"], "deeplab_jax.export",
                                    ["No checkpoint", "train first"]),
    "a dataset.json whose class is 255": (
        ["-m", "deeplab_jax.data.check", "--config=configs/custom.py",
         "--config.data.folder={membranes}"], "deeplab_jax.data.check",
        ["dataset.json", "values [255]", 'Add "ignore_values": []']),
    "check a missing folder": (["-m", "deeplab_jax.data.check", "--config=configs/custom.py",
                                "--config.data.folder={tmp}/nowhere"], "deeplab_jax.data.check",
                               ["nowhere", "dataset.json"]),
    "curves of a folder that is not a run": (["-m", "deeplab_jax.curves", "--workdir={tmp}"],
                                             "deeplab_jax.curves",
                                             ["No TensorBoard event file", "--workdir"]),
    "compare a missing run": (["-m", "deeplab_jax.compare", "{tmp}/run_a", "{tmp}/run_b"],
                              "deeplab_jax.compare", ["run_a", "Give a run's workdir"]),
    "compare with too few resamples": (["-m", "deeplab_jax.compare", "{tmp}/a", "{tmp}/b",
                                        "--resamples=0"], "deeplab_jax.compare",
                                       ["--resamples=0", "at least 100"]),
    "convert a missing checkpoint": (["-m", "deeplab_jax.pretrained", "convert",
                                      "{tmp}/resnet_v2_50.tar.gz", "{tmp}/out.npz",
                                      "--depth=50"], "deeplab_jax.pretrained",
                                     ["resnet_v2_50.tar.gz", "check the path"]),
    "a cascade table that does not exist": (["-m", "experiments.cascade.run", "--tables=4",
                                             "--workdir={tmp}/runs", "--output_dir={tmp}/o"],
                                            "experiments.cascade.run", ["--tables", "'aspp'"]),
    "seeds that repeat": (["-m", "experiments.baselines.run", "--workdir={tmp}/runs",
                           "--output_dir={tmp}/o", "--seeds=0,0"], "experiments.baselines.run",
                          ["--seeds=0,0", "--seeds=0,1,2"]),
    "an output-stride ablation at stride 12": (
        ["-m", "experiments.output_stride.run", TINY, "--workdir={tmp}/runs",
         "--output_dir={tmp}/o", "--train_strides=12"], "experiments.output_stride.run",
        ["12", "8, 16"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_users_mistake_is_one_line_with_its_fix(case, tmp_path):
    args, program, fixes = CASES[case]
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    values = {"tmp": str(tmp_path)}
    if any("{membranes}" in arg for arg in args):
        values["membranes"] = _membrane_folder(tmp_path)
    assert_one_line_with_fix(run(*[arg.format(**values) for arg in args]), program, *fixes)


def test_verbose_shows_the_traceback_and_the_same_line(tmp_path):
    args = ["-m", "deeplab_jax.main", TINY, f"--workdir={tmp_path}/run",
            "--config.model.output_stride=12"]
    for completed in (run(*args, errors.VERBOSE_FLAG),
                      run(*args, env={errors.VERBOSE_ENVIRONMENT: "1"})):
        assert completed.returncode == errors.EXIT_USER_ERROR
        assert "Traceback" in completed.stderr and "ConfigError" in completed.stderr
        last = completed.stderr.strip().splitlines()[-1]
        assert last.startswith("python -m deeplab_jax.main: error: config.model.output_stride")
        assert errors.VERBOSE_FLAG not in last


def test_a_bug_keeps_its_traceback():
    completed = run("-c", "from deeplab_jax import errors; "
                          "errors.run_command(lambda: {}['missing'], 'program')")
    assert completed.returncode == 1
    assert "Traceback" in completed.stderr and "KeyError: 'missing'" in completed.stderr
    assert "program: error:" not in completed.stderr


def test_a_preempted_run_stops_its_command_with_status_75_and_one_line():
    # A runner of many runs (experiments/*/run.py) stops as `deeplab_jax.main` does.
    completed = run("-c", "from deeplab_jax import errors\n"
                          "def main(): raise errors.Preempted(7)\n"
                          "errors.run_command(main, 'program')")
    assert completed.returncode == errors.EXIT_PREEMPTED == 75
    assert completed.stderr.strip() == (
        "program: Preempted: the checkpoint at step 7 is complete; run the same command "
        "again to continue from it. Exit status 75.")


def test_the_operating_systems_own_file_errors_name_the_path_and_the_fix(tmp_path):
    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "x.png"))
    assert errors.describe(missing, "p") == (
        f"p: error: No such file or directory: {tmp_path / 'x.png'}; check the path (a "
        f"relative path starts from the current folder). (add {errors.VERBOSE_FLAG} for the "
        "traceback)")
    assert isinstance(errors.ConfigError("x"), ValueError)
    assert isinstance(errors.MissingFileError("x"), FileNotFoundError)


@pytest.mark.slow  # trains a tiny model for one step first (about 30 s)
def test_a_checkpoint_of_another_model_and_a_truncated_image_are_one_line(tmp_path):
    workdir = str(tmp_path / "run")
    trained = run("-m", "deeplab_jax.main", TINY, f"--workdir={workdir}",
                  "--config.num_train_steps=1", "--config.eval_every_steps=1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    for command in ("deeplab_jax.main", "deeplab_jax.predict"):
        extra = (["--mode=eval"] if command == "deeplab_jax.main"
                 else [f"--input={tmp_path}", f"--output={tmp_path}/out"])
        assert_one_line_with_fix(
            run("-m", command, TINY, f"--workdir={workdir}", "--config.model.depth=26",
                *extra), command, "depth: saved 14, config 26", "--workdir")
    folder = _membrane_folder(tmp_path)
    (tmp_path / "membranes" / "dataset.json").write_text(json.dumps(
        {"classes": ["membrane", "cell"], "label_values": [0, 255], "ignore_values": []}))
    image = tmp_path / "membranes" / "train" / "images" / "slice0.png"
    image.write_bytes(image.read_bytes()[:60])  # truncated
    assert_one_line_with_fix(
        run("-m", "deeplab_jax.main", "--config=configs/custom.py", f"--workdir={tmp_path}/m",
            f"--config.data.folder={folder}", "--config.data.canvas_size=(17,17)",
            "--config.data.crop_size=(17,17)", "--config.model.depth=14",
            "--config.model.width=4", "--config.data.batch_size=1",
            "--config.eval.batch_size=1", "--config.num_train_steps=1"),
        "deeplab_jax.main", "slice0.png")
