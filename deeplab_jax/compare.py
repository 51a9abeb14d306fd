"""Are two models different? A paired comparison of two evaluations on the same images.

    python -m deeplab_jax.compare RUN_OR_EVAL_A RUN_OR_EVAL_B [--output=FILE.json]

Each argument is a run's workdir (its latest evaluation), an evaluation's metrics JSON
(`WORKDIR/eval/NAME.json`) or its per-image file (`NAME_per_image.npz`). It prints B - A in
mIoU, pixel accuracy and every class's IoU, each with its paired-bootstrap 95% interval over
the images and a p-value (`evaluation/intervals.py`), and refuses, naming what differs, two
evaluations that did not see the same images in the same order (`evaluation/comparison.py`).
This module is the command line only.
"""
from __future__ import annotations

from typing import Sequence

from absl import app, flags

from deeplab_jax import errors
from deeplab_jax.evaluation import comparison, intervals, outputs
from deeplab_jax.reporting.command_line import setup_logging

flags.DEFINE_integer("resamples", intervals.NUM_RESAMPLES,
                     "Bootstrap resamples (and random swaps of the p-value).")
flags.DEFINE_integer("seed", 0, "Seed of the resamples and swaps.")
flags.DEFINE_string("output", None, "Also write the comparison as JSON to this file.")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 3:
        raise app.UsageError("Give two evaluations: python -m deeplab_jax.compare "
                             "RUN_OR_EVAL_A RUN_OR_EVAL_B")
    setup_logging()
    if flags.FLAGS.resamples < 100:
        raise errors.ConfigError(f"--resamples={flags.FLAGS.resamples}: an interval needs at "
                                 f"least 100 resamples; leave it out for "
                                 f"{intervals.NUM_RESAMPLES}.")
    result = comparison.compare(argv[1], argv[2], num_resamples=flags.FLAGS.resamples,
                                seed=flags.FLAGS.seed)
    print(comparison.report(result), end="")
    if flags.FLAGS.output:
        outputs.write_json(flags.FLAGS.output, result)


if __name__ == "__main__":
    errors.run_app(main, "python -m deeplab_jax.compare")
