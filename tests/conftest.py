"""Test set-up: 8 simulated CPU devices, set before anything imports jax."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402  (must come after the environment is set)

jax.config.update("jax_numpy_rank_promotion", "raise")
