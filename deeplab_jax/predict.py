"""Predictions of a trained model on any image, folder or glob, at the image's own resolution.

    python -m deeplab_jax.predict --config=configs/synthetic.py --workdir=RUN_DIR \
        --input=photos/ --output=/tmp/predictions [--step=N] [--config.eval.flip=True]

`--input` is one image, a folder (its images, not recursive) or a glob pattern
('photos/**/*.jpg'). For each image the command writes into `--output`:

- `NAME.png`: the label map as a palette PNG whose pixel values are the class indices
  (`visualize.load_indexed_png` reads them back; viewers show the dataset's colours);
- `NAME_color.png`: the colourised label map;
- `NAME_overlay.png`: the labels blended over the image, with a legend of the classes present.

Each image is predicted at its own size (`inference/predictor.py`); the files are written by
`inference/files.py`. This module is the command line only.
"""
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from deeplab_jax import config_lib, errors
from deeplab_jax.inference import files
from deeplab_jax.reporting.command_line import start_command


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Path to the run's config file.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The trained run's folder (its checkpoints/).")
    flags.DEFINE_string("input", None, "An image, a folder of images or a glob pattern.")
    flags.DEFINE_string("output", None, "Folder for NAME.png, NAME_color.png, "
                        "NAME_overlay.png.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_integer("batch_size", 4, "Images of one padded size predicted together.")
    flags.mark_flags_as_required(["config", "workdir", "input", "output"])


def main(argv: Sequence[str]) -> None:
    start_command(argv)
    FLAGS = flags.FLAGS
    files.predict(config_lib.config_from_flag(FLAGS["config"]), FLAGS.workdir, FLAGS.input,
                  FLAGS.output, step=FLAGS.step, batch_size=FLAGS.batch_size)


if __name__ == "__main__":
    define_flags()
    errors.run_app(main, "python -m deeplab_jax.predict")
