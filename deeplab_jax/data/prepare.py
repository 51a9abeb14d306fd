"""Prepares a dataset's TFDS files ahead of training (training also does it on first use).

    python -m deeplab_jax.data.prepare --dataset=voc            # downloads VOC 2012 + SBD
    python -m deeplab_jax.data.prepare --dataset=voc --manual_dir=/data/archives
    python -m deeplab_jax.data.prepare --dataset=camvid --manual_dir=../shared/data/camvid

Then train with the same --config.data.tfds_data_dir (default: ~/tensorflow_datasets).
"""
from absl import app, flags

from deeplab_jax import errors
from deeplab_jax.reporting.command_line import start_command
from deeplab_jax.data import datasets, tfds_source

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, datasets.tfds_datasets(),
                  "The dataset (config.data.name).")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None,
                    "Folder with the archives (VOC) or the CamVid folder, for machines "
                    "without internet.")
flags.mark_flags_as_required(["dataset"])


def main(argv):
    start_command(argv)
    builder = tfds_source.load_builder(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir)
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"{builder.name} {builder.version} is ready in {builder.data_dir}: {splits}")


if __name__ == "__main__":
    errors.run_app(main, "python -m deeplab_jax.data.prepare")
