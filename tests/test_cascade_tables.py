"""experiments/cascade: the paper's Tables 1-3 and cascade + ASPP as commands."""
import json
import os
import types

import numpy as np
import pytest

from deeplab_jax import errors
from deeplab_jax.evaluation import outputs
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates
from experiments.cascade import report, run, settings, tables

CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")
needs_camvid = pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")


def test_the_tables_are_the_papers_layouts_and_share_their_common_models():
    assert [cell.output_stride for cell in tables.TABLE1.all_cells()] == [8, 16, 32, 64, 128,
                                                                          256]
    assert tables.TABLE1.paper[0][1] == tables.TABLE2.paper[0][3] == 73.88  # R50 block7 OS16
    assert tables.TABLE2.paper[1] == tables.TABLE3.paper[0]  # R101, Multi-Grid (1, 1, 1)
    assert tables.TABLE1.cells[0][1] == tables.TABLE2.cells[0][3]
    assert tables.TABLE2.cells[1] == tables.TABLE3.cells[0]
    for table in tables.TABLES.values():
        assert len(table.cells) == len(table.rows) == len(table.paper)
        assert all(len(row) == len(table.columns) for row in table.cells + table.paper)
    # Every model once: 6 + 8 - 1 (Table 2 shares Table 1's) + 2 new of the combination
    # (block4 and block7 alone at (1, 2, 4) are Table 3's) + 20 - 4 (Table 3 shares Table 2's).
    unique = tables.unique_cells(list(tables.TABLES))
    assert len(unique) == len({cell.key for cell in unique}) == 6 + 7 + 2 + 16
    assert [cell.key for cell in unique if cell.aspp] == ["r101_block4_os16_mg124_aspp",
                                                          "r101_block7_os16_mg124_aspp"]


def test_a_cells_config_is_its_model():
    for setting, depths in (("cpu_small", (20, 29)), ("full", (50, 101))):
        for cell, depth in ((tables.Cell(50, 3, 256), depths[0]),
                            (tables.Cell(101, 2, 16, (1, 2, 1)), depths[1])):
            config = settings.cell_config(cell, setting, seed=3)
            model = config.model
            assert (model.architecture, model.depth, model.output_stride,
                    config.eval.output_stride, tuple(model.multi_grid), config.seed) == (
                "deeplabv3_cascade", depth, cell.output_stride, cell.output_stride,
                cell.multi_grid, 3)
            assert model.deeplabv3_cascade.num_cascaded_blocks == cell.num_cascaded_blocks
            assert UNITS_PER_BLOCK[depth][3] == 3  # Multi-Grid (r1, r2, r3) fits block4
    full = settings.cell_config(tables.Cell(101, 0, 16), "full")
    assert (full.data.name, tuple(full.data.crop_size), full.num_train_steps) == (
        "voc", (513, 513), 30000)
    small = settings.cell_config(tables.Cell(50, 0, 16), "cpu_small")
    assert (small.data.name, small.model.width, small.num_train_steps) == (
        "camvid", 8, settings.CPU_STEPS)
    # ASPP's rates are given at OS16 and carried with the stride, as Sec. 4.2.
    with_aspp = settings.cell_config(tables.Cell(101, 0, 8, aspp=True), "cpu_small")
    assert tuple(with_aspp.model.deeplabv3_cascade.atrous_rates) == (4, 8, 12)
    # Table 3's block4 rates at OS16: 2 x the Multi-Grid (Sec. 3.2).
    mg = settings.cell_config(tables.TABLE3.cells[4][0], "cpu_small").model
    assert [rate for _, rate in strides_and_rates(16, UNITS_PER_BLOCK[mg.depth],
                                                  mg.multi_grid)[3]] == [2, 4, 8]


def test_overrides_parse_as_literals_or_strings():
    assert settings.parse_assignments(["data.folder=/data/voc", "data.batch_size=8",
                                       "data.crop_size=(321, 321)"]) == {
        "data.folder": "/data/voc", "data.batch_size": 8, "data.crop_size": (321, 321)}
    with pytest.raises(errors.ConfigError, match="FIELD=VALUE"):
        settings.parse_assignments(["data.folder"])


