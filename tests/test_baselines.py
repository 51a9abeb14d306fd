"""experiments/baselines: the comparison script end to end, on the real CamVid, at toy size."""
import json
import os

import numpy as np
import pytest
from PIL import Image

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
        own = dict(row.overrides)
        assert optim.pop("class_weighting") == own.get("optim.class_weighting", "none"), row.name
        optim.pop("class_weights")
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
                        f"--camvid_dir={CAMVID}"])
    assert [row["name"] for row in results["rows"]] == ["PSPNet", "FCN-8s", "DeepLab v2"]
    (crf_row,) = results["crf_rows"]  # run after the row it evaluates, whatever the order
    assert crf_row["crf_of"] == "DeepLab v2" and crf_row["crf_ms_per_image"] > 0
    assert crf_row["miou_without"] == results["rows"][2]["miou"]
    saved = json.loads((output / "results.json").read_text())
    for row in saved["rows"]:
        assert 0 <= row["miou"] <= 1 and row["params"] > 0 and row["step_ms"] > 0
        assert len(row["per_class_iou"]) == 11
    assert saved["rows"][0]["settings"].startswith("OS8, aux 0.4")
    table = (output / "results.md").read_text()
    assert "| PSPNet |" in table and "| FCN-8s |" in table and saved["commit"] in table
    picture = np.asarray(Image.open(output / "predictions.png"))
    assert picture.shape[1] > 5 * picture.shape[0] // 2  # image, truth and three models
