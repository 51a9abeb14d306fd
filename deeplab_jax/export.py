"""Command line: export a trained checkpoint as a `jax.export` module.

    python -m deeplab_jax.export --config=configs/synthetic.py --workdir=RUN_DIR \
        --output=model.jaxexport [--height=513 --width=513] [--step=N]

What the export holds, its input convention and how to load it: `inference/export.py`.
(`load_exported` is importable from here too, as it was before that module existed.)
"""
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from deeplab_jax import config_lib, errors
from deeplab_jax.inference.export import DEFAULT_PLATFORMS, export
from deeplab_jax.inference.export import load_exported  # noqa: F401  (the older import path)
from deeplab_jax.reporting.command_line import start_command


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Path to the run's config file.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The trained run's folder (its checkpoints/).")
    flags.DEFINE_string("output", None, "The export file, e.g. model.jaxexport; its "
                        "description goes to OUTPUT.json.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_integer("height", None, "Input height (default: config.data.canvas_size).")
    flags.DEFINE_integer("width", None, "Input width (default: config.data.canvas_size).")
    flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS),
                      "Platforms to lower for: cpu, cuda, rocm, tpu.")
    flags.mark_flags_as_required(["config", "workdir", "output"])


def main(argv: Sequence[str]) -> None:
    start_command(argv)
    FLAGS = flags.FLAGS
    export(config_lib.config_from_flag(FLAGS["config"]), FLAGS.workdir, FLAGS.output,
           step=FLAGS.step, height=FLAGS.height, width=FLAGS.width, platforms=FLAGS.platforms)


if __name__ == "__main__":
    define_flags()
    errors.run_app(main, "python -m deeplab_jax.export")
