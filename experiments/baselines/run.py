"""Every model on CamVid under one protocol: train, evaluate, profile, one table, one picture.

    python -m experiments.baselines.run --setting=cpu_small --workdir=/tmp/baselines \
        --output_dir=experiments/baselines/cpu_small [--rows="DeepLabv3 OS16,PSPNet"] \
        [--seeds=0,1,2] [--only_trained]

For each seed and each row of `protocol.ROWS` (seed by seed, so an interrupted table has
every row at the first seeds) it trains `configs/camvid.py` from that seed in
WORKDIR/<row>/seed_<seed> (resuming if that folder has checkpoints, so a rerun only
re-evaluates), evaluates the final checkpoint on val (its per-image file gives the
intervals: `experiments/seeds.py`), and, once per row, profiles one training step on one
device (XLA FLOPs and memory, the median step time: `analysis/step_profile.py`) and counts
parameters and forward GFLOPs per image (every tap: `analysis/model_flops.py`). It writes,
as each run ends, `results.json` and `results.md` (the table: mean and std over seeds, each
seed's value, the 95% interval of the mean over the images, per-class IoU, which adjacent
rows the intervals separate, the command, the commit and the machine), then
`predictions.png`: the same val images predicted by every model (its first seed), beside
the truth. A CRF row (`Row.crf_of`) trains nothing: it evaluates that row's checkpoint of
each seed with the dense CRF after the network, and times the CRF per image. With
`--only_trained` it trains nothing: the cells whose runs have not finished are skipped and
listed (`not_trained`), so a table can be written while its remaining cells train.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from deeplab_jax import errors, models, train
from deeplab_jax.analysis import model_flops, step_profile
from deeplab_jax.data import datasets
from deeplab_jax.evaluation import crf, evaluate
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from deeplab_jax.training import nonfinite
from experiments import seeds as seeds_lib
from experiments.baselines import protocol, report
from experiments.results_files import REPO_ROOT, commit

PROGRAM = "python -m experiments.baselines.run"


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_enum("setting", "cpu_small", sorted(protocol.SETTINGS),
                      "Shared sizes and schedule (protocol.py).", **d)
    flags.DEFINE_string("workdir", None, "Parent folder of the runs (one per row).", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json/.md and predictions.png go.",
                        **d)
    flags.DEFINE_string("camvid_dir", os.path.join(REPO_ROOT, "..", "shared", "data", "camvid"),
                        "The CamVid folder (read with numpy and pillow).", **d)
    flags.DEFINE_list("rows", None, "Row names to run (default: all, in order).", **d)
    flags.DEFINE_list("seeds", ["0"], "Training seeds: each row is trained once per seed.", **d)
    flags.DEFINE_bool("only_trained", False,
                      "Train nothing: build the tables from the cells whose runs have finished "
                      "(e.g. while another process trains the rest); the others are listed "
                      "as not yet trained.", **d)
    flags.DEFINE_integer("profile_steps", 5, "Timed steps of each step profile.", **d)
    flags.DEFINE_integer("num_pictures", 4, "Val images in predictions.png.", **d)
    flags.mark_flags_as_required(["workdir", "output_dir"], flag_values=fv)


def measure(config, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) and evaluates one row from one seed: that run's figures."""
    start = time.time()
    results = train.train_and_evaluate(config, workdir)
    timing = _last_timing(workdir)
    return {**_evaluation(results, workdir),
            "train_wall_seconds": timing.get("wall_seconds") if timing else round(
                time.time() - start, 1),
            "train_images_per_second": timing.get("images_per_second") if timing else None}


def measure_crf(config, workdir: str) -> dict[str, Any]:
    """Evaluates a trained row's checkpoint (one seed) with the dense CRF."""
    return _evaluation(train.evaluate_checkpoint(config, workdir), workdir)


def _evaluation(results: dict[str, Any], workdir: str) -> dict[str, Any]:
    return {**{key: results[key] for key in ("miou", "pixel_accuracy", "mean_accuracy",
                                             "fwiou", "per_class_iou", "step")},
            "intervals": results.get("intervals"), "workdir": workdir,
            "per_image_file": seeds_lib.per_image_file(workdir, results)}


def profile(row: protocol.Row, config, profile_steps: int) -> dict[str, Any]:
    """What does not depend on the seed: parameters, FLOPs, step time and memory."""
    num_classes = datasets.dataset_info(config.data)["num_classes"]
    if row.crf_of:
        return {"crf_ms_per_image": crf_ms_per_image(config, num_classes)}
    model = models.get_model(config.model, num_classes)
    crop = tuple(config.data.crop_size)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                               jax.ShapeDtypeStruct((1, *crop, 3), jax.numpy.float32))
    measured = step_profile.profile_train_step(config, num_classes, steps=profile_steps)
    return {
        "params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
        "forward_gflops_per_image": model_flops.forward_flops(
            model.clone(atrous_impl="xla") if hasattr(model, "atrous_impl") else model,
            *crop) / 1e9,
        "step_ms": measured["step_ms"], "images_per_second": measured["images_per_second"],
        "xla_train_gflops_per_image": (measured["flops_per_image"] or 0) / 1e9,
        "memory_bytes": (measured["memory"] or {}).get("total"),
        "memory_per_image_bytes": measured["memory_per_image"],
    }


