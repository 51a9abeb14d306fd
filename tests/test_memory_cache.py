"""data/memory_cache.py: the same batches with the cache and without, within its budget."""
import os

import numpy as np
import pytest

from configs import camvid
from deeplab_jax import errors
from deeplab_jax.data import datasets, input_pipeline, labels, rescale
from deeplab_jax.data.memory_cache import MIB, CachedSource

CAMVID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")


class CountingSource:
    """Eight 4x5 examples, counting its reads; `files` as a folder source has them."""

    files = [f"image_{index}.png" for index in range(8)]

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 8

    def __getitem__(self, index):
        self.reads += 1
        rng = np.random.default_rng(index)
        return {"image": rng.integers(0, 256, (4, 5, 3), np.uint8),
                "label": rng.integers(0, 3, (4, 5), np.uint8)}


def test_an_example_is_read_once_and_kept_read_only():
    source = CountingSource()
    cached = CachedSource(source, max_mib=1)
    first = [cached[index] for index in range(8)]
    again = [cached[index] for index in (3, 3, 7)]
    assert source.reads == 8
    np.testing.assert_array_equal(again[0]["image"], first[3]["image"])
    with pytest.raises(ValueError, match="read-only"):
        again[0]["label"][0, 0] = 1
    assert cached.files == source.files and len(cached) == 8
    assert cached.cached_bytes == 8 * (4 * 5 * 3 + 4 * 5)


def test_past_its_budget_an_example_is_returned_not_kept():
    source = CountingSource()
    per_example = 4 * 5 * 3 + 4 * 5
    cached = CachedSource(source, max_mib=2.5 * per_example / MIB)  # room for two
    for _ in range(2):
        values = [cached[index]["image"] for index in range(4)]
    assert cached.cached_bytes == 2 * per_example
    assert source.reads == 4 + 2  # examples 2 and 3 read each time
    np.testing.assert_array_equal(values[3], CountingSource()[3]["image"])


def test_a_budget_that_is_not_positive_names_the_fix():
    with pytest.raises(errors.ConfigError, match="cache_mib=-1.*--config.data.cache_mib=256"):
        CachedSource(CountingSource(), -1)


def test_a_bad_example_behind_the_wrappers_is_named_by_the_source_that_read_it():
    """Not 'Example 5 of CachedSource': the folder source's class and the example's file."""

    class BadLabels(CountingSource):
        num_classes = 3

        def __getitem__(self, index):
            example = super().__getitem__(index)
            return {**example, "label": np.full((4, 5), 7, np.uint8)} if index == 5 else example

    source = CachedSource(rescale.RescaledSource(BadLabels(), 0.5), max_mib=1)
    assert input_pipeline.describe_example(source, 5) == "Example 5 of BadLabels (image_5.png)"
    with pytest.raises(labels.LabelValueError, match=r"Example 5 of BadLabels \(image_5.png\): "
                                                     r"label values \[7\]"):
        input_pipeline.prepare_example(source, 5, source[5], (4, 5), ignore_label=255)


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="no ../shared/data/camvid")
def test_camvid_batches_are_the_same_with_the_cache_and_without():
    """The CPU protocol's CamVid (a quarter of the resolution, two decoding threads): two
    epochs of batches, the second served from the cache."""
    config = camvid.get_config()
    config.data.update(source="folder", folder=os.path.abspath(CAMVID), image_scale=0.25,
                       num_workers=2)
    plain = datasets.get_dataset(config.data, "train")
    config.data.cache_mib = 64
    cached = datasets.get_dataset(config.data, "train")
    assert isinstance(cached, CachedSource) and not isinstance(plain, CachedSource)
    steps = 2 * len(plain) // 48 + 1  # past the first epoch
    batches = [input_pipeline.train_batches(source, global_batch_size=48, seed=3,
                                            start_step=0, canvas_size=(97, 129),
                                            num_workers=2) for source in (plain, cached)]
    for _ in range(steps):
        expected, got = (next(batch) for batch in batches)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], key)
    assert cached.cached_bytes == len(plain) * 90 * 120 * 4  # every example, at 90x120
