"""`python -m deeplab_jax.curves --workdir=DIR`: redraws a run's training curve.

A short alias of `python -m deeplab_jax.reporting.curves`, where the code lives.
"""
from deeplab_jax.reporting.curves import run_command

if __name__ == "__main__":
    run_command()
