"""The machine a figure was measured on: every recorded time or throughput names it.

The same training step ran 4x faster on one 2-core machine than on another (an AVX-512
Intel against a Zen 3 with AVX2 under KVM), so a time without its machine cannot be
compared with anything. `describe()` is what `timing.json`, the benchmarks and the
experiments' results record: the CPU model, its core count and vector extensions, the
accelerator, the JAX version and the XLA flags.
"""
from __future__ import annotations

import os
import platform
from typing import Any

# Vector extensions that decide XLA's CPU convolution speed, in the order we report them.
_ISA_FLAGS = ("avx512f", "avx512_bf16", "avx2", "fma")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} elsewhere than Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_description() -> dict[str, Any]:
    """{'cpu': model name, 'cpu_cores': usable cores, 'cpu_isa': [vector extensions]}."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_cores": cores,
            "cpu_isa": [flag for flag in _ISA_FLAGS if flag in flags],
            "hypervisor": "hypervisor" in flags}


def describe() -> dict[str, Any]:
    """The machine and software of this process: CPU, accelerator, JAX, XLA flags."""
    import jax  # pylint: disable=import-outside-toplevel
    import jaxlib  # pylint: disable=import-outside-toplevel

    device = jax.devices()[0]
    return {**cpu_description(),
            "platform": device.platform, "device_kind": device.device_kind,
            "device_count": jax.device_count(), "process_count": jax.process_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "python": platform.python_version()}


def summary(machine: dict[str, Any]) -> str:
    """One line: 'AMD EPYC, 2 cores (avx512f, avx2, fma; VM); cpu x1; JAX 0.10.2; XLA_FLAGS=...'."""
    isa = ", ".join(machine.get("cpu_isa") or []) or "no AVX2"
    vm = "; VM" if machine.get("hypervisor") else ""
    line = f"{machine.get('cpu')}, {machine.get('cpu_cores')} cores ({isa}{vm})"
    if machine.get("platform") and machine["platform"] != "cpu":
        line += f"; {machine.get('device_kind')} x{machine.get('device_count')}"
    line += f"; JAX {machine.get('jax')}"
    return line + f"; XLA_FLAGS={machine.get('xla_flags') or '(none)'}"
