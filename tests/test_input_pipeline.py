"""Host input: exact, resumable order; disjoint per-host rows; every eval image once."""
import itertools

import numpy as np
import pytest

from deeplab_jax.data import input_pipeline


class CountingSource:
    """Example i has a constant image and label equal to i (mod 250), size varying with i."""

    def __init__(self, num_examples):
        self.num_examples = num_examples

    def __len__(self):
        return self.num_examples

    def __getitem__(self, index):
        height, width = 5 + index % 3, 6 + index % 2
        value = index % 250
        return {"image": np.full((height, width, 3), value, np.uint8),
                "label": np.full((height, width), value, np.uint8)}


def _ids(batch):
    return batch["label"][:, 0, 0].tolist()


def _train(source, start_step, **kwargs):
    return input_pipeline.train_batches(source, global_batch_size=4, seed=3,
                                        start_step=start_step, canvas_size=(8, 8), **kwargs)


def test_every_epoch_visits_every_example_once():
    source = CountingSource(10)
    ids = list(itertools.chain.from_iterable(
        _ids(b) for b in itertools.islice(_train(source, 0), 5)))  # 20 = two epochs
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
    assert ids[:10] != ids[10:]  # a fresh permutation per epoch


def test_resume_continues_with_the_next_examples():
    source = CountingSource(10)
    uninterrupted = [b for b in itertools.islice(_train(source, 0), 9)]
    resumed = [b for b in itertools.islice(_train(source, 6), 3)]
    for a, b in zip(uninterrupted[6:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_seed_changes_the_order():
    source = CountingSource(10)
    a = next(_train(source, 0))
    b = next(input_pipeline.train_batches(source, global_batch_size=4, seed=4, start_step=0,
                                          canvas_size=(8, 8)))
    assert _ids(a) != _ids(b)


def test_hosts_read_disjoint_rows_of_the_same_global_batch():
    source = CountingSource(10)
    single = list(itertools.islice(_train(source, 0), 3))
    hosts = [list(itertools.islice(_train(source, 0, process_index=i, process_count=2), 3))
             for i in range(2)]
    for step in range(3):
        assert _ids(hosts[0][step]) + _ids(hosts[1][step]) == _ids(single[step])


def test_examples_are_padded_onto_the_canvas_with_their_size():
    batch = next(_train(CountingSource(10), 0))
    assert batch["image"].shape == (4, 8, 8, 3) and batch["label"].shape == (4, 8, 8)
    for row, index in enumerate(_ids(batch)):
        height, width = 5 + index % 3, 6 + index % 2
        assert batch["size"][row].tolist() == [height, width]
        assert (batch["label"][row, height:, :] == 255).all()
        assert (batch["label"][row, :, width:] == 255).all()


def test_eval_batches_count_every_image_exactly_once():
    source = CountingSource(10)
    batches = list(input_pipeline.eval_batches(source, global_batch_size=4, canvas_size=(8, 8)))
    assert len(batches) == 3
    valid_ids = [i for b in batches for i, v in zip(_ids(b), b["valid"]) if v]
    assert valid_ids == list(range(10))
    padding = batches[-1]
    assert padding["valid"].tolist() == [True, True, False, False]
    assert (padding["label"][2:] == 255).all()


def test_eval_batches_split_rows_across_hosts():
    source = CountingSource(10)
    ids = []
    for index in range(2):
        for batch in input_pipeline.eval_batches(source, global_batch_size=4, canvas_size=(8, 8),
                                                 process_index=index, process_count=2):
            ids += [i for i, v in zip(_ids(batch), batch["valid"]) if v]
    assert sorted(ids) == list(range(10))


def test_too_large_example_names_the_example():
    batches = input_pipeline.train_batches(CountingSource(10), global_batch_size=4, seed=0,
                                           start_step=0, canvas_size=(4, 4))
    with pytest.raises(ValueError, match=r"Example \d+ of CountingSource"):
        next(batches)


def test_prefetch_preserves_order_and_reraises_errors():
    assert list(input_pipeline.prefetch(iter(range(5)))) == list(range(5))

    def broken():
        yield 1
        raise OSError("corrupt file x.png")

    iterator = input_pipeline.prefetch(broken())
    assert next(iterator) == 1
    with pytest.raises(OSError, match="x.png"):
        next(iterator)


def test_worker_threads_give_the_same_batches_in_the_same_order():
    source = CountingSource(23)
    one = list(itertools.islice(_train(source, 2), 4))
    many = list(itertools.islice(_train(source, 2, num_workers=3), 4))
    evaluated = [list(input_pipeline.eval_batches(source, global_batch_size=4,
                                                  canvas_size=(8, 8), num_workers=workers))
                 for workers in (1, 3)]
    for a, b in itertools.chain(zip(one, many), zip(*evaluated)):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="num_workers=0"):
        next(_train(source, 0, num_workers=0))
