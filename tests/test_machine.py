"""The machine a figure names: AMD's generation from the CPU family, in one line."""
import pytest

from deeplab_jax.reporting import machine

ZEN3_FLAGS = "fpu sse2 avx avx2 fma hypervisor"
ZEN5_FLAGS = "fpu sse2 avx avx2 fma avx512f avx512_bf16 hypervisor"


@pytest.mark.parametrize("family,flags,core", [
    ("25", ZEN3_FLAGS, "Zen 3"), ("25", ZEN5_FLAGS, "Zen 4"), ("26", ZEN5_FLAGS, "Zen 5"),
    ("23", ZEN3_FLAGS, "Zen/Zen 2")])
def test_amd_epyc_names_its_generation(monkeypatch, family, flags, core):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {
        "vendor_id": "AuthenticAMD", "cpu family": family, "model": "1",
        "model name": "AMD EPYC", "flags": flags})
    described = {**machine.cpu_description(), "cpu_cores": 2, "jax": "0.10.2", "xla_flags": ""}
    assert described["cpu_core"] == core
    line = machine.summary(described)
    assert line.startswith(f"AMD EPYC ({core}), 2 cores (")
    assert "VM" in line and line.endswith("JAX 0.10.2; XLA_FLAGS=(none)")


def test_other_vendors_name_no_generation(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {
        "vendor_id": "GenuineIntel", "cpu family": "6", "model name": "Intel Xeon",
        "flags": "avx2 fma"})
    described = machine.cpu_description()
    assert described["cpu_core"] == "" and described["cpu_isa"] == ["avx2", "fma"]
    assert machine.summary(described).startswith("Intel Xeon, ")
