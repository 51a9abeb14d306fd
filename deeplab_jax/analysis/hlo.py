"""What a compiled XLA program is made of: op counts and the convolutions it runs.

Reads the text of an optimized HLO module (`jax.stages.Compiled.as_text()`), so it works on
any backend and needs nothing but the string. Used by the GPU benchmark and the atrous
convolution benchmark (experiments/gpu_speed) to check how XLA lowered a training step:
whether a dilated 3x3 stayed a native dilated convolution (its window keeps `rhs_dilate`),
and whether layout changes (transposes, copies) crept in around the convolutions.
"""
from __future__ import annotations

import collections
import re
from typing import Any

CENSUS_OPS = ("fusion", "convolution", "custom-call", "transpose", "copy", "all-reduce")
_OPCODE = re.compile(r" = [^=]*?\b([a-z][a-z0-9-]*)\(")
_CONV_LINE = re.compile(r"(convolution\(|custom-call\()")
_WINDOW = re.compile(r"window=\{([^}]*)\}")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def conv_lowerings(hlo_text: str) -> list[str]:
    """The distinct convolutions of an optimized HLO module: kind and window, in order.

    On GPU a cuDNN convolution is a custom-call with target `__cudnn$conv...`; its window
    shows the kernel size and any rhs_dilate it kept. On CPU it is a `convolution`.
    """
    found = []
    for line in hlo_text.splitlines():
        if not _CONV_LINE.search(line):
            continue
        window = _WINDOW.search(line)
        if window is None:
            continue
        target = _TARGET.search(line)
        entry = f"{target.group(1) if target else 'convolution'} {window.group(1)}"
        if entry not in found:
            found.append(entry)
    return found


def census(hlo_text: str) -> dict[str, Any]:
    """Instruction counts by opcode (`CENSUS_OPS`) and the distinct convolution windows.

    Fusions, convolutions and cuDNN custom-calls; transposes and copies, which NHWC
    throughout should keep near zero; all-reduces, one per gradient bucket under data
    parallelism.
    """
    ops = collections.Counter()
    for line in hlo_text.splitlines():
        match = _OPCODE.search(line)
        if match and match.group(1) in CENSUS_OPS:
            ops[match.group(1)] += 1
    return {"ops": {op: ops.get(op, 0) for op in CENSUS_OPS},
            "conv_lowerings": conv_lowerings(hlo_text)}
