"""Real faults on real subprocesses: kill -9, SIGTERM, two processes through jax.distributed.

Every subprocess runs `tests/fault_harness.py` (the command line plus fault injection) under
a watchdog: a run that outlives its timeout fails the test, and every process a test
started is killed in a `finally`. The kill points are drawn at random; the seed is in each
failure message (rerun one with DEEPLAB_FAULT_SEED=<seed>).

The uninterrupted reference is the same command run once without faults (1 process, 8
simulated CPU devices): an interrupted and resumed run must end bit for bit equal to it
(parameters, optimizer state, BN statistics, step); 2 processes x 4 devices must end within
float tolerance of it. Slow variants (`-m slow`) repeat the faults at more random points.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from deeplab_jax.training import preemption
from deeplab_jax.data import input_pipeline
from checkpoint_arrays import load_checkpoint_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "tests", "fault_harness.py")
NUM_STEPS = 10
# lr 0.02 (tiny's 0.2 is chaotic: two reduction orders part after 2-3 steps, see
# COMPARED_STEPS); checkpoints every step, the latest two kept; evaluation at the end only.
OVERRIDES = {"num_train_steps": NUM_STEPS, "checkpoint_every_steps": 1,
             "eval_every_steps": 1000, "log_every_steps": 1, "max_checkpoints_to_keep": 2,
             "optim.base_learning_rate": 0.02}
# 2 processes x 4 devices vs 1 x 8: the same computation in another reduction order. The
# first steps agree to ~1e-6 of each array's scale; later, a tie broken the other way
# (max-pool routing, a ReLU at 0) makes them part, as 1 device vs 8 do even sooner. So
# the states are compared over the first steps, to the tolerance of test_train_step.py.
COMPARED_STEPS = (1, 2, 3)
RUN_TIMEOUT = 240  # seconds: a hang is a failure, never a stuck CI job


def _config():
    config = tiny.get_config()
    for key, value in OVERRIDES.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = value
    return config


def _seed():
    return int(os.environ.get("DEEPLAB_FAULT_SEED", random.randrange(2**31)))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


class Run:
    """One harness subprocess: its own process group, output in a file, a deadline."""

    def __init__(self, env, workdir, *flags, devices=8, fault=None, record=None):
        env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        if fault:
            env["DEEPLAB_FAULT"] = fault
        if record:
            env["DEEPLAB_RECORD_EXAMPLES"] = record
        self.log_path = f"{workdir}.{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        args = [sys.executable, HARNESS, "--config=configs/tiny.py", f"--workdir={workdir}",
                *(f"--config.{key}={value}" for key, value in OVERRIDES.items()), *flags]
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.deadline = time.monotonic() + RUN_TIMEOUT

    def output(self):
        with open(self.log_path) as file:
            return file.read()

    def tail(self):
        return self.output()[-3000:]

    def wait_for(self, text, timeout=RUN_TIMEOUT):
        """Waits until `text` is in the output; False if the process ended without it."""
        end = min(self.deadline, time.monotonic() + timeout)
        while time.monotonic() < end:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                return text in self.output()
            time.sleep(0.02)
        raise AssertionError(f"watchdog: no {text!r} within {timeout}s:\n{self.tail()}")

    def wait(self, timeout=None):
        remaining = self.deadline - time.monotonic() if timeout is None else timeout
        try:
            return self.process.wait(timeout=max(1.0, remaining))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"watchdog: still running after {remaining:.0f}s:\n"
                                 f"{self.tail()}") from None

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def harness_env(tmp_path_factory):
    """The subprocesses' environment: CPU, and a compilation cache they share (the first
    run compiles, the others load its executables: the same code, so the same bits)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DEEPLAB_", "XLA_FLAGS"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


@pytest.fixture
def start(harness_env):
    """start(workdir, *flags, **kwargs) -> Run; every process still alive at the end of the
    test is killed (process group, SIGKILL)."""
    started = []

    def start_run(*args, **kwargs):
        run = Run(harness_env, *args, **kwargs)
        started.append(run)
        return run
    yield start_run
    for run in started:
        run.kill()


