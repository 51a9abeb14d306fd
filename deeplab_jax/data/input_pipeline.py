"""Host-side input: example order, per-host rows, padding to a fixed canvas, prefetch.

The host only decodes and pads; random scale, crop and flip run on the device inside the
training step (`augment.py`). The order is a pure function of (seed, step): the examples of
step s are positions s*G .. s*G+G-1 of an endless stream made of one fresh permutation per
epoch (G = global batch). Resuming at step s therefore continues with exactly the next
examples, none repeated or skipped, without saving any iterator state, and each process
reads only its own rows of every global batch.

A source is any sequence of examples: `len(source)` and `source[i]` returning
{'image': uint8 [h, w, 3], 'label': uint8 [h, w]}. When it has a `num_classes` attribute
(every dataset of `datasets.py` does), each label map is checked as it is read: a value
outside 0..num_classes-1 and the ignore label stops the run with the example's name. Any
error while reading an example (a truncated file, say) reaches the training loop through
the decoding threads and `prefetch`, with the file's name; nothing is skipped silently.

Decoding runs on `num_workers` threads (PIL's JPEG/PNG decoders and numpy's copies release
the GIL), in the order of the indices: the batches are the same for any number of workers.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
from typing import Any, Iterator, Protocol

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import labels
from deeplab_jax.data.augment import pad_to_canvas

Batch = dict[str, np.ndarray]


class ExampleSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of one epoch: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_example_indices(seed: int, step: int, global_batch_size: int, num_examples: int,
                          rows: slice) -> np.ndarray:
    """Dataset indices of `rows` of the global batch at `step`."""
    positions = step * global_batch_size + np.arange(global_batch_size)[rows]
    epochs, offsets = np.divmod(positions, num_examples)
    permutations = {epoch: epoch_permutation(seed, int(epoch), num_examples)
                    for epoch in np.unique(epochs)}
    return np.array([permutations[e][o] for e, o in zip(epochs, offsets)], np.int64)


def host_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """The contiguous rows of a global batch that one process loads."""
    per_host = global_batch_size // process_count
    return slice(process_index * per_host, (process_index + 1) * per_host)


def describe_example(source: ExampleSource, index: int) -> str:
    """'Example 7 of VocFolder (2007_000033)': the index, the source, and the files when known.

    Wrappers (`RescaledSource`, `CachedSource`, ...) keep the example's index and expose the
    source they wrap as `wrapped`; the message names the source that read the files.
    """
    while getattr(source, "wrapped", None) is not None:
        source = source.wrapped
    what = f"Example {index} of {type(source).__name__}"
    for attribute in ("files", "ids"):  # CamVidFolder.files, CustomFolder.files, VocFolder.ids
        names = getattr(source, attribute, None)
        if names is not None:
            try:
                name = names[index]
            except (IndexError, TypeError, KeyError):
                break
            return f"{what} ({' + '.join(map(str, name)) if isinstance(name, tuple) else name})"
    return what


def _padded_example(source: ExampleSource, index: int, canvas_size: tuple[int, int],
                    ignore_label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads example `index` and `prepare_example`s it."""
    index = int(index)
    return prepare_example(source, index, source[index], canvas_size, ignore_label)


