"""Command line: train (resuming from WORKDIR's latest checkpoint) or evaluate a checkpoint.

    python -m deeplab_jax.main --config=configs/voc.py --workdir=DIR
    python -m deeplab_jax.main --config=configs/voc.py --workdir=DIR --mode=eval \
        --config.eval.output_stride=8

Any config field can be overridden with --config.FIELD=VALUE; the config is locked, so a
mistyped field is an error, not a silently ignored flag. Config files are Python and run as
code: only use config files you trust.
"""
from absl import app, flags
from ml_collections import config_flags

from deeplab_jax import cli, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, logs and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train and evaluate (resumes from the latest checkpoint); "
                  "eval: evaluate a checkpoint of WORKDIR without training.")
flags.DEFINE_integer("step", None, "With --mode=eval: the checkpoint step (default: latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.start(argv)
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)


if __name__ == "__main__":
    app.run(main)
