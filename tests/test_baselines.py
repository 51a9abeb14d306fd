"""experiments/baselines: the comparison script end to end, on the real CamVid, at toy size."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from deeplab_jax import errors
from experiments.baselines import protocol, run

CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")
needs_camvid = pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")


def test_every_row_resolves_under_the_cpu_setting():
    """Every row's config is valid, and the rows share everything but their own settings."""
    shared = None
    for row in protocol.ROWS:
        config = protocol.row_config(row, "cpu_small")
        assert config.model.architecture == row.architecture
        assert config.model.output_stride == row.output_stride
        optim = config.optim.to_dict()
        # The loss's class weighting is a row's own setting (SegNet's median frequency).
        trained = next(other for other in protocol.ROWS if other.name == row.crf_of) \
            if row.crf_of else row  # a CRF row evaluates its trained row's config
        own = dict(trained.overrides)
        assert optim.pop("class_weighting") == own.get("optim.class_weighting", "none"), row.name
        optim.pop("class_weights")
        # So is the learning rate of the VGG-16 rows (no BatchNorm: 0.1 diverges), and a
        # staged row's frozen parameters (`protocol.staged`).
        assert optim.pop("base_learning_rate") == own.get("optim.base_learning_rate", 0.1)
        optim.pop("frozen")
        common = (config.model.depth, config.model.width, config.num_train_steps,
                  config.data.batch_size, tuple(config.data.crop_size), config.seed,
                  optim, config.data.min_scale, config.data.max_scale)
        assert shared in (None, common), row.name
        shared = common
    # Today's recorded CamVid CPU run is the DeepLabv3 OS16 row.
    v3 = protocol.row_config(protocol.ROWS[0], "cpu_small")
    assert tuple(v3.model.deeplabv3.atrous_rates) == (2, 4, 6)
    assert v3.model.deeplabv3.aspp_channels == 64 and v3.model.aux_loss_weight == 0.0


@pytest.mark.slow
@needs_camvid
def test_the_comparison_runs_end_to_end(tmp_path):
    output = tmp_path / "out"
    results = run.main(["--setting=tiny", f"--workdir={tmp_path / 'runs'}",
                        f"--output_dir={output}", "--rows=PSPNet,FCN-8s,DeepLab v2 + CRF,"
                        "DeepLab v2", "--profile_steps=1", "--num_pictures=2",
                        f"--camvid_dir={CAMVID}", "--seeds=0,1"])
    assert [row["name"] for row in results["rows"]] == ["PSPNet", "FCN-8s", "DeepLab v2"]
    assert [(cell["name"], cell["seed"]) for cell in results["cells"]] == [
        (name, seed) for seed in (0, 1) for name in ("PSPNet", "FCN-8s", "DeepLab v2",
                                                     "DeepLab v2 + CRF")]
    (crf_row,) = results["crf_rows"]  # run after the row it evaluates, whatever the order
    assert crf_row["crf_of"] == "DeepLab v2" and crf_row["crf_ms_per_image"] > 0
    assert crf_row["miou_without"] == pytest.approx(results["rows"][2]["miou"]["mean"])
    assert crf_row["change"]["low"] <= crf_row["change"]["high"]
    saved = json.loads((output / "results.json").read_text())
    for row in saved["rows"]:
        miou = row["miou"]
        assert len(miou["per_seed"]) == 2 and 0 <= miou["low"] <= miou["high"] <= 1
        assert miou["mean"] == pytest.approx(np.mean(miou["per_seed"]))
        assert row["params"] > 0 and row["step_ms"] > 0 and len(row["per_class_iou"]) == 11
        assert len({os.path.dirname(os.path.dirname(f)) for f in row["files"]}) == 2
    assert len(saved["orderings"]) == 2  # three rows: two adjacent pairs
    assert saved["rows"][0]["settings"].startswith("OS8, aux 0.4")
    table = (output / "results.md").read_text()
    assert "| PSPNet |" in table and "| FCN-8s |" in table and saved["commit"] in table
    assert "Seeds: 0, 1; runs done: 8" in table
    picture = np.asarray(Image.open(output / "predictions.png"))
    assert picture.shape[1] > 5 * picture.shape[0] // 2  # image, truth and three models
    # A third seed asked for with --only_trained: the table of the first two, seed 2 listed.
    again = run.main(["--setting=tiny", f"--workdir={tmp_path / 'runs'}",
                      f"--output_dir={tmp_path / 'again'}", "--rows=PSPNet,DeepLab v2,"
                      "DeepLab v2 + CRF", "--profile_steps=1", "--num_pictures=1",
                      f"--camvid_dir={CAMVID}", "--seeds=0,1,2", "--only_trained"])
    assert [(cell["name"], cell["seed"]) for cell in again["cells"]] == [
        (name, seed) for seed in (0, 1) for name in ("PSPNet", "DeepLab v2", "DeepLab v2 + CRF")]
    assert again["not_trained"] == [{"name": name, "seed": 2} for name in (
        "PSPNet", "DeepLab v2", "DeepLab v2 + CRF")]
    assert not (tmp_path / "runs" / "PSPNet" / "seed_2").exists()
    assert again["rows"][0]["miou"]["per_seed"] == results["rows"][0]["miou"]["per_seed"]
    assert "Not yet trained" in (tmp_path / "again" / "results.md").read_text()


