"""What the example cache (`data/memory_cache.py`) changes in training: the CPU protocol's
fastest models trained for a few hundred steps with `data.cache_mib` 0 and 256, alternately.

    python -m experiments.input_throughput.training \
        --output_dir=experiments/input_throughput/cpu_protocol [--steps=500] [--repeats=2]

Models: the baselines' DeepLabv3 OS16 row and the cascade's ResNet-50 block4 OS16 cell
(`cpu_small`, CamVid at 90x120, batch 8), whose steps are the shortest, so the host's
decoding weighs most on them. Each run's `timing.json` gives the images per second of the
steps after the first (the compilation) and the seconds the loop waited for input. Both
runs of a pair start from the same seed: the cache changes no batch (tested), only where
the host's time goes.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from typing import Sequence

from absl import flags

from deeplab_jax import errors, train
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from experiments.baselines import protocol
from experiments.cascade import settings, tables
from experiments.results_files import REPO_ROOT, commit

PROGRAM = "python -m experiments.input_throughput.training"
CACHE_SETTINGS = (0, 256)


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where training.json and training.md go.", **d)
    flags.DEFINE_string("camvid_dir", os.path.join(REPO_ROOT, "..", "shared", "data", "camvid"),
                        "The CamVid folder.", **d)
    flags.DEFINE_integer("steps", 500, "Training steps per run.", **d)
    flags.DEFINE_integer("repeats", 2, "Runs per model and cache setting, alternating.", **d)
    flags.mark_flag_as_required("output_dir", flag_values=fv)


def model_configs(camvid_dir: str, steps: int) -> dict:
    rows = {row.name: row for row in protocol.ROWS}
    cell = tables.Cell(depth=50, num_cascaded_blocks=0, output_stride=16)
    configs = {"DeepLabv3 OS16 (baselines)": protocol.row_config(rows["DeepLabv3 OS16"],
                                                                 "cpu_small"),
               "cascade block4, OS16 (ResNet-50 stand-in)": settings.cell_config(
                   cell, "cpu_small")}
    for config in configs.values():
        config.data.update(source="folder", folder=os.path.abspath(camvid_dir))
        config.num_train_steps = config.eval_every_steps = steps
        config.checkpoint_every_steps = steps
        config.log_every_steps = steps // 2
    return configs


def main(argv: Sequence[str]) -> dict:
    args = parse_flags(define_flags, argv, PROGRAM)
    setup_logging()
    runs = []
    for name, config in model_configs(args.camvid_dir, args.steps).items():
        for repeat in range(args.repeats):
            for cache_mib in CACHE_SETTINGS:
                config.data.cache_mib = cache_mib
                with tempfile.TemporaryDirectory() as workdir:
                    train.train_and_evaluate(config, workdir)
                    with open(os.path.join(workdir, "timing.json")) as file:
                        timing = json.load(file)[-1]
                runs.append({"model": name, "cache_mib": cache_mib, "repeat": repeat,
                             "images_per_second": timing["images_per_second"],
                             "input_wait_seconds": timing["input_wait_seconds"],
                             "train_seconds": timing["train_seconds"]})
                print(json.dumps(runs[-1]))
    results = {"command": f"{PROGRAM} {' '.join(argv)}", "commit": commit(),
               "machine": machine.describe(), "steps": args.steps, "runs": runs}
    lines = ["| model | cache_mib | images / s (median of runs) | input wait, s | "
             "cached / uncached |", "| --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(run["model"] for run in runs):
        speed = {}
        for cache_mib in CACHE_SETTINGS:
            mine = [run for run in runs if run["model"] == name and run["cache_mib"] == cache_mib]
            speed[cache_mib] = statistics.median(run["images_per_second"] for run in mine)
            ratio = f"{speed[cache_mib] / speed[0]:.2f}x" if cache_mib else ""
            lines.append(f"| {name} | {cache_mib} | {speed[cache_mib]:.1f} | "
                         f"{statistics.median(run['input_wait_seconds'] for run in mine):.1f}"
                         f" | {ratio} |")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "training.json"), "w") as file:
        json.dump(results, file, indent=2)
    with open(os.path.join(args.output_dir, "training.md"), "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    errors.run_command(lambda: main(sys.argv[1:]), PROGRAM)
