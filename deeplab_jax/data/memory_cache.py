"""Examples kept in host memory once read: a small dataset decoded and resized once, not
once per epoch.

`config.data.cache_mib = 256` wraps a split's source (after `rescale.py`'s resizing) in
`CachedSource`: the first read of an example decodes it as before, later reads return the
arrays kept from the first. CamVid read at a quarter of the resolution (the CPU protocol's
`image_scale=0.25`) is 15 MiB for its 367 training images, and decoding a 360x480 pair and
shrinking it costs about 3.3 ms an example (one thread of a 2-core Zen 4,
`experiments/input_throughput`): at the small models' 15-25 steps a second (batch 8), half a
core or more, taken from the training step. The batches
are the same with the cache and without it (`tests/test_memory_cache.py`): a kept example is
the first read's arrays, made read-only so that nothing downstream can change them.

When the next example would take the cache past its budget it is returned but not kept: a
dataset larger than `cache_mib` is partly cached, never an out-of-memory error. 0 (the
default) turns the cache off.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from deeplab_jax import errors

MIB = 2**20


def _read_only(value: Any) -> Any:
    """A read-only copy of an array (the source's own buffers stay as they were)."""
    if isinstance(value, np.ndarray):
        value = value.copy()
        value.setflags(write=False)
    return value


class CachedSource:
    """`source` whose examples are kept after their first read, up to `max_mib` MiB in all.

    Other attributes (`files`, `class_names`, `num_classes`, ...) pass through. Safe under
    the input pipeline's decoding threads: two threads reading one uncached example both
    decode it, and the first to finish is kept.
    """

    def __init__(self, source, max_mib: float):
        if not max_mib > 0:
            raise errors.ConfigError(
                f"config.data.cache_mib={max_mib!r} must be > 0 to cache examples (or 0 for no "
                "cache): set e.g. --config.data.cache_mib=256.")
        self._source = source
        self._max_bytes = int(max_mib * MIB)
        self._examples: dict[int, dict[str, Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def wrapped(self):
        return self._source

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        kept = self._examples.get(index)
        if kept is not None:
            return dict(kept)
        example = {key: _read_only(value) for key, value in self._source[index].items()}
        size = sum(value.nbytes for value in example.values() if isinstance(value, np.ndarray))
        with self._lock:
            if index not in self._examples and self._bytes + size <= self._max_bytes:
                self._examples[index] = example
                self._bytes += size
        return dict(example)

    def __repr__(self) -> str:
        return (f"CachedSource({self._source!r}, {len(self._examples)} of {len(self)} examples "
                f"kept, {self._bytes / MIB:.1f} of {self._max_bytes / MIB:g} MiB)")