@needs_camvid
def test_only_trained_trains_nothing_and_lists_what_is_left(tmp_path):
    results = run.main(["--setting=tiny", f"--workdir={tmp_path / 'runs'}",
                        f"--output_dir={tmp_path / 'out'}", "--rows=FCN-8s,U-Net",
                        "--seeds=0,1", f"--camvid_dir={CAMVID}", "--only_trained"])
    assert results["cells"] == [] and results["rows"] == []
    assert [(entry["name"], entry["seed"]) for entry in results["not_trained"]] == [
        ("FCN-8s", 0), ("U-Net", 0), ("FCN-8s", 1), ("U-Net", 1)]
    assert not (tmp_path / "runs").exists()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["not_trained"]) == 4


@pytest.mark.slow
@needs_camvid
def test_a_staged_row_starts_from_its_front_end_and_keeps_it_frozen(tmp_path):
    """Yu and Koltun's stage 2 in the protocol: the context module on the Dilation front
    end's checkpoint of the same seed, the front end bit-identical after training."""
    from flax import traverse_util
    from deeplab_jax.inference.restore import restore_model
    results = run.main(["--setting=tiny", f"--workdir={tmp_path / 'runs'}",
                        f"--output_dir={tmp_path / 'out'}", "--rows=Dilation front end,"
                        "Context module (staged)", "--profile_steps=1", "--num_pictures=1",
                        f"--camvid_dir={CAMVID}"])
    names = [row["name"] for row in results["rows"]]
    assert names == ["Dilation front end", "Context module (staged)"]
    assert "from Dilation front end's checkpoint, frozen conv*" in results["rows"][1]["settings"]
    rows = {row.name: row for row in protocol.ROWS}
    front, module = (restore_model(protocol.row_config(rows[name], "tiny"),
                                   protocol.cell_workdir(str(tmp_path / "runs"), rows[name], 0))
                     for name in names)
    before = traverse_util.flatten_dict(front.variables["params"], sep="/")
    after = traverse_util.flatten_dict(module.variables["params"], sep="/")
    assert set(before) < set(after)
    for path, value in before.items():
        np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(value), path)
    with pytest.raises(errors.ConfigError, match="needs row 'Dilation front end'"):
        run.main(["--setting=tiny", f"--workdir={tmp_path / 'runs'}",
                  f"--output_dir={tmp_path / 'out'}", "--rows=Context module (staged)"])
