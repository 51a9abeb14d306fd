"""DeepLabv3's cascade ablations (Tables 1-3, and cascade + ASPP) as one resuming command.

    # CPU, CamVid at a quarter of the resolution (the setting recorded in README.md):
    python -m experiments.cascade.run --setting=cpu_small --workdir=/tmp/cascade \
        --output_dir=experiments/cascade/cpu_small --tables=1,2,aspp,3 --seeds=0,1,2
    # The paper's setting (VOC train_aug, crops 513, 30K steps, ImageNet ResNet-50/101):
    python -m experiments.cascade.run --setting=full --workdir=/data/cascade \
        --output_dir=experiments/cascade/full --pretrained_dir=/data/imagenet \
        --set=data.source=folder --set=data.folder=/data/voc --tables=1,2,aspp,3

For every seed, then every model of the chosen tables (`tables.py`; a model in two tables is
trained once), it trains the model from that seed in WORKDIR/<model>/seed_<seed> (resuming
if that folder has checkpoints, so a rerun after an interruption continues and a finished
run only re-evaluates), at the model's own output stride, and evaluates it on val. After
each run it rewrites, for each table, OUTPUT_DIR/table_<name>.md and .json: the paper's
layout with our mean mIoU over the seeds done so far, its spread, each seed's value and the
95% bootstrap interval over the images (`experiments/seeds.py`), the paper's figure for the
same cell, and the differences between neighbouring cells with their intervals.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any, Sequence

from absl import flags

from deeplab_jax import errors
from deeplab_jax.data import datasets
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from experiments import seeds as seeds_lib
from experiments.baselines.run import measure
from experiments.cascade import report, settings, tables
from experiments.results_files import REPO_ROOT, commit

PROGRAM = "python -m experiments.cascade.run"


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_enum("setting", "cpu_small", sorted(settings.SETTINGS),
                      "Sizes and schedule (settings.py).", **d)
    flags.DEFINE_list("tables", list(tables.TABLES), "Tables to run: 1, 2, 3, aspp.", **d)
    flags.DEFINE_list("seeds", ["0"], "Training seeds: each model is trained once per seed.",
                      **d)
    flags.DEFINE_string("workdir", None, "Parent folder of the runs (one per model and seed).",
                        **d)
    flags.DEFINE_string("output_dir", None, "Where table_<name>.md/.json go.", **d)
    flags.DEFINE_string("camvid_dir", os.path.join(REPO_ROOT, "..", "shared", "data", "camvid"),
                        "The CamVid folder (cpu_small and tiny).", **d)
    flags.DEFINE_string("pretrained_dir", None,
                        "full: a folder with TF-slim's resnet_v2_<depth> ImageNet weights for "
                        "each depth (<name>.npz, <name>.tar.gz or <name>/).", **d)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE config overrides applied to every model "
                              "(e.g. where the data is), repeatable.", **d)
    flags.mark_flags_as_required(["workdir", "output_dir"], flag_values=fv)


def pretrained_paths(directory: str | None, setting: str) -> dict[int, str]:
    """depth -> the ImageNet checkpoint in `directory` for each depth the setting uses."""
    if not directory:
        return {}
    paths = {}
    for depth in sorted(set(settings.SETTINGS[setting]["depths"].values())):
        candidates = [os.path.join(directory, f"resnet_v2_{depth}{suffix}")
                      for suffix in (".npz", ".tar.gz", "")]
        found = [path for path in candidates if os.path.exists(path)]
        if not found:
            raise errors.MissingFileError(f"--pretrained_dir={directory}: no ImageNet weights for depth "
                             f"{depth}; expected one of {candidates} (README: 'ImageNet-"
                             "pretrained backbone' says how to get them).")
        paths[depth] = found[0]
    return paths


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    setup_logging()
    seeds = seeds_lib.parse_seeds(args.seeds)
    unknown = sorted(set(args.tables) - set(tables.TABLES))
    if unknown:
        raise errors.ConfigError(f"--tables: unknown {unknown}; the tables are "
                         f"{list(tables.TABLES)}.")
    chosen = [name for name in tables.TABLES if name in args.tables]
    overrides = settings.parse_assignments(args.set)
    if args.setting != "full":
        overrides = {"data.source": "folder", "data.folder": os.path.abspath(args.camvid_dir),
                     **overrides}
    pretrained = pretrained_paths(args.pretrained_dir, args.setting)
    cells = tables.unique_cells(chosen)
    for cell in cells:  # every model's config is checked before anything trains
        settings.cell_config(cell, args.setting, overrides=overrides, pretrained=pretrained)
    first = settings.cell_config(cells[0], args.setting, overrides=overrides)
    results = {"command": f"{PROGRAM} {shlex.join(argv)}", "setting": args.setting,
               "seeds": seeds, "overrides": {key: repr(value) for key, value in
                                             overrides.items()},
               "pretrained": pretrained, "commit": commit(), "machine": machine.describe(),
               "class_names": list(datasets.dataset_info(first.data)["class_names"]),
               "runs": []}
    start = time.time()
    for seed in seeds:
        for cell in cells:
            config = settings.cell_config(cell, args.setting, seed=seed, overrides=overrides,
                                          pretrained=pretrained)
            workdir = seeds_lib.seed_workdir(os.path.join(args.workdir, cell.key), seed)
            results["runs"].append({"key": cell.key, "seed": seed, **measure(config, workdir)})
            results["wall_seconds"] = round(time.time() - start, 1)
            for name in chosen:
                report.write(tables.TABLES[name], results, args.output_dir)
    for name in chosen:
        print(report.markdown(tables.TABLES[name], results))
    return results


if __name__ == "__main__":
    errors.run_command(lambda: main(sys.argv[1:]), PROGRAM)
