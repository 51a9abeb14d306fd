"""Device mesh and shardings: data parallelism over every device of every host.

The design's "pmap" in today's JAX idiom: one `jax.jit` over a 1-D mesh with axis `data`.
The batch is sharded along its first axis, the train state is replicated. Inside the jitted
step every array is global, so BatchNorm's batch mean and variance are taken over the global
batch (XLA inserts the all-reduce), with no `pmean` and no `axis_name`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from deeplab_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Shards an array's leading (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch_size(global_batch_size: int, mesh: Mesh,
                            name: str = "config.data.batch_size") -> None:
    """Raises before anything compiles if the batch cannot be split evenly.

    Over the devices, and so over the processes too: every process has the same number of
    devices, and each loads the rows of its own devices.
    """
    if global_batch_size % mesh.size:
        raise ConfigError(
            f"The global batch size {global_batch_size} ({name}) is not divisible by the "
            f"{mesh.size} devices ({jax.process_count()} process(es)); set {name} to a "
            f"multiple of {mesh.size}.")


def host_local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch."""
    if global_batch_size % jax.process_count():
        raise ValueError(
            f"The global batch size {global_batch_size} is not divisible by the "
            f"{jax.process_count()} processes.")
    return global_batch_size // jax.process_count()


def to_global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's rows into global arrays sharded over the batch axis."""
    sharding = data_sharding(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in host_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree on every device (identical on every process)."""
    return jax.device_put(tree, replicated_sharding(mesh))
