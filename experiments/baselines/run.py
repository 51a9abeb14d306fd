"""Every model on CamVid under one protocol: train, evaluate, profile, one table, one picture.

    python -m experiments.baselines.run --setting=cpu_small --workdir=/tmp/baselines \
        --output_dir=experiments/baselines/cpu_small [--rows="DeepLabv3 OS16,PSPNet"]

For each row of `protocol.ROWS` it trains `configs/camvid.py` in WORKDIR/<row> (resuming if
that folder has checkpoints, so a rerun only re-evaluates), evaluates the final checkpoint
on val, and profiles one training step on one device (XLA FLOPs and memory, the median step
time: `analysis/step_profile.py`); parameters and forward GFLOPs per image (every tap:
`analysis/model_flops.py`) are counted from the model. It writes, as each row ends,
`results.json` and `results.md` (the table with per-class IoU, the command, the commit and
the machine), then `predictions.png`: the same val images predicted by every model, beside
the truth. A CRF row (`Row.crf_of`) trains nothing: it evaluates that row's checkpoint with
the dense CRF after the network, and times the CRF per image.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from deeplab_jax import models, train
from deeplab_jax.analysis import model_flops, step_profile
from deeplab_jax.data import datasets
from deeplab_jax.evaluation import crf, evaluate
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from experiments.baselines import protocol, report

PROGRAM = "python -m experiments.baselines.run"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    flags.DEFINE_integer("profile_steps", 5, "Timed steps of each step profile.", **d)
    flags.DEFINE_integer("num_pictures", 4, "Val images in predictions.png.", **d)
    flags.mark_flags_as_required(["workdir", "output_dir"], flag_values=fv)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(row: protocol.Row, config, workdir: str, profile_steps: int) -> dict[str, Any]:
    """Train (or resume), evaluate, profile and count one row."""
    start = time.time()
    results = train.train_and_evaluate(config, workdir)
    train_wall = time.time() - start
    num_classes = datasets.dataset_info(config.data)["num_classes"]
    model = models.get_model(config.model, num_classes)
    crop = tuple(config.data.crop_size)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                               jax.ShapeDtypeStruct((1, *crop, 3), jax.numpy.float32))
    profile = step_profile.profile_train_step(config, num_classes, steps=profile_steps)
    timing = _last_timing(workdir)
    return {
        "name": row.name, "architecture": row.architecture, "why": row.why,
        "settings": protocol.row_settings(row, config),
        "miou": results["miou"], "pixel_accuracy": results["pixel_accuracy"],
        "mean_accuracy": results["mean_accuracy"], "fwiou": results["fwiou"],
        "per_class_iou": results["per_class_iou"], "step": results["step"],
        "params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
        "forward_gflops_per_image": model_flops.forward_flops(
            model.clone(atrous_impl="xla") if hasattr(model, "atrous_impl") else model,
            *crop) / 1e9,
        "step_ms": profile["step_ms"], "images_per_second": profile["images_per_second"],
        "xla_train_gflops_per_image": (profile["flops_per_image"] or 0) / 1e9,
        "memory_bytes": (profile["memory"] or {}).get("total"),
        "memory_per_image_bytes": profile["memory_per_image"],
        "train_wall_seconds": timing.get("wall_seconds") if timing else round(train_wall, 1),
        "train_images_per_second": timing.get("images_per_second") if timing else None,
        "workdir": workdir,
    }


def measure_crf(row: protocol.Row, config, trained: dict[str, Any]) -> dict[str, Any]:
    """Evaluates a trained row's checkpoint with the dense CRF; times the CRF per image."""
    results = train.evaluate_checkpoint(config, trained["workdir"])
    return {"name": row.name, "architecture": row.architecture, "crf_of": row.crf_of,
            "why": row.why, "settings": protocol.row_settings(row, config),
            "miou": results["miou"], "pixel_accuracy": results["pixel_accuracy"],
            "mean_accuracy": results["mean_accuracy"], "fwiou": results["fwiou"],
            "per_class_iou": results["per_class_iou"], "step": results["step"],
            "miou_without": trained["miou"],
            "crf_ms_per_image": crf_ms_per_image(config, len(trained["per_class_iou"])),
            "workdir": trained["workdir"]}


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
    rows = [row for row in protocol.ROWS if not args.rows or row.name in args.rows]
    rows.sort(key=lambda row: bool(row.crf_of))  # a CRF row after the rows it evaluates
    unknown = set(args.rows or ()) - {row.name for row in protocol.ROWS}
    if unknown:
        raise SystemExit(f"{PROGRAM}: unknown rows {sorted(unknown)}; the rows are "
                         f"{[row.name for row in protocol.ROWS]}.")
    configs = {}
    for row in rows:  # every row's config is checked before anything trains
        config = protocol.row_config(row, args.setting)
        config.data.update(source="folder", folder=os.path.abspath(args.camvid_dir))
        configs[row.name] = config
    class_names = datasets.dataset_info(configs[rows[0].name].data)["class_names"]
    results = {"command": f"{PROGRAM} {shlex.join(argv)}", "setting": args.setting,
               "class_names": list(class_names),
               "shared": {**protocol.SETTINGS[args.setting]}, "commit": commit(),
               "machine": machine.describe(), "rows": [], "crf_rows": []}
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    for row in rows:
        if row.crf_of:
            trained = next((done for done in results["rows"] if done["name"] == row.crf_of),
                           None)
            if trained is None:
                raise SystemExit(f"{PROGRAM}: row {row.name!r} needs row {row.crf_of!r} in "
                                 "--rows (its trained checkpoint).")
            results["crf_rows"].append(measure_crf(row, configs[row.name], trained))
        else:
            workdir = os.path.join(args.workdir, row.name.replace(" ", "_").replace("+", "plus"))
            results["rows"].append(measure(row, configs[row.name], workdir, args.profile_steps))
        results["wall_seconds"] = round(time.time() - start, 1)
        report.write(results, args.output_dir)
    report.write_predictions(results, configs, args.output_dir, args.num_pictures)
    print(report.markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
