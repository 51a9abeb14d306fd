"""Bootstrap intervals, paired tests and seed summaries on cases with known answers."""
import numpy as np
import pytest

from deeplab_jax.evaluation import intervals, metrics

K = 4


def _image(rng, correct_rate, pixels=400, num_classes=K):
    """One image's confusion matrix: `pixels` pixels spread over the classes, each right with
    probability `correct_rate`, wrong ones spread evenly."""
    truth = rng.integers(0, num_classes, pixels)
    right = rng.random(pixels) < correct_rate
    prediction = np.where(right, truth, (truth + rng.integers(1, num_classes, pixels))
                          % num_classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (truth, prediction), 1)
    return confusion


def test_scores_agree_with_the_dataset_metrics_including_absent_classes():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 30, (20, 6, 6))
    stack[:5, 2, :] = 0  # class 2 absent from the truth of some matrices...
    stack[:3, :, 2] = 0  # ...and from the prediction of a few: left out of their mean
    stack[7, 4, :] = 0   # predicted but not in the truth: IoU 0, counted
    vectorised = intervals.scores(stack)
    for index, confusion in enumerate(stack):
        expected = metrics.metrics_from_confusion_matrix(confusion)
        assert vectorised["miou"][index] == pytest.approx(expected["miou"], abs=1e-12)
        assert vectorised["pixel_accuracy"][index] == pytest.approx(
            expected["pixel_accuracy"], abs=1e-12)
        np.testing.assert_allclose(
            vectorised["per_class_iou"][index],
            [np.nan if v is None else v for v in expected["per_class_iou"]], atol=1e-12)


def test_identical_images_give_a_zero_width_interval():
    image = _image(np.random.default_rng(1), 0.7)
    result = intervals.interval(np.stack([image] * 50))
    expected = metrics.metrics_from_confusion_matrix(image)
    for name in ("miou", "pixel_accuracy"):
        entry = result[name]
        assert entry["value"] == pytest.approx(expected[name])
        assert entry["low"] == pytest.approx(entry["value"]) == pytest.approx(entry["high"])
        assert entry["std"] == pytest.approx(0.0, abs=1e-12)
    assert result["method"] == {"level": 0.95, "resamples": 1000, "seed": 0,
                                "over": "images", "num_images": 50}


def test_two_very_different_halves_give_a_wide_interval():
    rng = np.random.default_rng(2)
    good = [_image(rng, 0.95) for _ in range(30)]
    bad = [_image(rng, 0.15) for _ in range(30)]
    homogeneous = [_image(rng, 0.55) for _ in range(60)]
    split = intervals.interval(np.stack(good + bad))
    alike = intervals.interval(np.stack(homogeneous))
    width = lambda r: r["miou"]["high"] - r["miou"]["low"]
    assert width(split) > 0.1  # half the images near 0.9 mIoU, half near 0.1
    assert width(split) > 5 * width(alike)
    assert split["miou"]["low"] < split["miou"]["value"] < split["miou"]["high"]


def test_pixel_accuracy_standard_error_matches_the_formula():
    """With equal pixel counts pixel accuracy is a mean of per-image accuracies, whose
    bootstrap standard error is their std * sqrt((N - 1) / N) / sqrt(N)."""
    rng = np.random.default_rng(3)
    images = np.stack([_image(rng, rate) for rate in rng.uniform(0.2, 0.9, 80)])
    accuracy = np.trace(images, axis1=1, axis2=2) / images.sum((1, 2))
    expected = accuracy.std() / np.sqrt(len(accuracy))
    result = intervals.interval(images, num_resamples=4000)
    assert result["pixel_accuracy"]["std"] == pytest.approx(expected, rel=0.08)
    # The percentile interval of a mean is about +-1.96 standard errors.
    half_width = (result["pixel_accuracy"]["high"] - result["pixel_accuracy"]["low"]) / 2
    assert half_width == pytest.approx(1.96 * expected, rel=0.12)


def test_resamples_are_a_function_of_the_seed():
    first = intervals.resample_counts(30, 5, seed=0)
    assert np.array_equal(first, intervals.resample_counts(30, 5, seed=0))
    assert not np.array_equal(first, intervals.resample_counts(30, 5, seed=1))
    assert (first.sum(1) == 30).all()


def test_a_run_against_itself_shows_no_difference():
    rng = np.random.default_rng(4)
    images = np.stack([_image(rng, rate) for rate in rng.uniform(0.3, 0.9, 40)])
    result = intervals.paired_difference(images, images)
    for name in ("miou", "pixel_accuracy"):
        assert result[name]["difference"] == 0 == result[name]["low"] == result[name]["high"]
        assert result[name]["p_value"] == 1.0
    assert all(p == 1.0 for p in result["per_class_iou"]["p_value"])