def summarize_rows(rows: Sequence[protocol.Row], configs: dict[str, Any],
                   cells: list[dict[str, Any]], profiles: dict[str, dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each row over the seeds it has so far (`seeds.summarize`): (trained rows, CRF rows)."""
    trained, with_crf = [], []
    for row in rows:
        done = [cell for cell in cells if cell["name"] == row.name]
        if not done or row.name not in profiles:
            continue
        summary = seeds_lib.summarize([cell["per_image_file"] for cell in done],
                                      [cell["seed"] for cell in done])
        entry = {"name": row.name, "architecture": row.architecture, "why": row.why,
                 "settings": protocol.row_settings(row, configs[row.name]),
                 "crf_of": row.crf_of, **summary, **profiles[row.name],
                 "train_wall_seconds": sum(cell.get("train_wall_seconds") or 0
                                           for cell in done),
                 "workdir": done[0]["workdir"]}
        if row.crf_of:
            without = {cell["seed"]: cell for cell in cells if cell["name"] == row.crf_of}
            entry["miou_without"] = float(np.mean([without[c["seed"]]["miou"] for c in done]))
            entry["change"] = seeds_lib.difference(  # the same networks: seeds paired
                [without[c["seed"]]["per_image_file"] for c in done], entry["files"],
                paired_seeds=True)
            with_crf.append(entry)
        else:
            trained.append(entry)
    return trained, with_crf


def crf_ms_per_image(config, num_classes: int, repeats: int = 3) -> float:
    """The jitted CRF on an evaluation batch of the canvas size: median ms per image."""
    batch, (height, width) = config.eval.batch_size, tuple(config.data.canvas_size)
    rng = np.random.default_rng(0)
    probabilities = jax.nn.softmax(jnp.asarray(
        rng.normal(size=(batch, height, width, num_classes)), jnp.float32), -1)
    images = jnp.asarray(rng.uniform(0, 255, (batch, height, width, 3)), jnp.float32)
    refine = jax.jit(lambda p, x: crf.mean_field(p, x, None, evaluate.crf_params(config.eval)))
    jax.block_until_ready(refine(probabilities, images))  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(refine(probabilities, images))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / batch


def _last_timing(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "timing.json")
    if not os.path.exists(path):
        return None  # a rerun of a finished run trains nothing and times nothing
    with open(path) as file:
        return json.load(file)[-1]


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    setup_logging()
    seeds = seeds_lib.parse_seeds(args.seeds)
    rows = [row for row in protocol.ROWS if not args.rows or row.name in args.rows]
    # A CRF row after the rows it evaluates; a staged row after its previous stage
    # (`protocol.ROWS` lists stages in order).
    rows.sort(key=lambda row: bool(row.crf_of))
    unknown = set(args.rows or ()) - {row.name for row in protocol.ROWS}
    if unknown:
        raise errors.ConfigError(f"--rows: unknown rows {sorted(unknown)}; the rows are "
                                 f"{[row.name for row in protocol.ROWS]}.")
    for row in rows:
        needed = protocol.dependency(row)
        if needed and needed not in {other.name for other in rows}:
            raise errors.ConfigError(f"--rows: row {row.name!r} needs row {needed!r} in "
                                     "--rows (its trained checkpoints).")
    configs = {}
    for row in rows:  # every row's config is checked before anything trains
        config = protocol.row_config(row, args.setting)
        config.data.update(source="folder", folder=os.path.abspath(args.camvid_dir))
        configs[row.name] = config
    class_names = datasets.dataset_info(configs[rows[0].name].data)["class_names"]
    results = {"command": f"{PROGRAM} {shlex.join(argv)}", "setting": args.setting,
               "seeds": seeds, "class_names": list(class_names),
               "shared": {**protocol.SETTINGS[args.setting]}, "commit": commit(),
               "machine": machine.describe(), "cells": [], "rows": [], "crf_rows": [],
               "diverged": [], "not_trained": []}
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    profiles: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for row in rows:
            config = protocol.staged(protocol.seeded(configs[row.name], seed), row,
                                     args.workdir, seed)
            workdir = protocol.cell_workdir(args.workdir, row, seed)
            needed = protocol.dependency(row)
            if any(entry["name"] == needed and entry["seed"] == seed
                   for entry in results["diverged"]):
                continue  # what it starts from or evaluates never finished
            trained_by = configs[row.crf_of] if row.crf_of else config
            if args.only_trained and not protocol.finished(trained_by, workdir):
                results["not_trained"].append({"name": row.name, "seed": seed})
                continue
            try:
                cell = (measure_crf if row.crf_of else measure)(config, workdir)
            except nonfinite.NonFiniteTrainingError as error:
                # A model that diverges under the protocol is a result: recorded, not fatal.
                logging.warning("%s (seed %d) diverged: %s", row.name, seed, error)
                results["diverged"].append({"name": row.name, "seed": seed,
                                            "message": str(error).split(" (config.")[0]})
                report.write(results, args.output_dir)
                continue
            results["cells"].append({"name": row.name, "seed": seed, **cell})
            if row.name not in profiles:
                profiles[row.name] = profile(row, config, args.profile_steps)
            results["rows"], results["crf_rows"] = summarize_rows(rows, configs,
                                                                  results["cells"], profiles)
            results["orderings"] = seeds_lib.ranked_differences(
                {entry["name"]: entry["files"] for entry in results["rows"]})
            results["wall_seconds"] = round(time.time() - start, 1)
            report.write(results, args.output_dir)
    if results["not_trained"]:  # listed after the last cell that was written
        report.write(results, args.output_dir)
    if results["rows"]:  # not when --only_trained found nothing trained
        report.write_predictions(results, configs, args.output_dir, args.num_pictures)
    print(report.markdown(results))
    return results


if __name__ == "__main__":
    errors.run_command(lambda: main(sys.argv[1:]), PROGRAM)
