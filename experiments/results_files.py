"""Where an experiment's figures go (`results.json`, everything; `results.md`, the table) and
which code made them (`commit`)."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Uncommitted changes to these make a figure's code differ from its commit; edited figures,
# pictures and READMEs (an experiment recording while another's results await a commit) do not.
CODE_SUFFIXES = (".py", ".txt", ".toml", ".cfg", ".ipynb")


def commit(repo_root: str = REPO_ROOT) -> str:
    """HEAD's short hash, plus the code files that differ from it: '1a2b3c4' or
    '1a2b3c4 (with uncommitted changes to deeplab_jax/train.py)'; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root,
                              capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo_root, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip()]
    code = [path for path in changed if path.endswith(CODE_SUFFIXES)]
    if not code:
        return head
    shown = ", ".join(code[:5]) + (f" and {len(code) - 5} more" if len(code) > 5 else "")
    return f"{head} (with uncommitted changes to {shown})"


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
