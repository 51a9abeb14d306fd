"""The output-stride ablation: train at each output stride, evaluate each at each stride.

    python -m experiments.output_stride.run --config=configs/synthetic.py \
        --workdir=/tmp/os_ablation --output_dir=experiments/output_stride/synthetic \
        --train_strides=8,16 --eval_strides=8,16 [--seeds=0,1,2] [--config.FIELD=VALUE ...]

For every seed and train stride it trains the config from that seed in
WORKDIR/train_os<S>/seed_<seed> (resuming if the run's folder already has checkpoints: a
rerun only re-evaluates), evaluates the final checkpoint at every eval stride
(ASPP rates rescale with the stride, as in the paper's Sec. 4.2), and profiles one training
step on one device (XLA FLOPs, time, memory; deeplab_jax/analysis/step_profile.py). It writes
`results.json`, `results.md` (the paper's Appendix Table 10 layout: rows train stride,
columns eval stride; each cell the mean over seeds, their spread, each seed's value and the
95% interval of the mean over the images, `experiments/seeds.py`) and `results.png`.

The model's rates (e.g. `model.deeplabv3.atrous_rates`), when given, are the rates at the config's own stride and
are rescaled to each train stride (rates must stay whole numbers).
"""
from __future__ import annotations

import os
import shlex
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from deeplab_jax import config_lib, errors, train
from deeplab_jax.analysis import step_profile
from deeplab_jax.data import datasets
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import start_command
from experiments import seeds as seeds_lib
from experiments.results_files import commit, write_results

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The config to ablate.", lock_config=True)
flags.DEFINE_string("workdir", None, "Parent folder of the runs (one per train stride).")
flags.DEFINE_string("output_dir", None, "Where results.json/.md/.png go.")
flags.DEFINE_list("train_strides", ["8", "16"], "Output strides to train at.")
flags.DEFINE_list("eval_strides", ["8", "16"], "Output strides to evaluate each run at.")
flags.DEFINE_list("seeds", ["0"], "Training seeds: each train stride is trained once per seed.")
flags.DEFINE_integer("profile_steps", 5, "Timed steps of the step profile (after 2 warm-up).")
flags.DEFINE_string("note", "", "A line saying what this grid is (budget, reduced sizes...).")
flags.mark_flags_as_required(["config", "workdir", "output_dir"])

# DeepLabv3, Appendix Table 10 (ResNet-101, PASCAL VOC 2012 val): the best cell per train
# output stride, as our issue quotes them.
PAPER_BEST_CELL = {8: 75.62, 16: 78.51, 32: 75.90}
DEVICE_MEMORIES_GB = (16, 40, 80, 141)  # common accelerators; 141: the H200


