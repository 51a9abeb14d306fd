"""experiments/output_stride/run.py: which cells of the train x eval stride grid differ."""
import json

import numpy as np
import pytest

from experiments.output_stride import run

NUM_IMAGES, NUM_CLASSES = 40, 3


def _per_image_file(path, correct_fraction, seed):
    """A per-image file whose images each have `correct_fraction` (+ noise) of 100 pixels
    right, the rest confused with the next class; the same 40 images in every file."""
    rng = np.random.default_rng(seed)
    confusion = np.zeros((NUM_IMAGES, NUM_CLASSES, NUM_CLASSES), np.int32)
    for image in range(NUM_IMAGES):
        for true in range(NUM_CLASSES):
            right = int(np.clip(100 * correct_fraction + rng.normal(0, 5), 0, 100))
            confusion[image, true, true] = right
            confusion[image, true, (true + 1) % NUM_CLASSES] = 100 - right
    np.savez(path, confusion=confusion,
             label_digest=np.asarray([f"{i:016x}" for i in range(NUM_IMAGES)], dtype="U16"),
             image_id=np.asarray([f"image_{i}" for i in range(NUM_IMAGES)]),
             class_names=np.asarray(["a", "b", "c"]), record=np.asarray(json.dumps({})))
    return str(path)


@pytest.fixture
def grid(tmp_path):
    """Train OS8 clearly better than train OS16 at both eval strides; train OS16 evaluated at
    8 and 16 gives the same per-image files (the same network, no difference)."""
    files = {}
    for train, eval_, fraction in ((8, 8, 0.8), (8, 16, 0.6), (16, 8, 0.5), (16, 16, 0.5)):
        for seed in (0, 1):
            same_as = 16 if (train, eval_) == (16, 8) else eval_  # (16, 8) copies (16, 16)
            path = tmp_path / f"t{train}_e{same_as}_s{seed}_per_image.npz"
            if not path.exists():
                _per_image_file(path, fraction, seed=100 * train + seed)
            files.setdefault((train, eval_), []).append(str(path))
    return files


def test_train_strides_are_compared_at_each_eval_stride_and_eval_strides_per_network(grid):
    found = {(d["higher"], d["lower"]): d for d in run.differences(grid)}
    assert set(found) == {
        ("train OS 8, eval OS 8", "train OS 16, eval OS 8"),
        ("train OS 8, eval OS 16", "train OS 16, eval OS 16"),
        ("train OS 8, eval OS 8", "train OS 8, eval OS 16"),
        # train 16 at eval 8 and eval 16: identical files, so either order; difference 0.
        *[key for key in found if key[0].startswith("train OS 16")]}
    for key in [("train OS 8, eval OS 8", "train OS 16, eval OS 8"),
                ("train OS 8, eval OS 16", "train OS 16, eval OS 16"),
                ("train OS 8, eval OS 8", "train OS 8, eval OS 16")]:
        assert found[key]["separated"] and 0 < found[key]["low"] <= found[key]["difference"]
    assert not found[("train OS 8, eval OS 8", "train OS 16, eval OS 8")]["paired_seeds"]
    assert found[("train OS 8, eval OS 8", "train OS 8, eval OS 16")]["paired_seeds"]
    same = next(d for key, d in found.items() if key[0].startswith("train OS 16"))
    assert same["difference"] == 0 and not same["separated"] and same["low"] <= 0 <= same["high"]


def test_the_table_prints_every_difference(grid):
    report = {"config_file": "configs/tiny.py", "overrides": "", "note": "", "seeds": [0, 1],
              "machine": {}, "command": "python -m experiments.output_stride.run", "wall_s": 60,
              "commit": "abc1234", "differences": run.differences(grid),
              "cells": [{"train_stride": t, "eval_stride": e,
                         **run.seeds_lib.summarize(paths, [0, 1])}
                        for (t, e), paths in grid.items()],
              "profiles": {str(t): {"step_ms": 1.0, "images_per_second": 8.0,
                                    "flops_per_image": 1e9, "memory": None,
                                    "memory_per_image": None, "memory_fixed": None,
                                    "peak_bytes_in_use": None} for t in (8, 16)}}
    table = run.markdown(report)
    assert table.count("**separated**") == 3 and "within the noise" in table
    assert "Commit: `abc1234`" in table
    for line in table.splitlines():  # every table's header, delimiter and rows: same width
        if line.startswith("| --- |"):
            header = table.splitlines()[table.splitlines().index(line) - 1]
            assert line.count("|") == header.count("|"), header