def _write_per_image(folder, accuracy, num_images=12, num_classes=3):
    """An evaluation's per-image file: `accuracy` of each image's pixels on the diagonal."""
    confusions = np.zeros((num_images, num_classes, num_classes), np.int64)
    for index in range(num_images):
        truth = index % num_classes
        right = int(round(100 * accuracy))
        confusions[index, truth, truth] = right
        confusions[index, truth, (truth + 1) % num_classes] = 100 - right
    stats = types.SimpleNamespace(confusions=confusions,
                                  digests=[f"{i:016x}" for i in range(num_images)])
    return outputs.write_per_image(str(folder), "val", stats,
                                   class_names=["a", "b", "c"][:num_classes],
                                   image_ids=[f"image{i}" for i in range(num_images)],
                                   record={"split": "val"})


def test_the_report_puts_our_means_beside_the_papers_and_separates_only_real_gaps(tmp_path):
    runs = []
    # Table 2's ResNet-50 row: block4 much worse than block5; block6 = block5 (noise only).
    for key, accuracy in (("r50_block4_os16_mg111", 0.5), ("r50_block5_os16_mg111", 0.8),
                          ("r50_block6_os16_mg111", 0.8)):
        for seed in (0, 1):
            path = _write_per_image(tmp_path / key / str(seed), accuracy + 0.01 * seed)
            runs.append({"key": key, "seed": seed, "per_image_file": path,
                         "workdir": str(tmp_path), "train_wall_seconds": 60})
    results = {"command": "python -m experiments.cascade.run ...", "setting": "cpu_small",
               "seeds": [0, 1], "overrides": {}, "pretrained": {}, "commit": "abc",
               "machine": {"cpu": "test"}, "class_names": ["a", "b", "c"], "runs": runs}
    summary = report.summarize(tables.TABLE2, results)
    assert sorted(summary["cells"]) == ["r50_block4_os16_mg111", "r50_block5_os16_mg111",
                                        "r50_block6_os16_mg111"]
    first, second = summary["comparisons"]  # block7 has no runs: no third pair
    assert first["separated"] and first["difference"] > 0.2
    assert not second["separated"] and abs(second["difference"]) < 1e-9
    text = report.markdown(tables.TABLE2, results)
    assert "| ResNet-50 | **" in text and "64.81" in text and "75.76" in text
    assert "seed 0:" in text and "within the noise" in text and "**separated**" in text
    report.write(tables.TABLE2, results, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "table_2.json").read_text())
    assert saved["layout"]["cells"][0][0] == "r50_block4_os16_mg111"
    assert (tmp_path / "out" / "table_2.md").read_text() == text
    # With one seed a gap is separated over the images only, and the table says so.
    one_seed = report.markdown(tables.TABLE2, {**results, "runs": [run for run in runs
                                                                   if run["seed"] == 0]})
    assert "separated over the images only" in one_seed and "**separated**" not in one_seed


def test_unknown_tables_and_a_missing_checkpoint_are_refused(tmp_path):
    with pytest.raises(errors.ConfigError, match="unknown"):
        run.main(["--tables=4", f"--workdir={tmp_path}", f"--output_dir={tmp_path}"])
    with pytest.raises(errors.MissingFileError, match="no ImageNet weights for depth 50"):
        run.pretrained_paths(str(tmp_path), "full")


@pytest.mark.slow  # 4 models x 2 seeds at toy size: about 3 minutes on 2 cores
@needs_camvid
def test_the_combination_table_runs_end_to_end_and_resumes(tmp_path):
    argv = ["--setting=tiny", "--tables=aspp", f"--workdir={tmp_path / 'runs'}",
            f"--output_dir={tmp_path / 'out'}", f"--camvid_dir={CAMVID}", "--seeds=0,1"]
    results = run.main(argv)
    assert [(r["key"], r["seed"]) for r in results["runs"]] == [
        (cell.key, seed) for seed in (0, 1) for cell in tables.TABLE_ASPP.all_cells()]
    first = {(r["key"], r["seed"]): r["miou"] for r in results["runs"]}
    seeds = {r["seed"]: r for r in results["runs"] if r["key"] == "r101_block7_os16_mg124"}
    assert seeds[0]["workdir"] != seeds[1]["workdir"] and seeds[0]["miou"] != seeds[1]["miou"]
    saved = json.loads((tmp_path / "out" / "table_aspp.json").read_text())
    assert len(saved["cells"]) == 4 and len(saved["comparisons"]) == 6
    # A rerun trains nothing more and gives the same figures.
    again = run.main(argv)
    assert {(r["key"], r["seed"]): r["miou"] for r in again["runs"]} == first
