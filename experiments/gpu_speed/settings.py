"""What the GPU benchmark measures: its settings, constants, and the synthetic batch.

A setting is DEPTH/OS/DTYPE[/IMPL], e.g. `101/16/bfloat16/xla`: ResNet depth, output
stride, compute dtype and (ours only) the atrous convolution implementation.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from deeplab_jax.models.atrous import ATROUS_IMPLS
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, VALID_OUTPUT_STRIDES

PEAK_TFLOPS = 790.0  # measured dense bf16 on the H200 (shared/notes/performance.md)
DTYPES = ("bfloat16", "float32")
NUM_CLASSES = 21  # PASCAL VOC
IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class Setting:
    depth: int
    output_stride: int
    dtype: str
    atrous_impl: str = "xla"

    @property
    def name(self) -> str:
        return f"{self.depth}/{self.output_stride}/{self.dtype}/{self.atrous_impl}"

    @property
    def torch_key(self) -> str:
        """torchvision's row: the setting without our atrous impl."""
        return f"{self.depth}/{self.output_stride}/{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> "Setting":
        parts = text.strip().split("/")
        if len(parts) not in (3, 4):
            raise ValueError(f"setting {text!r}: want DEPTH/OS/DTYPE[/IMPL], e.g. "
                             "101/16/bfloat16/xla")
        setting = cls(int(parts[0]), int(parts[1]), parts[2], *parts[3:])
        if setting.dtype not in DTYPES:
            raise ValueError(f"setting {text!r}: dtype must be one of {DTYPES}")
        if setting.atrous_impl not in ATROUS_IMPLS:
            raise ValueError(f"setting {text!r}: atrous impl must be one of {ATROUS_IMPLS}")
        if setting.output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"setting {text!r}: output stride must be one of "
                             f"{VALID_OUTPUT_STRIDES}")
        if setting.depth not in UNITS_PER_BLOCK:
            raise ValueError(f"setting {text!r}: depth must be one of {sorted(UNITS_PER_BLOCK)}")
        return setting


def multi_grid(depth: int) -> tuple[int, ...]:
    """The paper's (1, 2, 4) where block4 has 3 units; 1s for the test-sized depths."""
    units = UNITS_PER_BLOCK[depth][3]
    return (1, 2, 4) if units == 3 else (1,) * units


def synthetic_host_batch(batch: int, canvas: int, num_classes: int,
                         seed: int = 0) -> dict[str, Any]:
    """A host batch as input_pipeline makes it: uint8 canvases, 5% ignored labels, sizes."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    shape = (batch, canvas, canvas)
    labels = rng.integers(0, num_classes, shape, dtype=np.uint8)
    labels[rng.random(shape) < 0.05] = IGNORE_LABEL
    return {"image": rng.integers(0, 256, shape + (3,), dtype=np.uint8), "label": labels,
            "size": np.full((batch, 2), canvas, np.int32)}
