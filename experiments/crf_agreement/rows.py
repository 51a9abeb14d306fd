"""What the CRF's approximation changes in the comparison's CRF rows: the same checkpoints
evaluated with the exact mean field and with the grid approximation, paired on the images.

    python -m experiments.crf_agreement.rows --workdir=/tmp/baselines \
        --output=experiments/crf_agreement/rows.md [--seeds=0,1,2] [--downsample=4]

For each CRF row of the baselines' protocol (`experiments/baselines/protocol.py`) whose
trained row has a run of a seed in WORKDIR (`cpu_small`), it evaluates that checkpoint with
the dense CRF exactly (`downsample=1`, the default) and with `--downsample`, each into its
own evaluation file (`_crf` and `_crf_grid4`), and compares the two with
`deeplab_jax.compare`'s paired bootstrap (approximation - exact).
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Sequence

from absl import flags

from deeplab_jax import errors, train
from deeplab_jax.evaluation import comparison
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from experiments import seeds as seeds_lib
from experiments.baselines import protocol
from experiments.results_files import REPO_ROOT, commit

PROGRAM = "python -m experiments.crf_agreement.rows"


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "The baselines' runs (cpu_small).", **d)
    flags.DEFINE_string("output", None, "The Markdown table to write.", **d)
    flags.DEFINE_string("camvid_dir", os.path.join(REPO_ROOT, "..", "shared", "data", "camvid"),
                        "The CamVid folder.", **d)
    flags.DEFINE_list("seeds", ["0"], "Seeds whose runs to evaluate.", **d)
    flags.DEFINE_integer("downsample", 4, "The approximation's grid stride.", **d)
    flags.mark_flags_as_required(["workdir", "output"], flag_values=fv)


def evaluate(row: protocol.Row, workdir: str, camvid_dir: str, downsample: int) -> str:
    """The per-image file of `row`'s CRF evaluation of `workdir` at `downsample`."""
    config = protocol.row_config(row, "cpu_small")
    config.data.update(source="folder", folder=os.path.abspath(camvid_dir))
    config.eval.crf.downsample = downsample
    return seeds_lib.per_image_file(workdir, train.evaluate_checkpoint(config, workdir))


def main(argv: Sequence[str]) -> list[dict[str, Any]]:
    args = parse_flags(define_flags, argv, PROGRAM)
    setup_logging()
    lines = []
    for row in (row for row in protocol.ROWS if row.crf_of):
        for seed in seeds_lib.parse_seeds(args.seeds):
            workdir = protocol.cell_workdir(args.workdir, row, seed)
            if not protocol.finished(protocol.row_config(row, "cpu_small"), workdir):
                continue  # not trained yet, or still training
            exact, grid = (evaluate(row, workdir, args.camvid_dir, downsample)
                           for downsample in (1, args.downsample))
            result = comparison.compare(exact, grid)
            miou = result["miou"]  # {'a', 'b', 'difference', 'low', 'high', 'p_value'}
            lines.append({"row": row.name, "seed": seed, **miou})
    text = [f"Command: `{PROGRAM} {shlex.join(argv)}`  ", f"Commit: `{commit()}`  ",
            f"Machine: {machine.summary(machine.describe())}", "",
            f"| row | seed | exact CRF | grid {args.downsample} | grid - exact (95% CI) | p |",
            "| --- " * 6 + "|"]
    for line in lines:
        text.append(f"| {line['row']} | {line['seed']} | {line['a']:.4f} | "
                    f"{line['b']:.4f} | {line['difference']:+.4f} ({line['low']:+.4f} to "
                    f"{line['high']:+.4f}) | {line['p_value']:.3f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as file:
        file.write("\n".join(text) + "\n")
    print("\n".join(text))
    return lines


if __name__ == "__main__":
    errors.run_command(lambda: main(sys.argv[1:]), PROGRAM)
