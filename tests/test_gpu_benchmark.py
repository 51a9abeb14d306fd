"""experiments/gpu_speed: the benchmarks run end to end at toy sizes on CPU, so they never rot.

Timings on CPU mean nothing; these check that every number is produced and sane.
"""
import json

import numpy as np
import pytest

from configs import voc
from deeplab_jax.analysis.model_flops import forward_flops
from experiments.gpu_speed import atrous_conv, benchmark, ours, theirs, work_per_step
from experiments.gpu_speed.settings import Setting


@pytest.mark.slow  # compiles the benchmark step twice (under 16 s idle)
def test_training_step_benchmark_jax_half(tmp_path):
    report = benchmark.main([
        "--settings", "14/8/float32/taps", "--width", "4", "--aspp_channels", "8",
        "--atrous_rates", "1,2,3", "--crop", "33", "--canvas", "513", "--batch", "2", "--steps", "2", "--warmup", "1",
        "--with_input", "--input_examples", "3", "--input_workers", "2", "--no_subprocess",
        "--output_dir", str(tmp_path)])
    [ours] = report["jax"]
    assert "error" not in ours, ours.get("error")
    assert ours["setting"] == "14/8/float32/taps" and ours["loss_is_finite"]
    assert len(ours["step_times_ms"]) == 2 and ours["median_step_ms"] > 0
    assert ours["images_per_s"] == pytest.approx(2e3 / ours["median_step_ms"])
    # Model FLOPs are at least the convolutions' dense count; XLA's count is positive.
    assert ours["flops_per_step"] > 0 and ours["model_flops_per_step"] > 0
    assert ours["tflops_per_s"] == pytest.approx(
        ours["flops_per_step"] / ours["median_step_ms"] / 1e9)
    assert ours["peak_bytes"] is None  # CPU: memory_stats() is unavailable -> n/a
    # The census of the compiled step: op counts and each distinct convolution window.
    assert ours["hlo_ops"]["convolution"] > 0 and ours["hlo_ops"]["fusion"] > 0
    assert "convolution size=7x7 stride=2x2 pad=3_3x3_3" in ours["conv_lowerings"]  # the stem
    feed = ours["with_input"]
    assert feed["fed_step_ms"] > 0 and feed["host_batch_ms"] > 0
    # Real files decoded on threads: VOC-sized JPEGs read by voc.VocFolder.
    assert feed["source"].startswith("voc_like: 3 VOC-sized JPEG") and feed["input_workers"] == 2
    try:
        import torch  # noqa: F401
    except ImportError:
        assert report["torch"] == [] and "not importable" in report["torch_skipped"]
    else:  # torchvision's half at the same toy depth (torchvision's ResNet class, our units)
        [theirs] = report["torch"]
        assert "error" not in theirs, theirs.get("error")
        assert theirs["setting"] == "14/8/float32" and theirs["loss_is_finite"]
        assert theirs["flops_per_step"] > 0 and theirs["median_step_ms"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["jax"][0]["setting"] == "14/8/float32/taps"
    table = (tmp_path / "results.md").read_text()
    assert "| R14 | 8 | float32 | taps |" in table and "correctness checks" in table


def test_model_flops_match_the_layer_count():
    """forward_flops on the paper's R101 at OS16: the layer-by-layer count, within 3%."""
    from deeplab_jax.models.deeplabv3 import DeepLabV3

    flops = forward_flops(DeepLabV3(num_classes=21, depth=101, output_stride=16), 513)
    # shared/notes/performance.md: 142.1 GFLOP forward (71.06 GMAC) at 513, OS16.
    assert flops == pytest.approx(142.1e9, rel=0.03)


def test_settings_parse_and_reject():
    setting = Setting.parse("101/16/bfloat16/space_to_batch")
    assert (setting.depth, setting.output_stride, setting.dtype, setting.atrous_impl) == (
        101, 16, "bfloat16", "space_to_batch")
    assert Setting.parse("50/8/float32").atrous_impl == "xla"
    for bad in ("101/16/float16", "101/16/bfloat16/winograd", "101/12/float32", "101",
                "18/16/float32"):
        with pytest.raises(ValueError):
            Setting.parse(bad)
    args = benchmark.parse_args(["--depths", "50", "--output_strides", "16,8",
                                 "--dtypes", "bfloat16", "--atrous_impls", "xla,taps"])
    assert args.settings == [
        "50/16/bfloat16/xla", "50/16/bfloat16/taps", "50/8/bfloat16/xla", "50/8/bfloat16/taps"]
    # VOC-sized files do not fit a small canvas: refused before anything runs.
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--with_input", "--crop", "65"])
    assert benchmark.parse_args(["--with_input", "--crop", "65", "--canvas", "513"]).canvas == 513


def test_ours_is_the_real_config_at_the_setting():
    """Ours is configs/voc.py (schedule, optimizer, augmentation), changed only where the
    setting and the benchmark's shapes say."""
    args = benchmark.parse_args(["--crop", "129", "--batch", "4", "--width", "8"])
    config = ours.step_config(Setting.parse("50/8/bfloat16/taps"), args)
    paper = voc.get_config()
    assert config.optim == paper.optim and config.num_train_steps == paper.num_train_steps
    for field in ("min_scale", "max_scale", "scale_step", "flip", "ignore_label"):
        assert config.data[field] == paper.data[field]
    assert (config.model.depth, config.model.output_stride, config.model.dtype,
            config.model.atrous_impl, config.model.width) == (50, 8, "bfloat16", "taps", 8)
    assert tuple(config.model.deeplabv3.atrous_rates) == (12, 24, 36)  # the paper's rates at OS8
    assert tuple(config.data.crop_size) == (129, 129) and config.data.batch_size == 4


def test_atrous_conv_benchmark(tmp_path):
    output = tmp_path / "atrous.json"
    result = atrous_conv.main(["--channels_in", "8", "--channels_out", "4", "--size", "9",
                          "--batch", "1", "--rates", "1,2,12", "--dtype", "float32",
                          "--warmup", "1", "--iters", "1", "--output", str(output)])
    rows = {(r["rate"], r["impl"], r["mode"]): r for r in result["rows"]}
    assert len(rows) == 3 * 3 * 2
    for (rate, impl, mode), row in rows.items():
        assert row["median_ms"] > 0 and row["speedup_vs_xla"] > 0
        if mode == "forward":
            assert row["max_rel_error_vs_first_impl"] < 1e-5, (rate, impl)
    # What the lowering column is for: XLA keeps the dilation, 'taps' has no convolution.
    assert any("rhs_dilate=2x2" in c for c in rows[(2, "xla", "forward")]["conv_lowerings"])
    assert rows[(2, "taps", "forward")]["conv_lowerings"] == []
    assert rows[(12, "taps", "forward")]["model_flops"] == 2 * 81 * 9 * 8 * 4
    assert json.loads(output.read_text())["rows"][0]["rate"] == 1
    assert (tmp_path / "atrous.md").exists()


def test_torchvision_os16_variant():
    """Where torchvision is installed: OS16 is a real output stride 16, rates (6, 12, 18)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    os8, _ = theirs.build_torchvision_deeplab(50, 8, 21)
    os16, note = theirs.build_torchvision_deeplab(50, 16, 21, (6, 12, 18))
    assert "(6, 12, 18)" in note
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(os16) == count(os8)  # same parameters, different strides and dilations
    rates = [branch[0].dilation for branch in list(os16.classifier[0].convs)[1:4]]
    assert rates == [(6, 6), (12, 12), (18, 18)]
    with torch.no_grad():
        features = [m.eval().backbone(torch.zeros(1, 3, 65, 65))["out"] for m in (os8, os16)]
    assert [tuple(f.shape[-2:]) for f in features] == [(9, 9), (5, 5)]
    assert np.isfinite(features[1].numpy()).all()
    # The toy depths the CPU check uses: our units per block in torchvision's ResNet class.
    tiny8, _ = theirs.build_torchvision_deeplab(14, 8, 3)
    tiny16, _ = theirs.build_torchvision_deeplab(14, 16, 3)
    assert len(tiny16.backbone.layer3) == 1 and count(tiny8) == count(tiny16)
    with torch.no_grad():
        features = [m.eval().backbone(torch.zeros(1, 3, 65, 65))["out"] for m in (tiny8, tiny16)]
    assert [tuple(f.shape[-2:]) for f in features] == [(9, 9), (5, 5)]
    with pytest.raises(ValueError, match="depth 18 is not defined"):
        theirs.build_torchvision_deeplab(18, 16, 3)


def test_work_per_step_counts(tmp_path):
    [row] = work_per_step.main(["--settings", "14/16", "--crop", "33", "--batch", "2",
                       "--num_classes", "3", "--output_dir", str(tmp_path)])
    ours = row["ours"]
    assert ours["params"] > 0 and ours["forward_flops_per_image"] > 0
    assert ours["train_flops_per_step"] == 3 * 2 * ours["forward_flops_per_image"]
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert "theirs" not in row
    else:  # torchvision's head adds a 3x3 256->256 conv: more work than ours, never less
        assert row["theirs_over_ours_forward"] > 1.0
        assert row["theirs"]["train_flops_per_step"] > row["theirs"]["forward_flops_per_image"]
    assert "| R14 OS16 |" in (tmp_path / "results.md").read_text()
