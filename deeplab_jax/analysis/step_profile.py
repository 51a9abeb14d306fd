"""What one training step costs: XLA's FLOPs, memory, and measured time, on one device.

Used by the output-stride ablation (experiments/output_stride) to put compute and memory
beside accuracy. Everything comes from the compiled step itself:

- FLOPs: XLA's cost analysis of the compiled executable (every multiply-add counted twice,
  the atrous zeros not counted when XLA keeps the dilation native).
- Memory: XLA's buffer assignment (`memory_analysis`): arguments (parameters, optimizer state,
  the batch) + outputs - donated aliases + temporaries (activations kept for the backward
  pass, workspace). Compiling at two batch sizes separates a fixed part from a per-image
  part, which is what choosing a batch size needs; on a GPU the allocator's measured peak
  is reported too.
- Time: the median of timed steps after warm-up, each waited for, on data already on the
  device (the input path is measured by experiments/input_throughput).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from deeplab_jax import parallel
from deeplab_jax.analysis import xla_cost
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.models import get_model


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int,
                    num_classes: int) -> dict[str, np.ndarray]:
    """A host batch of the config's canvas: random pixels and labels, true size = canvas."""
    height, width = config.data.canvas_size
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (batch_size, height, width, 3), np.uint8),
            "label": rng.integers(0, num_classes, (batch_size, height, width), np.uint8),
            "size": np.tile(np.array([height, width], np.int32), (batch_size, 1))}


def compile_train_step(config: ml_collections.ConfigDict, num_classes: int, batch_size: int,
                       mesh: Mesh, *, donate_state: bool = True):
    """`config`'s train step compiled at `batch_size`: (compiled, state, synthetic batch).

    Compiling needs no accelerator of the kind the numbers are for: XLA's FLOPs and memory
    plan of a full-size step can be read on CPU (experiments/gpu_session.md does).
    `donate_state=False` measures what donating the state's buffers gives (see
    `training/step.py: jit_train_step`).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.batch_size = batch_size
    model = get_model(config.model, num_classes)
    optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
    replicated = parallel.replicated_sharding(mesh)
    state = jax.jit(train_step_lib.create_train_state, static_argnums=(1, 2, 3),
                    out_shardings=replicated)(jax.random.key(0), model, optimizer,
                                              tuple(config.data.crop_size))
    batch = parallel.to_global_batch(synthetic_batch(config, batch_size, num_classes), mesh)
    step = train_step_lib.jit_train_step(config, replicated, parallel.data_sharding(mesh),
                                         donate_state=donate_state)
    return step.lower(state, batch, jax.random.key(1)).compile(), state, batch


def time_train_steps(compiled, state, batch, steps: int, warmup: int,
                     seed: int = 2) -> list[float]:
    """Seconds of each of `steps` calls of a compiled train step after `warmup` untimed
    ones, each waited for (`block_until_ready`); the state is threaded through (donated)."""
    rngs = jax.random.split(jax.random.key(seed), warmup + steps)
    times = []
    for index in range(warmup + steps):
        begin = time.perf_counter()
        state, metrics = compiled(state, batch, rngs[index])
        jax.block_until_ready((state, metrics))
        if index >= warmup:
            times.append(time.perf_counter() - begin)
    return times


def profile_train_step(config: ml_collections.ConfigDict, num_classes: int, *,
                       steps: int = 5, warmup: int = 2,
                       device: Optional[jax.Device] = None) -> dict[str, Any]:
    """Profiles `config`'s training step at its batch size on one device.

    Returns:
      flops_per_step, flops_per_image, step_ms (median), images_per_second, compile_s,
      memory (`xla_cost.memory` at the batch size), memory_per_image and memory_fixed (from a
      second compilation at twice the batch: total = fixed + per_image * batch), and
      peak_bytes_in_use where the device reports it (GPUs; None on CPU).
    """
    device = device or jax.devices()[0]
    mesh = Mesh(np.asarray([device]), (parallel.DATA_AXIS,))
    batch_size = config.data.batch_size
    start = time.perf_counter()
    compiled, state, batch = compile_train_step(config, num_classes, batch_size, mesh)
    compile_s = time.perf_counter() - start
    flops, memory = xla_cost.flops(compiled), xla_cost.memory(compiled)

    step_s = statistics.median(time_train_steps(compiled, state, batch, steps, warmup))

    doubled, _, _ = compile_train_step(config, num_classes, 2 * batch_size, mesh)
    doubled_memory = xla_cost.memory(doubled)
    per_image = fixed = None
    if memory and doubled_memory:
        per_image = (doubled_memory["total"] - memory["total"]) / batch_size
        fixed = memory["total"] - per_image * batch_size
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "batch_size": batch_size,
        "flops_per_step": flops,
        "flops_per_image": flops / batch_size if flops else None,
        "step_ms": 1e3 * step_s,
        "images_per_second": batch_size / step_s,
        "compile_s": compile_s,
        "memory": memory,
        "memory_per_image": per_image,
        "memory_fixed": fixed,
        "peak_bytes_in_use": (stats or {}).get("peak_bytes_in_use"),
        "device": device.device_kind,
    }


def max_batch_size(profile: dict[str, Any], device_bytes: float) -> Optional[int]:
    """The largest batch whose XLA-estimated memory fits `device_bytes` (one device)."""
    per_image, fixed = profile.get("memory_per_image"), profile.get("memory_fixed")
    if not per_image or per_image <= 0 or fixed is None:
        return None
    return max(0, int((device_bytes - fixed) // per_image))
