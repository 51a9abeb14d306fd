"""`python -m deeplab_jax.main` with fault injection and a record of the data consumed.

    python tests/fault_harness.py --config=configs/tiny.py --workdir=DIR [main's flags]

Used by tests/test_faults.py as a real subprocess. The faults are real: the process sends
itself SIGKILL (no clean-up, no `finally`, no atexit) at a chosen point, chosen with the
environment variable DEEPLAB_FAULT="<point>:<n>" (the n-th occurrence, 1-based):

  step      the n-th training step has been dispatched and the device is computing it
  save      the n-th checkpoint save has started: orbax is writing it in the background
  finalize  in the n-th save, every array is written but the step is not yet renamed
  delete    in the n-th deletion of an old checkpoint, after about half of its files

DEEPLAB_RECORD_EXAMPLES=FILE appends one JSON line per training batch the loop consumes:
the dataset indices of this process's rows, found from the pixels themselves (not from
`input_pipeline.train_example_indices`, the function under test), and the process index.
"""
import json
import os
import signal
import sys

import numpy as np
from absl import app

from deeplab_jax import main
from deeplab_jax.training import checkpoint
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.data import datasets, input_pipeline

_counts: dict[str, int] = {}


def _kill_if(point: str) -> None:
    fault = os.environ.get("DEEPLAB_FAULT", "")
    if not fault:
        return
    name, _, nth = fault.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth):
        print(f"FAULT {point}:{nth}: SIGKILL", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _install_faults() -> None:
    jit_train_step = train_step_lib.jit_train_step

    def jit_with_fault(*args, **kwargs):
        step_fn = jit_train_step(*args, **kwargs)

        def run(*step_args):
            outputs = step_fn(*step_args)  # dispatched; the device computes asynchronously
            _kill_if("step")
            return outputs
        return run
    train_step_lib.jit_train_step = jit_with_fault

    save = checkpoint.save

    def save_with_fault(*args, **kwargs):
        save(*args, **kwargs)  # returns once the arrays are on the host; writes continue
        _kill_if("save")
    checkpoint.save = save_with_fault

    from orbax.checkpoint._src.path import atomicity, deleter
    for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
        for method in ("finalize", "finalize_async"):
            original = cls.__dict__.get(method)
            if original is None:
                continue

            def finalize_with_fault(self, *args, _original=original, **kwargs):
                _kill_if("finalize")
                return _original(self, *args, **kwargs)
            setattr(cls, method, finalize_with_fault)

    delete = deleter.PathDeleter.delete

    def delete_with_fault(self, path, *args, **kwargs):
        fault = os.environ.get("DEEPLAB_FAULT", "")
        if fault.startswith("delete:") and _counts.get("delete", 0) + 1 == int(fault[7:]):
            files = sorted(os.path.join(folder, name)
                           for folder, _, names in os.walk(str(path)) for name in names)
            for name in files[:len(files) // 2]:
                os.remove(name)
        _kill_if("delete")
        return delete(self, path, *args, **kwargs)
    deleter.PathDeleter.delete = delete_with_fault


def _install_recorder(path: str) -> None:
    sources = {}
    get_dataset = datasets.get_dataset

    def recording_get_dataset(data_config, split):
        source = get_dataset(data_config, split)
        sources[split] = (source, data_config.train_split)
        return source
    datasets.get_dataset = recording_get_dataset

    prefetch = input_pipeline.prefetch

    def recording_prefetch(iterator, *args, **kwargs):
        import jax  # after main's jax.distributed set-up

        (source, train_split), = [value for split, value in sources.items()
                                  if split == value[1]]
        by_pixels = {source[i]["image"].tobytes(): i for i in range(len(source))}
        for batch in prefetch(iterator, *args, **kwargs):
            ids = [by_pixels[batch["image"][row, :h, :w].tobytes()]
                   for row, (h, w) in enumerate(np.asarray(batch["size"]))]
            with open(path, "a") as file:
                file.write(json.dumps({"process": jax.process_index(), "ids": ids}) + "\n")
            yield batch
    input_pipeline.prefetch = recording_prefetch


if __name__ == "__main__":
    _install_faults()
    if os.environ.get("DEEPLAB_RECORD_EXAMPLES"):
        _install_recorder(os.environ["DEEPLAB_RECORD_EXAMPLES"])
    app.run(main.main)
