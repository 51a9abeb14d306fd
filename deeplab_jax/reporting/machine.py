"""The machine a figure was measured on: every recorded time or throughput names it.

The same training step ran about 4x faster on one 2-core machine than on another (an AMD
Zen 5 with AVX-512 against a Zen 3 with AVX2, both under KVM, both named "AMD EPYC"), so a
time without its machine cannot be compared with anything, and the model name alone does
not tell the two apart: the CPU family does. `describe()` is what `timing.json`, the benchmarks and the
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


def _amd_core(family: str, flags: set[str]) -> str:
    """AMD's core generation from the CPU family (the model name of a VM often omits it)."""
    if family == "23":
        return "Zen/Zen 2"
    if family == "25":  # Zen 4 added AVX-512
        return "Zen 4" if "avx512f" in flags else "Zen 3"
    return "Zen 5" if family == "26" else ""


def cpu_description() -> dict[str, Any]:
    """{'cpu': model name, 'cpu_family'/'cpu_model', 'cpu_core' (AMD's generation),
    'cpu_cores': usable cores, 'cpu_isa': [vector extensions], 'hypervisor'}."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    family = info.get("cpu family", "")
    amd = info.get("vendor_id") == "AuthenticAMD"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_family": family, "cpu_model": info.get("model", ""),
            "cpu_core": _amd_core(family, flags) if amd else "",
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
    """One line: 'AMD EPYC (Zen 5), 2 cores (avx512f, avx2, fma; VM); JAX 0.10.2; XLA_FLAGS=...'."""
    isa = ", ".join(machine.get("cpu_isa") or []) or "no AVX2"
    vm = "; VM" if machine.get("hypervisor") else ""
    core = f" ({machine['cpu_core']})" if machine.get("cpu_core") else ""
    line = f"{machine.get('cpu')}{core}, {machine.get('cpu_cores')} cores ({isa}{vm})"
    if machine.get("platform") and machine["platform"] != "cpu":
        line += f"; {machine.get('device_kind')} x{machine.get('device_count')}"
    line += f"; JAX {machine.get('jax')}"
    return line + f"; XLA_FLAGS={machine.get('xla_flags') or '(none)'}"