def test_the_paired_test_finds_a_real_difference_and_not_noise():
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.3, 0.9, 60)
    a = np.stack([_image(rng, rate) for rate in rates])
    # B: on every image, 5% of class 1's pixels that A got wrong are right.
    b = a.copy()
    for confusion in b:
        moved = confusion[1, 0] // 2
        confusion[1, 0] -= moved
        confusion[1, 1] += moved
    better = intervals.paired_difference(a, b)
    assert better["miou"]["difference"] > 0 and better["miou"]["low"] > 0
    assert better["miou"]["p_value"] < 0.01
    per_class = better["per_class_iou"]
    assert per_class["p_value"][1] < 0.01 and per_class["low"][1] > 0
    assert per_class["p_value"][3] == 1.0  # class 3 did not change at all
    # The same images swapped: B - A is minus A - B, the p-value the same.
    reverse = intervals.paired_difference(b, a)
    assert reverse["miou"]["difference"] == pytest.approx(-better["miou"]["difference"])
    assert reverse["miou"]["p_value"] == better["miou"]["p_value"]


def test_under_no_difference_the_test_rejects_about_five_percent_of_the_time():
    """200 pairs of systems that differ only by noise (each image drawn twice at the same
    accuracy): the p-value falls below 0.05, and the interval misses 0, in about 5% of them."""
    rng = np.random.default_rng(7)
    p_values, covered = [], []
    for trial in range(200):
        rates = rng.uniform(0.3, 0.9, 30)
        a = np.stack([_image(rng, rate, pixels=200) for rate in rates])
        b = np.stack([_image(rng, rate, pixels=200) for rate in rates])
        result = intervals.paired_difference(a, b, num_resamples=200, seed=trial)["miou"]
        p_values.append(result["p_value"])
        covered.append(result["low"] <= 0 <= result["high"])
    rejected = np.mean(np.asarray(p_values) < 0.05)
    assert 0.01 <= rejected <= 0.10, rejected
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_paired_difference_refuses_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        intervals.paired_difference(np.zeros((3, K, K)), np.zeros((4, K, K)))


def test_seed_summaries_and_row_differences():
    rng = np.random.default_rng(6)
    rates = rng.uniform(0.4, 0.8, 40)
    seed_runs = np.stack([np.stack([_image(rng, rate + shift) for rate in rates])
                          for shift in (-0.05, 0.0, 0.05)])
    summary = intervals.seed_mean_interval(seed_runs)
    per_seed = [metrics.metrics_from_confusion_matrix(run.sum(0))["miou"] for run in seed_runs]
    assert summary["per_seed"] == pytest.approx(per_seed)
    assert summary["mean"] == pytest.approx(np.mean(per_seed))
    assert summary["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert summary["low"] < summary["mean"] < summary["high"]
    # Three copies of one seed: no spread over seeds, the single run's interval.
    copies = intervals.seed_mean_interval(np.stack([seed_runs[1]] * 3))
    single = intervals.interval(seed_runs[1])["miou"]
    assert copies["std"] == pytest.approx(0, abs=1e-12)
    assert copies["low"] == pytest.approx(single["low"])
    assert intervals.seed_mean_interval(seed_runs[:1])["std"] is None
    # A row far better than another is separated; a row against itself is not.
    better = np.stack([np.stack([_image(rng, min(rate + 0.2, 1.0)) for rate in rates])
                       for _ in range(3)])
    apart = intervals.rows_difference(seed_runs, better)
    assert apart["separated"] and apart["low"] > 0
    same = intervals.rows_difference(seed_runs, seed_runs)
    assert not same["separated"] and same["difference"] == 0
    assert same["low"] < 0 < same["high"]  # the seeds' spread is in the interval


def test_paired_seeds_cancel_the_networks_spread():
    """The same networks evaluated twice (say, with the CRF) with a small constant gain: the
    seeds differ far more than the gain, so resampled apart they hide it, paired they show it."""
    rates = np.random.default_rng(7).uniform(0.4, 0.7, 40)
    # Each image's draws are the same in both rows (its own generator), so the refined
    # network is right wherever the network is, and on 2% more of the pixels.
    refined = np.stack([np.stack([_image(np.random.default_rng(index), rate + shift + 0.02)
                                  for index, rate in enumerate(rates)])
                        for shift in (-0.15, 0.0, 0.15)])
    networks = np.stack([np.stack([_image(np.random.default_rng(index), rate + shift)
                                   for index, rate in enumerate(rates)])
                         for shift in (-0.15, 0.0, 0.15)])
    apart = intervals.rows_difference(networks, refined)
    paired = intervals.rows_difference(networks, refined, paired_seeds=True)
    assert apart["difference"] == paired["difference"] > 0
    assert not apart["separated"] and paired["separated"]
    assert paired["method"]["over"] == "images and seeds (paired)"
    with pytest.raises(ValueError, match="as many seeds in both rows: 3 and 2"):
        intervals.rows_difference(networks, refined[:2], paired_seeds=True)


def test_format_interval_reads_an_evaluation_record():
    record = {"miou": 0.5, "intervals": {"miou": {"low": 0.45, "high": 0.55},
                                         "method": {"level": 0.95}}}
    assert intervals.format_interval(record, "miou") == "0.5000 (95% CI 0.4500-0.5500)"
    assert intervals.format_interval({"miou": 0.5}, "miou") == "0.5000"
