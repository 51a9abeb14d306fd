"""Step costs from XLA (FLOPs, memory) and the output-stride ablation script end to end."""
import json
import os
import subprocess
import sys

import pytest

from configs import synthetic, tiny
from deeplab_jax import config_lib
from deeplab_jax.analysis import step_profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_at_output_stride_rescales_the_config_rates():
    config = synthetic.get_config()  # rates (2, 4, 6) at output stride 8
    at16 = config_lib.at_output_stride(config, 16, 8)
    assert at16.model.output_stride == 16 and tuple(at16.model.deeplabv3.atrous_rates) == (1, 2, 3)
    assert at16.eval.output_stride == 8
    assert tuple(config_lib.eval_model_config(at16).deeplabv3.atrous_rates) == (2, 4, 6)
    with pytest.raises(ValueError, match="whole rates"):
        config_lib.at_output_stride(config, 32, 32)  # (0.5, 1, 1.5)


def _profile(stride):
    config = config_lib.at_output_stride(tiny.get_config(), stride, stride)
    return step_profile.profile_train_step(config, 5, steps=1, warmup=1)


@pytest.mark.slow  # compiles the step at several batch sizes (under 16 s idle)
def test_profile_reports_flops_memory_and_batch_fit():
    profile = _profile(16)
    assert profile["flops_per_step"] > 0 and profile["step_ms"] > 0
    assert profile["flops_per_image"] == profile["flops_per_step"] / profile["batch_size"]
    assert profile["memory"]["total"] > profile["memory"]["temp_size_in_bytes"] > 0
    assert profile["memory_per_image"] > 0
    assert (profile["memory_fixed"] + profile["batch_size"] * profile["memory_per_image"]
            == pytest.approx(profile["memory"]["total"]))
    small, large = (step_profile.max_batch_size(profile, size) for size in (1e8, 1e9))
    assert 0 < small < large


@pytest.mark.slow
def test_output_stride_8_costs_more_than_16():
    """OS8 computes block4 and the ASPP on 4x the positions of OS16."""
    profiles = {stride: _profile(stride) for stride in (8, 16)}
    assert profiles[8]["flops_per_image"] > 1.3 * profiles[16]["flops_per_image"]
    assert profiles[8]["memory_per_image"] > profiles[16]["memory_per_image"]


@pytest.mark.slow
def test_ablation_script_writes_the_table(tmp_path):
    command = [sys.executable, "-m", "experiments.output_stride.run", "--config=configs/tiny.py",
               f"--workdir={tmp_path / 'runs'}", f"--output_dir={tmp_path / 'out'}",
               "--train_strides=16", "--eval_strides=8,16", "--profile_steps=1",
               "--seeds=0,1"]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True,
                   timeout=600)
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {(c["train_stride"], c["eval_stride"]) for c in report["cells"]} == {(16, 8),
                                                                                (16, 16)}
    assert report["profiles"]["16"]["flops_per_image"] > 0
    for cell in report["cells"]:  # each cell over both seeds, each from its own run
        assert cell["seeds"] == [0, 1] and len(cell["miou"]["per_seed"]) == 2
        assert len({os.path.dirname(os.path.dirname(f)) for f in cell["files"]}) == 2
        assert 0 <= cell["miou"]["low"] <= cell["miou"]["high"] <= 1
    (difference,) = report["differences"]  # train 16 at eval 8 against eval 16, paired
    assert difference["paired_seeds"] and difference["seeds"] == [2, 2]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| 16 | " in table and "78.51" in table and "train OS 16, eval OS 8" in table
    assert (tmp_path / "out" / "results.png").stat().st_size > 10_000
