"""Every evaluation's interval and per-image file; `deeplab_jax.compare` on real runs; seeds."""
import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from deeplab_jax import train
from deeplab_jax.evaluation import comparison, per_image
from experiments import seeds as seeds_lib
from experiments.baselines import protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join("eval", "val_step00000020_os8")


def _config(seed=0, **synthetic):
    """configs/tiny.py long enough to leave the all-background start (Adam, 20 steps)."""
    config = tiny.get_config()
    config.num_train_steps = config.checkpoint_every_steps = config.eval_every_steps = 20
    config.optim.update(optimizer="adam", base_learning_rate=0.01)
    config.seed = seed
    config.data.synthetic.update(**synthetic)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one config, and seed 0's checkpoint evaluated on a 12-image val split."""
    root = tmp_path_factory.mktemp("runs")
    workdirs = {seed: seeds_lib.seed_workdir(str(root / "tiny"), seed) for seed in (0, 1)}
    results = {seed: train.train_and_evaluate(_config(seed), workdir)
               for seed, workdir in workdirs.items()}
    other = str(root / "other_split")
    os.makedirs(other)
    os.symlink(os.path.join(workdirs[0], "checkpoints"), os.path.join(other, "checkpoints"))
    train.evaluate_checkpoint(_config(num_val_examples=12), other)
    return workdirs, results, other


def _compare(*args):
    return subprocess.run([sys.executable, "-m", "deeplab_jax.compare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_every_evaluation_has_an_interval_and_a_per_image_file(runs):
    workdirs, results, _ = runs
    record = json.load(open(os.path.join(workdirs[0], EVAL + ".json")))
    bounds = record["intervals"]["miou"]
    assert bounds["low"] <= bounds["high"] and bounds["value"] == record["miou"]
    assert record["intervals"]["method"]["resamples"] == 1000
    assert len(record["intervals"]["per_class_iou"]["low"]) == 5
    saved = per_image.load(os.path.join(workdirs[0], EVAL + per_image.FILE_SUFFIX))
    assert saved["confusion"].shape == (10, 5, 5)
    # The per-image matrices sum to the split's: the same pixels, counted once each.
    assert saved["confusion"].sum() == record["num_pixels"]
    assert saved["record"]["split"] == "val" and saved["record"]["step"] == 20
    assert len(set(saved["label_digest"])) == 10


def test_seeds_give_their_own_workdirs_and_different_results(runs):
    workdirs, results, _ = runs
    assert workdirs[0] != workdirs[1]
    assert protocol.cell_workdir("/r", protocol.ROWS[0], 0) != protocol.cell_workdir(
        "/r", protocol.ROWS[0], 1)
    kernels = [ocp.PyTreeCheckpointer().restore(
        os.path.join(workdirs[seed], "checkpoints", "20", "state"))["params"]["logits"]["kernel"]
        for seed in (0, 1)]
    assert not np.allclose(kernels[0], kernels[1])
    confusions = [per_image.load(os.path.join(workdirs[seed], EVAL + per_image.FILE_SUFFIX))[
        "confusion"] for seed in (0, 1)]
    assert not np.array_equal(confusions[0], confusions[1])
    summary = seeds_lib.summarize([seeds_lib.per_image_file(workdirs[s], results[s])
                                   for s in (0, 1)], [0, 1])
    assert summary["miou"]["per_seed"] == pytest.approx([results[0]["miou"],
                                                         results[1]["miou"]])


def test_compare_finds_no_difference_between_a_run_and_itself(runs):
    workdirs, _, _ = runs
    done = _compare(workdirs[0], os.path.join(workdirs[0], EVAL + ".json"))
    assert done.returncode == 0, done.stderr
    assert "mIoU B - A = +0.0000 (95% CI +0.0000 to +0.0000, p = 1)" in done.stdout


def test_compare_two_seeds_writes_the_paired_difference(runs, tmp_path):
    workdirs, results, _ = runs
    output = tmp_path / "comparison.json"
    done = _compare(workdirs[0], workdirs[1], f"--output={output}")
    assert done.returncode == 0, done.stderr
    saved = json.loads(output.read_text())
    assert saved["miou"]["difference"] == pytest.approx(results[1]["miou"] - results[0]["miou"])
    assert saved["num_images"] == 10 and len(saved["per_class_iou"]["p_value"]) == 5
    assert 0 < saved["miou"]["p_value"] <= 1
    assert "| IoU disk |" in done.stdout


def test_compare_refuses_evaluations_of_different_images(runs, tmp_path):
    workdirs, _, other = runs
    done = _compare(workdirs[0], other)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "has 10 images" in done.stderr and "has 12" in done.stderr
    # The same images in another order: refused, never paired silently.
    saved = per_image.load(os.path.join(workdirs[0], EVAL + per_image.FILE_SUFFIX))
    shuffled = dict(saved, confusion=saved["confusion"][::-1],
                    label_digest=saved["label_digest"][::-1])
    with pytest.raises(comparison.NotComparable, match="another order"):
        comparison.check_same_images(saved, shuffled, ("a", "b"))
    with pytest.raises(comparison.NotComparable, match="split 'train'"):
        comparison.check_same_images(saved, dict(saved, record={"split": "train"}),
                                     ("a", "b"))
    relabelled = dict(saved, label_digest=np.asarray(["0" * 16] * 10))
    with pytest.raises(comparison.NotComparable, match="label maps of 10 of 10"):
        comparison.check_same_images(saved, relabelled, ("a", "b"))
    missing = _compare(workdirs[0], str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no such evaluation" in missing.stderr


def test_a_workdir_with_several_evaluations_at_its_last_step_must_be_named(runs, tmp_path):
    workdirs, _, _ = runs
    folder = tmp_path / "run" / "eval"
    folder.mkdir(parents=True)
    source = os.path.join(workdirs[0], EVAL + per_image.FILE_SUFFIX)
    for name in ("val_step00000020_os8", "val_step00000020_os16"):
        (folder / (name + per_image.FILE_SUFFIX)).write_bytes(open(source, "rb").read())
    with pytest.raises(comparison.NotComparable, match="2 evaluations at its latest step 20"):
        comparison.resolve(str(tmp_path / "run"))
