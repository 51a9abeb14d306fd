"""What an evaluation's bootstrap interval and a paired comparison cost, at real split sizes.

    python -m experiments.interval_cost.run --output_dir=experiments/interval_cost

Random per-image confusion matrices of the sizes of VOC val (1449 images, 21 classes),
Cityscapes val (500, 19), ADE20K val (2000, 150) and CamVid val (101, 11); each timed
over `--repeats` calls of `intervals.interval` and `intervals.paired_difference` (1000
resamples), on one process of this machine. Writes results.json and results.md.
"""
from __future__ import annotations

import shlex
import statistics
import sys
import time
from typing import Sequence

import numpy as np
from absl import flags

from deeplab_jax.evaluation import intervals
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags
from experiments.results_files import write_results

PROGRAM = "python -m experiments.interval_cost.run"
SPLITS = {"CamVid val": (101, 11), "Cityscapes val": (500, 19), "VOC val": (1449, 21),
          "ADE20K val": (2000, 150)}


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output_dir", None, "Where results.json/.md go.", flag_values=fv)
    flags.DEFINE_integer("repeats", 3, "Timed calls of each function.", flag_values=fv)
    flags.DEFINE_string("note", "", "What else ran on the machine meanwhile.", flag_values=fv)
    flags.mark_flags_as_required(["output_dir"], flag_values=fv)


def _seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str]) -> dict:
    args = parse_flags(define_flags, argv, PROGRAM)
    rng = np.random.default_rng(0)
    rows = []
    for name, (images, classes) in SPLITS.items():
        confusions = rng.integers(0, 50, (images, classes, classes)).astype(np.int32)
        other = rng.integers(0, 50, (images, classes, classes)).astype(np.int32)
        rows.append({"split": name, "images": images, "classes": classes,
                     "interval_s": _seconds(lambda: intervals.interval(confusions),
                                            args.repeats),
                     "paired_s": _seconds(lambda: intervals.paired_difference(
                         confusions, other), args.repeats)})
    report = {"command": f"{PROGRAM} {shlex.join(argv)}", "machine": machine.describe(),
              "note": args.note,
              "resamples": intervals.NUM_RESAMPLES, "rows": rows}
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {machine.summary(report['machine'])}", ""] + (
                 [args.note, ""] if args.note else []) + [
             f"Median seconds of one call, {intervals.NUM_RESAMPLES} resamples, one process:",
             "", "| split | images | classes | `interval` (s) | `paired_difference` (s) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['split']} | {r['images']} | {r['classes']} | {r['interval_s']:.2f} | "
              f"{r['paired_s']:.2f} |" for r in rows]
    write_results(args.output_dir, report, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
