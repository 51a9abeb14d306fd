"""Command line: train (resuming from WORKDIR's latest checkpoint) or evaluate a checkpoint.

    python -m deeplab_jax.main --config=configs/voc.py --workdir=DIR
    python -m deeplab_jax.main --config=configs/voc.py --workdir=DIR --mode=eval \
        --config.eval.output_stride=8

Any config field can be overridden with --config.FIELD=VALUE; the config is locked, so a
mistyped field is an error, not a silently ignored flag. Config files are Python and run as
code: only use config files you trust.

Several hosts (or several processes on one host): start the same command once per process
with the jax.distributed flags, the same --workdir (a folder every process sees) and
process ids 0..N-1; process 0 runs the coordination service on the given port:

    python -m deeplab_jax.main --config=... --workdir=DIR \
        --coordinator_address=HOST0:PORT --num_processes=N --process_id=I

On SLURM, Open MPI or TPU pods, --distributed alone lets JAX detect the three values (so
does the JAX_COORDINATOR_ADDRESS environment variable with the other two flags).

Exit status: 0 when the run finished, EXIT_PREEMPTED (75) after a SIGTERM or preemption
notice once the checkpoint of the current step is complete (rerun the same command to
continue), 1 on errors.
"""

from absl import flags
from ml_collections import config_flags

from deeplab_jax import config_lib, errors, train
from deeplab_jax.reporting.command_line import start_command
from deeplab_jax.training import preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, logs and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train and evaluate (resumes from the latest checkpoint); "
                  "eval: evaluate a checkpoint of WORKDIR without training.")
flags.DEFINE_integer("step", None, "With --mode=eval: the checkpoint step (default: latest).")
flags.DEFINE_string("coordinator_address", None,
                    "jax.distributed: HOST:PORT of process 0's coordination service.")
flags.DEFINE_integer("num_processes", None, "jax.distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "jax.distributed: this process's index, 0..N-1.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() even without the three flags above, "
                  "letting JAX detect them (SLURM, Open MPI, TPU, JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                     "jax.distributed: a process silent this long (killed, hung) makes the "
                     "others abort instead of waiting forever.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    start_command(argv)
    config = config_lib.config_from_flag(FLAGS["config"])  # before jax.distributed starts
    preemption.maybe_initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
        auto_detect=FLAGS.distributed,
        heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)  # Preempted: errors.run_app, 75
    else:
        train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.step)


if __name__ == "__main__":
    errors.run_app(main, "python -m deeplab_jax.main")
