"""Evaluation reports: per-image mIoU, best/worst selection, the three report pictures."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from deeplab_jax import parallel
from deeplab_jax.evaluation import evaluate, per_image
from deeplab_jax.reporting import figures
from deeplab_jax.data import input_pipeline
from deeplab_jax.models.deeplabv3 import DeepLabV3
from random_source import NUM_CLASSES, RandomSource


def test_per_image_miou_follows_the_dataset_convention():
    confusions = np.zeros((3, NUM_CLASSES, NUM_CLASSES), np.int64)
    confusions[0] = [[4, 0, 0], [0, 0, 0], [0, 0, 0]]  # one class, all right: 1
    confusions[1] = [[2, 2, 0], [0, 0, 0], [0, 0, 0]]  # class 1 predicted, absent: (0.5 + 0) / 2
    # confusions[2]: no valid pixel: undefined.
    miou = per_image.per_image_miou(confusions)
    np.testing.assert_allclose(miou[:2], [1.0, 0.25])
    assert np.isnan(miou[2])


def test_select_best_worst_on_a_hand_built_case():
    scores = [0.5, np.nan, 0.1, 0.9, 0.1, 0.7, 0.3]
    worst, best = per_image.select_best_worst(scores, 3)
    assert worst == [2, 4, 6]  # lowest first; the tie goes to the earlier image; NaN left out
    assert best == [3, 5, 0]
    assert per_image.select_best_worst(scores, 0) == ([], [])
    assert per_image.select_best_worst([np.nan], 2) == ([], [])
    assert per_image.select_best_worst([0.2, 0.8], 5) == ([0, 1], [1, 0])


def test_running_best_worst_equals_the_selection_over_the_whole_split():
    rng = np.random.default_rng(0)
    stats = per_image.PerImageStats(num_examples=3)
    all_confusions, fetched = [], []
    for batch in range(6):
        confusions = rng.integers(0, 5, (4, NUM_CLASSES, NUM_CLASSES))
        if batch == 2:
            confusions[1] = 0  # an image without valid pixels
        start = len(all_confusions)
        all_confusions.extend(confusions)

        def fetch(rows, start=start):
            fetched.extend(start + row for row in rows)
            # Each picture carries its image number, so we can tell which was kept.
            numbers = np.asarray([start + row for row in rows])
            return {key: np.broadcast_to(numbers[:, None, None], (len(rows), 2, 2))
                    for key in ("image", "label", "prediction")}

        stats.add_batch(confusions, fetch)
    scores = per_image.per_image_miou(np.stack(all_confusions))
    np.testing.assert_array_equal(stats.miou, scores)
    worst, best = per_image.select_best_worst(scores, 3)
    assert [index for _, index, _ in stats.worst] == worst
    assert [index for _, index, _ in stats.best] == best
    for score, index, example in stats.worst + stats.best:
        assert score == scores[index] and np.all(example["image"] == index)
    assert len(set(fetched)) == len(fetched) < len(scores)  # pictures fetched once, not all


@pytest.fixture(scope="module")
def evaluated():
    model = DeepLabV3(num_classes=NUM_CLASSES, depth=14, width=4, multi_grid=(1,),
                      aspp_channels=8, output_stride=8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    source = RandomSource(11, seed=1)  # the second batch of 8 is 5/8 padding
    step = evaluate.make_eval_step(model, num_classes=NUM_CLASSES, ignore_label=255,
                                   scales=(1.0,), flip=False)
    batches = input_pipeline.eval_batches(source, global_batch_size=8, canvas_size=(16, 16))
    mesh = parallel.make_mesh()
    stats = per_image.PerImageStats(num_examples=2)
    results, _ = evaluate.evaluate(step, variables, batches,
                                   to_device=functools.partial(parallel.to_global_batch,
                                                               mesh=mesh),
                                   num_classes=NUM_CLASSES, expected_num_images=11,
                                   class_names=source.class_names, per_image=stats)
    return model, variables, source, results, stats


def test_evaluate_keeps_each_images_miou_and_the_worst_and_best(evaluated):
    model, variables, source, results, stats = evaluated
    expected = []
    for example in source.examples:
        height, width = example["label"].shape
        canvas = np.full((1, 16, 16, 3), 127.5, np.float32)
        canvas[0, :height, :width] = example["image"]
        prediction = np.asarray(jnp.argmax(model.apply(variables, jnp.asarray(canvas),
                                                       train=False), -1))[0, :height, :width]
        valid = example["label"] != 255
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        np.add.at(confusion, (example["label"][valid], prediction[valid]), 1)
        expected.append(confusion)
    np.testing.assert_allclose(stats.miou, per_image.per_image_miou(np.stack(expected)))
    np.testing.assert_array_equal(stats.confusion, np.sum(expected, axis=0))
    worst, best = per_image.select_best_worst(stats.miou, 2)
    assert [i for _, i, _ in stats.worst] == worst and [i for _, i, _ in stats.best] == best
    for _, index, example in stats.worst + stats.best:
        height, width = source[index]["label"].shape
        np.testing.assert_array_equal(example["label"][:height, :width], source[index]["label"])
        assert np.all(example["prediction"][height:] == 255)  # outside the image: no class
        assert np.all(example["prediction"][:, width:] == 255)


def test_evaluate_keeps_every_images_matrix_in_dataset_order(evaluated):
    model, variables, source, results, stats = evaluated
    assert np.array_equal(stats.positions, np.arange(11))
    assert stats.confusions.shape == (11, NUM_CLASSES, NUM_CLASSES)
    np.testing.assert_array_equal(stats.confusions.sum(0), stats.confusion)
    np.testing.assert_allclose(per_image.per_image_miou(stats.confusions), stats.miou)
    assert list(stats.digests) == [per_image.label_digest(example["label"])
                                   for example in source.examples]


def test_per_image_results_of_several_processes_are_gathered_in_dataset_order(monkeypatch):
    """Two processes, each holding its rows of every global batch of 4 (the last batch half
    padding): the all-gather stacks them in process order; the result is in dataset order."""
    rng = np.random.default_rng(0)
    matrices = rng.integers(0, 9, (6, NUM_CLASSES, NUM_CLASSES)).astype(np.int32)
    digests = [f"{i:016x}" for i in range(6)]
    stats = per_image.PerImageStats()  # process 0: rows 0-1 of batch 0, 0-1 of batch 1
    stats.add_batch(matrices[[0, 1, 4, 5]], lambda _: {}, positions=[0, 1, 4, 5],
                    digests=[digests[p] for p in (0, 1, 4, 5)])
    # Process 1 sends rows 2-3 of batch 0 and, for its padding rows of batch 1, position -1.
    process_1 = {"confusions": np.concatenate([matrices[[2, 3]], np.zeros_like(matrices[:2])]),
                 "positions": np.array([2, 3, -1, -1], np.int32),
                 "digests": np.array([np.frombuffer(bytes.fromhex(digests[p]), "<u4")
                                      for p in (2, 3)] + [[0, 0]] * 2, np.uint32)}
    sent = {}

    def allgather(tree):
        sent.update(tree)
        return {key: np.stack([value, process_1[key]]) for key, value in tree.items()}

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(evaluate.multihost_utils, "process_allgather", allgather)
    evaluate._gather_per_image(stats, 4, NUM_CLASSES)
    assert sent["confusions"].shape == (4, NUM_CLASSES, NUM_CLASSES)  # padded to the rows
    assert np.array_equal(stats.positions, np.arange(6))
    np.testing.assert_array_equal(stats.confusions, matrices)
    assert list(stats.digests) == digests


def test_report_pictures_are_written(evaluated, tmp_path):
    _, _, source, results, stats = evaluated
    written = figures.write_evaluation_report(str(tmp_path), "val_step00000004_os8", results,
                                              stats, source.class_names, source.palette)
    assert written == {kind: str(tmp_path / "eval" / f"val_step00000004_os8_{kind}.png")
                       for kind in ("confusion", "iou", "best_worst")}
    for path in written.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    grid = np.asarray(Image.open(written["best_worst"]).convert("RGB"))
    # The four kept examples' ground truths appear, each enlarged to at least 128 pixels.
    assert grid.shape[0] > 4 * figures.MIN_TILE

