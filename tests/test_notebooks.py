"""Executes every notebook in experiments/notebooks/ so that none of them rots.

Each notebook runs in a fresh kernel of this interpreter (an ipykernel kernelspec written to a
temporary folder, so a user-level 'python3' kernelspec pointing elsewhere cannot be picked
up), with the notebooks' folder as working directory and a timeout per cell. A notebook fails
the test on any error, and it must write its PNG figures (`NN_*.png`) to the folder given by
DEEPLAB_NOTEBOOK_FIGURES, here a temporary one, so the test leaves the checkout untouched.

To refresh the committed notebooks (outputs embedded) and figures in place:

    DEEPLAB_NOTEBOOKS_WRITE=1 python -m pytest -q tests/test_notebooks.py
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
KERNEL_NAME = "deeplab-jax-tests"
CELL_TIMEOUT_S = 300
WRITE = os.environ.get("DEEPLAB_NOTEBOOKS_WRITE") == "1"
# The figures each notebook must write (more may be written; all must be NN_*.png).
EXPECTED_FIGURES = {
    "01": ["01_valid_weights_vs_rate.png", "01_valid_tap_maps.png"],
    "02": ["02_erf_maps.png", "02_erf_profiles.png", "02_cascade_receptive_field.png"],
    "03": ["03_gridding_masks.png", "03_block4_path_weights.png"],
    "04": ["04_output_sizes_table.png", "04_aligned_corners_error.png",
           "04_cascade_sizes_table.png"],
}


def _kernel_env() -> dict[str, str]:
    """The kernel's environment: JAX on the CPU, the test suite's rank-promotion rule, and no
    simulated devices (conftest.py adds 8 to XLA_FLAGS for this process only)."""
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "").strip()
    return {"JAX_PLATFORMS": "cpu", "JAX_NUMPY_RANK_PROMOTION": "raise", "XLA_FLAGS": flags}


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """{PNG name: (mtime in ns, inode)}: what changes when a file is written anew."""
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_ino)
            for path in folder.glob("*.png")} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec that runs this interpreter (the venv's) with ipykernel."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir()
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "deeplab_jax tests", "language": "python", "env": _kernel_env()}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    manager = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    assert manager.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return manager


def test_there_are_notebooks():
    assert [path.name[:2] for path in NOTEBOOKS] == sorted(EXPECTED_FIGURES)
    assert set(SLOW_NOTEBOOKS) <= {path.stem for path in NOTEBOOKS}  # a rename is not a skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_states_its_question_and_answer(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    question, answer = (first.source.split(marker, 1)[1].split("**", 1)[0].strip()
                        for marker in ("**Question.**", "**Answer.**"))
    assert len(question) > 50 and len(answer) > 50
    assert "TBD" not in answer
    assert nb.metadata.kernelspec.name == "python3"


# The two that build and differentiate real models take ~20 s each, the first 7 s: -m slow
# runs them; 04 (output-size arithmetic) stays in the default suite.
SLOW_NOTEBOOKS = ("01_valid_weights_vs_rate", "02_effective_receptive_field", "03_gridding")


@pytest.mark.parametrize("path", [
    pytest.param(path, marks=pytest.mark.slow) if path.stem in SLOW_NOTEBOOKS else path
    for path in NOTEBOOKS], ids=[path.stem for path in NOTEBOOKS])
def test_notebook_executes_and_writes_its_figures(path, kernel_spec_manager, tmp_path,
                                                  monkeypatch):
    figures = NOTEBOOKS_DIR / "figures" if WRITE else tmp_path / "figures"
    # The kernel inherits this process's environment, plus the kernelspec's env.
    monkeypatch.setenv("DEEPLAB_NOTEBOOK_FIGURES", str(figures))
    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False, record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    before = _stamps(figures)
    start = time.time()
    # Raises CellExecutionError, with the cell and traceback, on any error. cleanup_kc: shut
    # the kernel down afterwards (nbclient keeps kernels alive whose manager it did not make).
    client.execute(cleanup_kc=True)
    assert not km.has_kernel
    elapsed = time.time() - start

    prefix = path.name[:2]
    written = {name for name, stamp in _stamps(figures).items() if before.get(name) != stamp}
    for name in EXPECTED_FIGURES[prefix]:
        assert name in written, f"{path.name} did not write {figures / name}"
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(name.startswith(prefix + "_") for name in written), written
    # Every figure is also shown in the notebook: outputs carry the rendered PNGs.
    images = [output for cell in nb.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(images) >= len(EXPECTED_FIGURES[prefix])
    if WRITE:
        nbformat.write(nb, path)
        assert path.stat().st_size < 300_000, f"{path.name} is {path.stat().st_size} bytes"
    print(f"{path.name}: {elapsed:.1f} s")
