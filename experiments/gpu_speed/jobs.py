"""Runs one benchmark job (one framework at one setting), in a subprocess of its own.

A subprocess gives each job fresh device memory, so the peak it reports is its own, and a
crash or a timeout costs one row of the table, not the run. The job and its result travel
as JSON files:

    python -m experiments.gpu_speed.jobs JOB.json   # from the repository root
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

from experiments.gpu_speed.settings import Setting

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_here(kind: str, setting: Setting, args: Any) -> dict[str, Any]:
    """The job in this process: ours ("jax") or theirs ("torch")."""
    if kind == "jax":
        from experiments.gpu_speed import ours  # pylint: disable=import-outside-toplevel
        return ours.run(setting, args)
    from experiments.gpu_speed import theirs  # pylint: disable=import-outside-toplevel
    return theirs.run(setting, args)


def run_job(kind: str, setting: Setting, args: Any) -> dict[str, Any]:
    """Runs one job here (`args.no_subprocess`) or in a subprocess; always returns a result
    dict, with an 'error' entry when it failed."""
    started = time.perf_counter()
    name = setting.name if kind == "jax" else setting.torch_key
    if args.no_subprocess:
        try:
            result = run_here(kind, setting, args)
        except Exception as error:  # noqa: BLE001  (one failed row, not a failed run)
            result = dict(framework=kind, setting=name, error=f"{type(error).__name__}: {error}")
    else:
        result = _run_subprocess(kind, setting, name, args)
    result["job_wall_s"] = time.perf_counter() - started
    return result


def _run_subprocess(kind: str, setting: Setting, name: str, args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        job = dict(kind=kind, setting=dataclasses.asdict(setting), args=vars(args),
                   output=os.path.join(folder, "result.json"))
        job_path = os.path.join(folder, "job.json")
        with open(job_path, "w") as file:
            json.dump(job, file)
        command = [sys.executable, "-m", "experiments.gpu_speed.jobs", job_path]
        try:
            completed = subprocess.run(command, timeout=args.job_timeout_s, cwd=REPO_ROOT)
        except subprocess.TimeoutExpired:
            return dict(framework=kind, setting=name,
                        error=f"timed out after {args.job_timeout_s:.0f}s")
        if completed.returncode != 0 or not os.path.exists(job["output"]):
            return dict(framework=kind, setting=name,
                        error=f"worker exited with status {completed.returncode} (its "
                              "output is above)")
        with open(job["output"]) as file:
            return json.load(file)


if __name__ == "__main__":
    with open(sys.argv[1]) as job_file:
        job = json.load(job_file)
    result = run_here(job["kind"], Setting(**job["setting"]), types.SimpleNamespace(**job["args"]))
    with open(job["output"], "w") as result_file:
        json.dump(result, result_file)
