"""What XLA says a compiled executable costs: FLOPs and planned memory.

Plain functions over `jax.stages.Compiled`, with no other dependency, so the benchmark
scripts can use them on a machine that has JAX alone. Both analyses are best-effort in XLA
(a backend may not implement them): they return None rather than fail a measurement.
"""
from __future__ import annotations

from typing import Any, Optional

MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                 "temp_size_in_bytes", "peak_memory_in_bytes")


def flops(compiled: Any) -> Optional[float]:
    """FLOPs by XLA's cost analysis (a multiply-add counts 2); None where unavailable.

    `cost_analysis()` returns a dict in current JAX and a one-element list in older ones.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # pylint: disable=broad-except  # not implemented on some backends
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    value = (analysis or {}).get("flops")
    return float(value) if value is not None and value >= 0 else None


def memory(compiled: Any) -> Optional[dict[str, int]]:
    """XLA's buffer assignment: the `MEMORY_FIELDS` it reports, plus `total`.

    total = arguments + outputs - aliased (donated) + temporaries: what the executable holds
    at once by XLA's plan (`peak_memory_in_bytes`, where reported, refines it).
    """
    try:
        stats = compiled.memory_analysis()
    except Exception:  # pylint: disable=broad-except
        return None
    if stats is None:
        return None
    sizes = {name: int(getattr(stats, name)) for name in MEMORY_FIELDS if hasattr(stats, name)}
    sizes["total"] = (sizes["argument_size_in_bytes"] + sizes["output_size_in_bytes"]
                      - sizes["alias_size_in_bytes"] + sizes["temp_size_in_bytes"])
    return sizes