def prepare_example(source: ExampleSource, index: int, example: dict[str, np.ndarray],
                    canvas_size: tuple[int, int], ignore_label: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checks an example's label values and pads it onto the canvas: what every example goes
    through before training or evaluation (and `data/check.py` runs over a whole dataset).

    Raises:
      LabelValueError: a label value outside 0..num_classes-1 and `ignore_label` (checked
        for every source with a `num_classes`), naming the example.
      ConfigError: an example larger than the canvas, naming the example.
      ValueError: sizes, dtypes or shapes that do not fit, naming the example.
    """
    num_classes = getattr(source, "num_classes", None)
    if num_classes is not None:
        labels.check_label_values(example["label"], num_classes, ignore_label,
                                  where=describe_example(source, index))
    try:
        return pad_to_canvas(example["image"], example["label"], canvas_size,
                             ignore_label=ignore_label)
    except ValueError as error:
        # A user's error (the canvas) keeps its class, so the command shows it as one line;
        # a wrong dtype or shape comes from a reader of ours and stays a ValueError.
        kind = type(error) if isinstance(error, errors.UserError) else ValueError
        raise kind(f"{describe_example(source, index)}: {error}") from error


def _stack(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Batch:
    images, labels, sizes = zip(*examples)
    return {"image": np.stack(images), "label": np.stack(labels), "size": np.stack(sizes)}


@contextlib.contextmanager
def _mapper(num_workers: int):
    """An order-preserving map over `num_workers` threads (the builtin map for 1)."""
    if num_workers < 1:
        raise errors.ConfigError(f"config.data.num_workers={num_workers} must be >= 1 (the "
                                 "decoding threads): set e.g. --config.data.num_workers=4.")
    if num_workers == 1:
        yield map
        return
    with concurrent.futures.ThreadPoolExecutor(num_workers,
                                               thread_name_prefix="decode") as executor:
        yield executor.map


def train_batches(source: ExampleSource, *, global_batch_size: int, seed: int,
                  start_step: int, canvas_size: tuple[int, int], ignore_label: int = 255,
                  process_index: int = 0, process_count: int = 1,
                  num_workers: int = 1) -> Iterator[Batch]:
    """Endless host batches from `start_step` on.

    Yields:
      {'image': uint8 [b, Hc, Wc, 3], 'label': uint8 [b, Hc, Wc], 'size': int32 [b, 2]},
      b = global_batch_size / process_count; `size` is each example's true (h, w).
      `train_example_indices` says which examples a step sees.
    """
    rows = host_rows(global_batch_size, process_index, process_count)
    step = start_step
    with _mapper(num_workers) as map_examples:
        while True:
            indices = train_example_indices(seed, step, global_batch_size, len(source), rows)
            yield _stack(list(map_examples(
                lambda i: _padded_example(source, i, canvas_size, ignore_label), indices)))
            step += 1


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)


def eval_batches(source: ExampleSource, *, global_batch_size: int,
                 canvas_size: tuple[int, int], ignore_label: int = 255,
                 process_index: int = 0, process_count: int = 1,
                 num_workers: int = 1) -> Iterator[Batch]:
    """One pass over the split; every example appears in exactly one row of one batch.

    The last batch is filled with padding rows: all-ignore labels and `valid` False, so they
    count neither in the confusion matrix nor in the image count.

    Yields:
      the train batch keys plus 'valid': bool [b] and 'index': int64 [b], each row's
      position in the source (-1 for padding rows). 'index' is for the host (per-image
      results in dataset order), not for the device.
    """
    rows = host_rows(global_batch_size, process_index, process_count)
    height, width = canvas_size
    padding_row = (np.zeros((height, width, 3), np.uint8),
                   np.full((height, width), ignore_label, np.uint8), np.zeros(2, np.int32))

    def load(position):
        if position >= len(source):
            return padding_row
        return _padded_example(source, position, canvas_size, ignore_label)

    with _mapper(num_workers) as map_examples:
        for batch_index in range(num_eval_batches(len(source), global_batch_size)):
            positions = batch_index * global_batch_size + np.arange(global_batch_size)[rows]
            batch = _stack(list(map_examples(load, positions)))
            batch["valid"] = positions < len(source)
            batch["index"] = np.where(batch["valid"], positions, -1).astype(np.int64)
            yield batch


def prefetch(iterator: Iterator[Any], buffer_size: int = 2) -> Iterator[Any]:
    """Builds the next batches in a background thread while the device computes.

    Exceptions in the producer (a broken file, say) are re-raised in the consumer.
    """
    items: queue.Queue = queue.Queue(maxsize=buffer_size)
    done = object()

    def produce():
        try:
            for item in iterator:
                items.put(item)
        except BaseException as error:  # Re-raised in the consumer thread.
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = items.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
