"""`python -m deeplab_jax.pretrained convert SRC DST.npz --depth=N`: TF-slim weights -> .npz.

A short alias of `python -m deeplab_jax.models.pretrained`, where the code lives.
"""
import sys

from deeplab_jax import errors
from deeplab_jax.models.pretrained import run_command

if __name__ == "__main__":
    errors.run_command(lambda: run_command(sys.argv), "python -m deeplab_jax.pretrained")
