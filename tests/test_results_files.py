"""experiments/results_files.py: a figure names the code that made it, and only the code."""
import json
import os
import subprocess

import pytest

from experiments import results_files


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    for path in ("deeplab_jax/train.py", "experiments/x/results.md", "experiments/x/README.md"):
        os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
        (tmp_path / path).write_text("first\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def _head(root):
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_edited_figures_and_readmes_leave_the_commit_clean(repo):
    (repo / "experiments/x/results.md").write_text("another table\n")
    (repo / "experiments/x/README.md").write_text("another reading\n")
    (repo / "untracked.py").write_text("not in git\n")
    assert results_files.commit(str(repo)) == _head(repo)


def test_edited_code_is_named(repo):
    (repo / "deeplab_jax/train.py").write_text("changed\n")
    (repo / "experiments/x/results.md").write_text("another table\n")
    assert results_files.commit(str(repo)) == (
        f"{_head(repo)} (with uncommitted changes to deeplab_jax/train.py)")


def test_outside_git_it_says_unknown(tmp_path):
    assert results_files.commit(str(tmp_path)) == "unknown"


def test_results_are_written_as_json_and_markdown(tmp_path):
    results_files.write_results(str(tmp_path / "out"), {"miou": 0.5, "path": tmp_path}, "| a |")
    assert json.loads((tmp_path / "out/results.json").read_text()) == {
        "miou": 0.5, "path": str(tmp_path)}
    assert (tmp_path / "out/results.md").read_text() == "| a |"
