"""experiments/crf_agreement: the measurement script on a small real image, end to end."""
import json
import os

import jax
import numpy as np
import pytest

from experiments.crf_agreement import run

CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")


def test_each_setting_is_compiled_ahead_and_run_once():
    """`timed` must not warm up with a full run: the exact path takes most of an hour per
    360x480 image on 2 cores, and a warm-up call doubled it."""
    executions = []

    def doubled(value):
        executions.append(1)
        return 2 * value

    function = jax.jit(lambda p, i: jax.pure_callback(
        doubled, jax.ShapeDtypeStruct(p.shape, p.dtype), p))
    x = np.ones((2, 3), np.float32)
    out, seconds = run.timed(function, x, x)
    np.testing.assert_array_equal(out, 2 * x)
    assert len(executions) == 1 and seconds >= 0


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")
def test_the_script_on_a_camvid_image(tmp_path):
    """Noisy unaries on a 24x32 CamVid val image, exact against the stride-2 grid: each
    record names its setting, its agreement is a share of pixels, and the files are written."""
    results = run.main([f"--output_dir={tmp_path}", "--resolutions=24x32:1", "--unaries=noisy",
                        "--downsamples=2", f"--camvid_dir={CAMVID}"])
    (record,) = results["records"]
    assert record["resolution"] == "24x32" and record["unaries"] == "noisy"
    grid = record["downsample=2"]
    assert 0.0 < grid["agreement"] <= 1.0 and grid["mean_abs_q"] >= 0.0
    assert record["exact_ms"] > 0
    assert json.load(open(tmp_path / "results.json"))["records"] == results["records"]
    assert "downsample=2" in (tmp_path / "results.md").read_text()