def _bytes(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if abs(value) >= 2**30 else f"{value / 2**20:.1f} MiB"


def markdown(report: dict) -> str:
    cells = {(c["train_stride"], c["eval_stride"]): c for c in report["cells"]}
    train_strides = sorted({c["train_stride"] for c in report["cells"]})
    eval_strides = sorted({c["eval_stride"] for c in report["cells"]})
    lines = [f"Config `{report['config_file']}` with {report['overrides'] or 'no overrides'}; "
             f"{machine.summary(report['machine'])}.", ""]
    if report["note"]:
        lines += [report["note"], ""]
    lines += ["mIoU on the eval split: mean over the seeds "
              f"({', '.join(map(str, report.get('seeds', [0])))}) ± their standard deviation "
              "(each seed's value; the 95% bootstrap interval of the mean over the images), "
              "then the mean pixel accuracy. Rows: train output stride, columns: eval output "
              "stride.", "",
              "| train OS \\ eval OS | " + " | ".join(map(str, eval_strides))
              + " | paper's best cell (VOC, R101) |",
              "| --- |" + " --- |" * (len(eval_strides) + 1)]
    for train_stride in train_strides:
        row = [f"{seeds_lib.format_summary(cells[train_stride, e])} "
               f"({cells[train_stride, e]['pixel_accuracy']['mean']:.4f})"
               if (train_stride, e) in cells else "-" for e in eval_strides]
        lines.append(f"| {train_stride} | " + " | ".join(row)
                     + f" | {PAPER_BEST_CELL.get(train_stride, '-')} |")
    if report.get("differences"):
        lines += ["", "Differences between cells (mean mIoU, the higher first; 95% interval with "
                  "the images paired and, for two train strides, the seeds resampled apart; "
                  "for one train stride at two eval strides, each seed's network paired with "
                  "itself):", ""]
        lines += seeds_lib.format_orderings(report["differences"])
    lines += ["", "Cost of training at each stride (one device, the config's batch; memory "
              "from XLA's buffer assignment, per image from compiling at 2x the batch):", "",
              "| train OS | step ms | images/s | train GFLOPs/image | memory at batch | "
              "per image | fixed | max batch at "
              + " / ".join(f"{m} GB" for m in DEVICE_MEMORIES_GB) + " | measured peak |",
              "| --- |" + " --- |" * 8]
    for train_stride in train_strides:
        p = report["profiles"][str(train_stride)]
        fits = " / ".join(str(step_profile.max_batch_size(p, m * 1e9)) for m in DEVICE_MEMORIES_GB)
        flops = p["flops_per_image"]
        lines.append(
            f"| {train_stride} | {p['step_ms']:.1f} | {p['images_per_second']:.1f} | "
            f"{'n/a' if flops is None else f'{flops / 1e9:.3f}'} | "
            f"{_bytes((p['memory'] or {}).get('total'))} | {_bytes(p['memory_per_image'])} | "
            f"{_bytes(p['memory_fixed'])} | {fits} | {_bytes(p['peak_bytes_in_use'])} |")
    lines += ["", f"Command: `{report['command']}`", f"Commit: `{report.get('commit', 'n/a')}`",
              f"Wall time: {report['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def differences(files: dict[tuple[int, int], list[str]]) -> list[dict]:
    """The cells that differ in one stride: adjacent train strides at each eval stride
    (different networks: seeds resampled per cell) and adjacent eval strides of each train
    stride (one network per seed: paired). Each as `seeds.format_orderings` prints it."""
    train_strides = sorted({t for t, _ in files})
    eval_strides = sorted({e for _, e in files})
    pairs = [((t1, e), (t2, e), False) for e in eval_strides
             for t1, t2 in zip(train_strides, train_strides[1:])]
    pairs += [((t, e1), (t, e2), True) for t in train_strides
              for e1, e2 in zip(eval_strides, eval_strides[1:])]
    results = []
    for a, b, paired in pairs:
        if a not in files or b not in files:
            continue
        result = seeds_lib.difference(files[a], files[b], paired_seeds=paired)  # b - a
        if result["difference"] >= 0:
            (lower, higher), sign = (a, b), 1.0
        else:
            (lower, higher), sign = (b, a), -1.0
        low, high = sorted((sign * result["low"], sign * result["high"]))
        results.append({"higher": f"train OS {higher[0]}, eval OS {higher[1]}",
                        "lower": f"train OS {lower[0]}, eval OS {lower[1]}",
                        "difference": sign * result["difference"], "low": low, "high": high,
                        "separated": result["separated"], "seeds": result["seeds"],
                        "paired_seeds": paired})
    return results


def plot(report: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train_strides = sorted({c["train_stride"] for c in report["cells"]})
    eval_strides = sorted({c["eval_stride"] for c in report["cells"]})
    figure = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    width = 0.8 / len(eval_strides)
    for index, eval_stride in enumerate(eval_strides):
        found = [next((c["miou"] for c in report["cells"] if c["train_stride"] == t
                       and c["eval_stride"] == eval_stride), None) for t in train_strides]
        values = [entry["mean"] if entry else 0.0 for entry in found]
        errors = np.array([[entry["mean"] - entry["low"], entry["high"] - entry["mean"]]
                           if entry else [0.0, 0.0] for entry in found]).T
        positions = [i + (index - (len(eval_strides) - 1) / 2) * width
                     for i in range(len(train_strides))]
        bars = left.bar(positions, values, width, yerr=np.clip(errors, 0, None), capsize=2,
                        label=f"eval OS {eval_stride}")
        left.bar_label(bars, fmt="%.3f", fontsize=7)
    left.set_xticks(range(len(train_strides)), [f"train OS {t}" for t in train_strides])
    left.set_ylabel("val mIoU")
    left.legend(fontsize=8, loc="lower left")
    left.set_title("Accuracy (mean over seeds, 95% CI over images)")
    profiles = [report["profiles"][str(t)] for t in train_strides]
    right.bar(range(len(train_strides)), [p["step_ms"] for p in profiles], color="tab:gray")
    right.set_xticks(range(len(train_strides)), [f"OS {t}" for t in train_strides])
    right.set_ylabel("training step (ms)")
    twin = right.twinx()
    twin.plot(range(len(train_strides)),
              [(p["flops_per_image"] or 0) / 1e9 for p in profiles], "o-", color="tab:red")
    twin.set_ylabel("train GFLOPs / image", color="tab:red")
    right.set_title("Cost")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv):
    start_command(argv)
    start = time.time()
    base = config_lib.config_from_flag(FLAGS["config"])
    train_strides = [int(s) for s in FLAGS.train_strides]
    eval_strides = [int(s) for s in FLAGS.eval_strides]
    # Check every cell's config before training anything.
    for t in train_strides:
        for e in eval_strides:
            config_lib.at_output_stride(base, t, e)
    seeds = seeds_lib.parse_seeds(FLAGS.seeds)
    num_classes = datasets.dataset_info(base.data)["num_classes"]
    files, profiles = {}, {}  # (train, eval stride) -> per-image files of its seeds
    for seed in seeds:
        for t in train_strides:
            workdir = seeds_lib.seed_workdir(os.path.join(FLAGS.workdir, f"train_os{t}"), seed)
            logging.info("Training at output stride %d from seed %d in %s", t, seed, workdir)
            trained = config_lib.at_output_stride(base, t, t)
            trained.seed = seed
            results = {t: train.train_and_evaluate(trained, workdir)}
            for e in eval_strides:
                if e not in results:
                    config = config_lib.at_output_stride(base, t, e)
                    config.seed = seed
                    results[e] = train.evaluate_checkpoint(config, workdir)
                files.setdefault((t, e), []).append(
                    seeds_lib.per_image_file(workdir, results[e]))
            if str(t) not in profiles:
                profiles[str(t)] = step_profile.profile_train_step(
                    trained, num_classes, steps=FLAGS.profile_steps)
    cells = [{"train_stride": t, "eval_stride": e, **seeds_lib.summarize(paths, seeds)}
             for (t, e), paths in files.items()]
    overrides = [arg for arg in sys.argv[1:] if arg.startswith("--config.")]
    config_file = next(arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--config="))
    report = {
        "command": "python -m experiments.output_stride.run " + shlex.join(sys.argv[1:]),
        "config_file": config_file,
        "overrides": " ".join(overrides), "note": FLAGS.note, "seeds": seeds, "cells": cells,
        "differences": differences(files),
        "profiles": profiles, "paper_best_cell": PAPER_BEST_CELL,
        "commit": commit(), "machine": machine.describe(),
        "wall_s": time.time() - start,
    }
    text = markdown(report)
    write_results(FLAGS.output_dir, report, text)
    plot(report, os.path.join(FLAGS.output_dir, "results.png"))
    print(text)


if __name__ == "__main__":
    errors.run_app(main, "python -m experiments.output_stride.run")
