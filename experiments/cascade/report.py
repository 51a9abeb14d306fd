"""A cascade table's files: table_<name>.json and table_<name>.md, in the paper's layout."""
from __future__ import annotations

import os
from typing import Any

from deeplab_jax.evaluation.outputs import write_json
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.eta import format_duration
from experiments import seeds as seeds_lib
from experiments.cascade import settings
from experiments.cascade.tables import Cell, Table


def summarize(table: Table, results: dict[str, Any]) -> dict[str, Any]:
    """The table's cells over the seeds each has so far, and its comparisons.

    Returns:
      {'cells': {key: seeds.summarize(...) + label, wall time, images/s},
       'comparisons': [{'higher': B, 'lower': A, 'difference' (B - A), 'low', 'high',
                        'separated'}] for the table's pairs that both have runs}.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"]:
        runs.setdefault(run["key"], []).append(run)
    cells = {}
    for cell in table.all_cells():
        done = runs.get(cell.key)
        if not done:
            continue
        cells[cell.key] = {
            "label": cell.label,
            **seeds_lib.summarize([run["per_image_file"] for run in done],
                                  [run["seed"] for run in done]),
            "train_wall_seconds": sum(run.get("train_wall_seconds") or 0 for run in done),
            "train_images_per_second": [run.get("train_images_per_second") for run in done],
            "workdirs": [run["workdir"] for run in done]}
    pairs = []
    for a, b in _pairs(table):
        if a.key in cells and b.key in cells:
            difference = seeds_lib.difference(cells[a.key]["files"], cells[b.key]["files"])
            pairs.append({"higher": b.label, "lower": a.label,
                          **{key: difference[key] for key in ("difference", "low", "high",
                                                              "separated", "seeds")}})
    return {"cells": cells, "comparisons": pairs}


def _pairs(table: Table) -> list[tuple[Cell, Cell]]:
    from experiments.cascade.tables import comparisons
    return comparisons(table)


def _grid(table: Table, text) -> list[str]:
    """A Markdown grid in the table's layout, each cell `text(row, column)`."""
    lines = [f"| {table.row_header} | " + " | ".join(table.columns) + " |",
             "| --- " * (len(table.columns) + 1) + "|"]
    for i, row in enumerate(table.rows):
        lines.append(f"| {row} | " + " | ".join(text(i, j) for j in range(len(table.columns)))
                     + " |")
    return lines


def markdown(table: Table, results: dict[str, Any]) -> str:
    summary = summarize(table, results)
    cells = summary["cells"]
    depths = settings.SETTINGS[results["setting"]]["depths"]

    def ours(i: int, j: int) -> str:
        entry = cells.get(table.cells[i][j].key)
        if entry is None:
            return "-"
        miou = entry["miou"]
        spread = "" if miou["std"] is None else f" ± {miou['std']:.4f}"
        return f"**{miou['mean']:.4f}**{spread} ({miou['low']:.3f}-{miou['high']:.3f})"

    def paper(i: int, j: int) -> str:
        value = table.paper[i][j]
        return "-" if value is None else f"{value:.2f}"

    seeds_done = sorted({seed for entry in cells.values() for seed in entry["seeds"]})
    wall = sum(entry["train_wall_seconds"] for entry in cells.values())
    lines = [f"# {table.title}", "",
             f"Setting `{results['setting']}`; command: `{results['command']}`  ",
             f"Commit: `{results['commit']}`  ",
             f"Machine: {machine.summary(results['machine'])}  ",
             f"Seeds done: {', '.join(map(str, seeds_done)) or 'none'} (asked for: "
             f"{', '.join(map(str, results['seeds']))}); training wall time summed over the "
             f"runs' `timing.json`: {format_duration(wall)}  ",
             "Depths: " + ", ".join(f"the paper's ResNet-{paper_depth} is depth {ours_depth} "
                                    "here" for paper_depth, ours_depth in depths.items())
             + ("" if results["setting"] == "full" else " (block4 with three units, "
                "`resnet.UNITS_PER_BLOCK`), from scratch"), "",
             "Ours: val mIoU, the mean over the seeds done ± their standard deviation, and "
             "the 95% bootstrap interval of that mean over the val images "
             "(`experiments/seeds.py`):", ""]
    lines += _grid(table, ours)
    lines += ["", f"The paper's (PASCAL VOC 2012 val mIoU, %, ImageNet-pretrained; "
              f"{table.source}):", ""]
    lines += _grid(table, paper)
    lines += ["", "Each model's seeds:", ""]
    for key, entry in cells.items():
        values = ", ".join(f"seed {seed}: {value:.4f}"
                           for seed, value in zip(entry["seeds"], entry["miou"]["per_seed"]))
        lines.append(f"- {entry['label']}: {values}; pixel accuracy "
                     f"{entry['pixel_accuracy']['mean']:.4f}")
    if summary["comparisons"]:
        lines += ["", "Neighbouring cells (B - A, images paired, seeds resampled; only a "
                  "separated pair is a difference this table supports):", ""]
        lines += seeds_lib.format_orderings(summary["comparisons"])
    return "\n".join(lines) + "\n"


def write(table: Table, results: dict[str, Any], output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    summary = summarize(table, results)
    record = {key: results[key] for key in ("command", "setting", "seeds", "overrides",
                                            "pretrained", "commit", "machine", "class_names")}
    write_json(os.path.join(output_dir, f"table_{table.name}.json"),
               {**record, "table": table.title, "paper": table.paper,
                "layout": {"rows": table.rows, "columns": table.columns,
                           "cells": [[cell.key for cell in row] for row in table.cells]},
                **summary})
    with open(os.path.join(output_dir, f"table_{table.name}.md"), "w") as file:
        file.write(markdown(table, results))