_load = load_checkpoint_arrays


def _entries(workdir):
    """Everything in the checkpoint folder, complete steps or not."""
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")),
                  key=lambda name: (len(name), name))  # steps in numerical order


def _steps(workdir):
    """The complete checkpoints' steps, as strings, in order."""
    return sorted((name for name in _entries(workdir) if name.isdigit()), key=int)


def _assert_bit_identical(expected, actual, context):
    leaves = jax.tree_util.tree_leaves_with_path(expected)
    other = jax.tree_util.tree_leaves_with_path(actual)
    assert len(leaves) == len(other), context
    for (path, a), (_, b) in zip(leaves, other):
        np.testing.assert_array_equal(a, b, err_msg=f"{context}: {jax.tree_util.keystr(path)}")


@pytest.fixture(scope="module")
def reference(harness_env, tmp_path_factory):
    """The uninterrupted run (1 process, 8 devices), every step's checkpoint kept:
    reference(step) is the state after `step` steps, as numpy arrays."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    run = Run(harness_env, workdir, f"--config.max_checkpoints_to_keep={NUM_STEPS}")
    try:
        assert run.wait() == 0, run.tail()
    finally:
        run.kill()
    assert _steps(workdir) == [str(step) for step in range(1, NUM_STEPS + 1)]
    return lambda step: _load(workdir, step)


def _expected_ids(step, rows=slice(None)):
    config = _config()
    return input_pipeline.train_example_indices(
        config.seed, step, config.data.batch_size, config.data.synthetic.num_train_examples,
        rows).tolist()


def _records(path):
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file]


def _preempted_step(output):
    return int(output.split("Preempted: the checkpoint at step ")[1].split()[0])


# ------------------------------------------------------- kill -9 and SIGTERM, one process

@pytest.mark.slow  # four subprocess runs (47 s idle with its setup); test_end_to_end resumes exactly in the default suite
def test_kill_9_in_a_save_sigterm_kill_9_in_a_deletion_then_resume_bit_identical(
        reference, start, tmp_path):
    """Three interruptions of one run, then the same command to the end.

    1. kill -9 while a checkpoint is written in the background (random step);
    2. SIGTERM from outside at a random step: checkpoint of the current step, exit 75;
    3. kill -9 while an old checkpoint is being deleted (random deletion).
    Each run must consume exactly the examples of the steps after the latest checkpoint
    (by dataset index, from the pixels), and the end must be bit-identical to `reference`.
    """
    seed = _seed()
    rng = random.Random(seed)
    workdir = str(tmp_path / "run")

    def check_examples(record, first_step, num_steps, context):
        consumed = [entry["ids"] for entry in _records(record)]
        expected = [_expected_ids(step) for step in range(first_step, first_step + num_steps)]
        assert consumed == expected, f"{context}: consumed {len(consumed)} batches"

    # 1. kill -9 just after the save of step k started: its arrays are still being written.
    fault = f"save:{rng.randint(2, 4)}"
    context = f"seed {seed}, {fault}"
    latest = _killed_by_fault(start, workdir, fault, str(tmp_path / "1.jsonl"), context)
    assert int(fault[5:]) - 1 <= latest <= int(fault[5:]), f"{context}: {_entries(workdir)}"

    # 2. SIGTERM at a random step: that step finishes, is saved, and the run exits 75. No
    #    periodic checkpoints in this run: the one it leaves is the preemption checkpoint.
    record = str(tmp_path / "2.jsonl")
    run = start(workdir, "--config.checkpoint_every_steps=1000", record=record)
    target = rng.randint(latest + 1, 6)
    context = f"seed {seed}, resumed at {latest}, SIGTERM after step {target}"
    assert run.wait_for(f"step {target}/{NUM_STEPS}:"), f"{context}\n{run.tail()}"
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == preemption.EXIT_PREEMPTED, f"{context}\n{run.tail()}"
    saved = _preempted_step(run.output())
    context += f", saved {saved}"
    assert target <= saved <= NUM_STEPS - 2, context
    assert [int(step) for step in _steps(workdir) if int(step) > latest] == [saved], context
    assert "Traceback" not in run.output(), f"{context}\n{run.tail()}"
    check_examples(record, latest, saved - latest, context)  # none missing, none extra

    # 3. kill -9 in the middle of deleting an old checkpoint (about half its files gone).
    fault = f"delete:{rng.randint(1, 2) if saved <= NUM_STEPS - 3 else 1}"
    context = f"seed {seed}, {fault} after resuming at {saved}"
    latest = _killed_by_fault(start, workdir, fault, str(tmp_path / "3.jsonl"), context)

    # 4. The same command to the end.
    record = str(tmp_path / "4.jsonl")
    run = start(workdir, record=record)
    assert run.wait() == 0, run.tail()
    context = f"seed {seed}, final run from {latest}"
    check_examples(record, latest, NUM_STEPS - latest, context)
    # Only complete checkpoints, the latest two: no temporary or half-deleted directory left.
    assert _entries(workdir) == [str(NUM_STEPS - 1), str(NUM_STEPS)], context
    _assert_bit_identical(reference(NUM_STEPS), _load(workdir, NUM_STEPS), context)


def _killed_by_fault(start, workdir, fault, record, context):
    """Runs the command with `fault` injected; it must die by it. Returns the latest step saved."""
    run = start(workdir, fault=fault, record=record)
    assert run.wait() == -signal.SIGKILL and f"FAULT {fault}" in run.output(), \
        f"{context}\n{run.tail()}"
    return int(_steps(workdir)[-1])


def _kill_then_resume(start, workdir, faults, reference, seed):
    """Runs the command once per fault (each must die by SIGKILL), then to the end."""
    for fault in faults:
        run = start(workdir, fault=fault)
        status = run.wait()
        context = f"seed {seed}, fault {fault}, checkpoints {_entries(workdir)}"
        if status == 0:  # the run ended before reaching that point: nothing to kill
            return _assert_bit_identical(reference(NUM_STEPS), _load(workdir, NUM_STEPS), context)
        assert status == -signal.SIGKILL, f"{context}: exit {status}\n{run.tail()}"
    run = start(workdir)
    assert run.wait() == 0, run.tail()
    assert _entries(workdir) == [str(NUM_STEPS - 1), str(NUM_STEPS)], f"seed {seed}"
    _assert_bit_identical(reference(NUM_STEPS), _load(workdir, NUM_STEPS), f"seed {seed}, {faults}")


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_kill_9_at_random_points_resumes_bit_identical(reference, start, tmp_path, trial):
    """Three kills per trial among: inside a step, a save, a finalisation, a deletion."""
    seed = _seed() + trial
    rng = random.Random(seed)
    points = rng.sample(["step", "save", "finalize", "delete"], k=3)
    faults = [f"{point}:{rng.randint(1, 3)}" for point in points]
    _kill_then_resume(start, str(tmp_path / "run"), faults, reference, seed)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_kill_9_at_random_times_resumes_bit_identical(reference, start, tmp_path, trial):
    """The parent kills at a random moment, three times, then lets the run finish."""
    seed = _seed() + trial
    rng = random.Random(seed)
    workdir = str(tmp_path / "run")
    for _ in range(3):
        run = start(workdir)
        if not run.wait_for("First step"):
            break  # finished already
        time.sleep(rng.uniform(0.0, 2.0))
        run.kill()
    run = start(workdir)
    assert run.wait() == 0, run.tail()
    _assert_bit_identical(reference(NUM_STEPS), _load(workdir, NUM_STEPS), f"seed {seed}")


# --------------------------------------------------------------------- two processes (gloo)

def _two_processes(start, workdir, record=None, heartbeat=100):
    port = _free_port()
    return [start(workdir, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                  f"--process_id={index}", f"--heartbeat_timeout_seconds={heartbeat}",
                  f"--config.max_checkpoints_to_keep={NUM_STEPS}", devices=4, record=record)
            for index in range(2)]


def _assert_close_to(reference, actual, context):
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(reference),
                                 jax.tree_util.tree_leaves_with_path(actual), strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5,
                                   err_msg=f"{context}: {jax.tree_util.keystr(path)}")


def _sigterm_one_of_two(start, workdir, record, seed):
    """Two processes; SIGTERM to one of them at a random step. Returns the saved step."""
    rng = random.Random(seed)
    first = _two_processes(start, workdir, record=record)
    target = rng.randint(max(COMPARED_STEPS), NUM_STEPS // 2)
    assert first[0].wait_for(f"step {target}/{NUM_STEPS}:"), first[0].tail()
    victim = rng.randrange(2)
    first[victim].process.send_signal(signal.SIGTERM)  # a preemption notice to one host
    statuses = [run.wait() for run in first]
    context = f"seed {seed}: SIGTERM to process {victim} after step {target}"
    assert statuses == [preemption.EXIT_PREEMPTED] * 2, \
        f"{context}: {statuses}\n" + "\n".join(run.tail() for run in first)
    saved = [_preempted_step(run.output()) for run in first]
    assert saved[0] == saved[1] and target <= saved[0] < NUM_STEPS, f"{context}: {saved}"
    assert _steps(workdir)[-1] == str(saved[0]), context
    return saved[0], context


def _check_disjoint_rows(record, num_steps, context):
    """Each process read its own rows of every global batch, each step once, in order."""
    batch = _config().data.batch_size
    for index in range(2):
        consumed = [entry["ids"] for entry in _records(record) if entry["process"] == index]
        rows = slice(index * batch // 2, (index + 1) * batch // 2)
        assert consumed == [_expected_ids(step, rows) for step in range(num_steps)], context


@pytest.mark.slow  # two processes x 4 devices, twice (about 30 s idle)
def test_two_processes_match_one_and_sigterm_to_one_makes_both_save_the_same_step(
        reference, start, tmp_path):
    """2 processes x 4 CPU devices (jax.distributed, gloo) == 1 process x 8 devices."""
    workdir, record = str(tmp_path / "run"), str(tmp_path / "ids.jsonl")
    saved, context = _sigterm_one_of_two(start, workdir, record, _seed())
    for step in COMPARED_STEPS:
        _assert_close_to(reference(step), _load(workdir, step), f"{context}, step {step}")
    _check_disjoint_rows(record, saved, context)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_two_processes_sigterm_then_resume_matches_one_process(reference, start, tmp_path,
                                                               trial):
    workdir, record = str(tmp_path / "run"), str(tmp_path / "ids.jsonl")
    saved, context = _sigterm_one_of_two(start, workdir, record, _seed() + trial)
    second = _two_processes(start, workdir, record=record)
    statuses = [run.wait() for run in second]
    assert statuses == [0, 0], "\n".join(run.tail() for run in second)
    for step in COMPARED_STEPS:
        _assert_close_to(reference(step), _load(workdir, step), f"{context}, step {step}")
    assert _steps(workdir)[-1] == str(NUM_STEPS)
    _check_disjoint_rows(record, NUM_STEPS, context)


@pytest.mark.parametrize("victim,when", [pytest.param(1, "Starting at step 0", marks=pytest.mark.slow),
                                         pytest.param(0, "First step", marks=pytest.mark.slow),
                                         pytest.param(1, "First step", marks=pytest.mark.slow)])
def test_two_processes_sigkill_of_one_makes_the_other_exit_not_hang(start, tmp_path, victim,
                                                                    when):
    heartbeat = 4
    runs = _two_processes(start, str(tmp_path / "run"), heartbeat=heartbeat)
    assert runs[victim].wait_for(when), runs[victim].tail()
    runs[victim].kill()
    survivor = runs[1 - victim]
    began = time.monotonic()
    bound = 60  # heartbeat timeout plus the survivor's current compilation, with margin
    status = survivor.wait(timeout=bound)  # the watchdog turns a hang into a failure
    assert status != 0, survivor.tail()
    assert time.monotonic() - began < bound
    # It stopped because JAX's coordination service saw the peer die (missed heartbeats,
    # or the coordinator's socket closing when process 0 is the one killed), not by chance.
    assert "the JAX distributed service detected fatal errors" in survivor.output(), \
        survivor.tail()
