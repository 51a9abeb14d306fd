"""Test set-up: 8 simulated CPU devices, set before anything imports jax, and one
compilation cache for the whole session.

Most of the suite's time is XLA compiling the same tiny train and eval steps again in
test after test (and in the subprocesses the end-to-end tests start). A persistent
compilation cache shared by the session and its subprocesses compiles each program once;
a cached executable is the same program, so the numbers are the same bits (measured: 185
s -> 114 s for the end-to-end, train-step, non-finite and CRF tests on a 2-core AMD EPYC).
A cache the user already set (JAX_COMPILATION_CACHE_DIR) is used and left in place.

The README runs the suite in two worker processes (`pytest -n 2`, pytest-xdist). The workers
start after this file has run in the controlling process, so they inherit its cache folder
and share it. The cache writes entries without a lock unless it has a size limit, and the
limit's lock made the suite slower (4m38s against 2m50s on 2 Zen 5 cores): a worker that
reads an entry another is still writing gets a truncated, undecompressable entry, which
JAX turns into a warning and a fresh compilation (`_cache_read` in jax/_src/compiler.py):
slower once, never a wrong program.
"""
import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache_dir = tempfile.mkdtemp(prefix="deeplab_jax_test_cache_")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    # Environment variables, not jax.config: subprocesses started by tests inherit them.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache_dir,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402  (must come after the environment is set)

jax.config.update("jax_numpy_rank_promotion", "raise")
