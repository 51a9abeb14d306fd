"""Where an experiment's figures go: `results.json` (everything) and `results.md` (the table)."""
from __future__ import annotations

import json
import os
from typing import Any, Optional


def write_results(output_dir: str, report: Any, markdown: Optional[str]) -> None:
    """Writes `report` to OUTPUT_DIR/results.json and, unless None, `markdown` to results.md.

    Values JSON cannot hold (a dtype, a path object) are written as their str().
    """
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as file:
        json.dump(report, file, indent=1, default=str)
    if markdown is not None:
        with open(os.path.join(output_dir, "results.md"), "w") as file:
            file.write(markdown)
