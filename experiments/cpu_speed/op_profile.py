"""Where the embedded default's CPU training step spends its time, op by op.

    XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true python -m experiments.cpu_speed.op_profile \
        --output_dir=experiments/cpu_speed/op_profile [--config=configs/synthetic.py]

Traces a few compiled steps with JAX's profiler and reads the trace back with
`jax.profiler.ProfileData` (no TensorBoard plugin needed). With
`--xla_cpu_enable_xprof_traceme=true`, XLA's CPU runtime records one event per thunk (a
fusion, a convolution handed to a library such as YNNPACK, a copy, a sort...) on the thread
that ran it. Their durations are summed per kind of thunk and per thunk, and set against
the step's wall time: what the table cannot place is time between thunks (scheduling,
waiting for the other core). Nested events (a library call inside a fusion) would be
counted twice, so only the outermost event of each thread is kept.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags
from jax.profiler import ProfileData
from jax.sharding import Mesh

from deeplab_jax import parallel
from deeplab_jax.analysis import step_profile
from deeplab_jax.data import datasets
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags
from experiments.cpu_speed.compare import load_config
from experiments.results_files import write_results

PROGRAM = "python -m experiments.cpu_speed.op_profile"
# Events that are bookkeeping around thunks, not work.
_SKIP = re.compile(r"^(ThreadpoolListener|ThunkExecutor|end: |PjitFunction|ParseArguments|"
                   r"CommonPjRt|PythonRefManager|\$)")


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    config_flags.DEFINE_config_file("config", "configs/synthetic.py", "The config whose step "
                                    "is profiled (--config.FIELD=VALUE overrides a field).", **d)
    flags.DEFINE_integer("steps", 10, "Traced steps.", **d)
    flags.DEFINE_integer("top", 25, "Thunks listed one by one.", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)


def kind_of(name: str) -> str:
    """'ynn_fusion', 'fusion', 'convolution', 'copy'... from a thunk's event name."""
    base = name.split(":")[0].strip()
    return re.sub(r"[._]\d+$", "", base)


def describe_thunks(hlo_text: str) -> dict[str, str]:
    """Thunk name -> what it computes, from the compiled module's text: for a fusion that
    holds a convolution or a dot, its operand and result shapes and the window (a kernel
    gradient shows as a convolution whose window is the feature map)."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(
        r"^%(\S+) \(.*?\) -> .*? \{\n(.*?)\n\}", hlo_text, re.S | re.M)}
    described = {}
    for m in re.finditer(r"^\s+(?:ROOT )?%(\S+) = \S+ fusion\(.*?calls=%([^,\s]+)", hlo_text,
                         re.M):
        body = bodies.get(m.group(2), "")
        operands = re.findall(r"= (\S+?)\{[\d,]*\} parameter", body)
        conv = re.search(r"= (\S+?)\{[\d,]*\} convolution\(.*?\), (window=\{[^}]*\})?",
                         body)
        dot = re.search(r"= (\S+?)\{[\d,]*\} dot\(", body)
        if conv:
            described[m.group(1)] = (f"conv {' * '.join(operands)} -> {conv.group(1)} "
                                     f"{conv.group(2) or ''}").strip()
        elif dot:
            described[m.group(1)] = f"dot {' * '.join(operands)} -> {dot.group(1)}"
    return described


def outermost_events(trace_dir: str) -> list[tuple[str, str, int, int]]:
    """(thread, name, start_ns, duration_ns) of every outermost work event in the trace."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    events = []
    for plane in ProfileData.from_file(path).planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            end_of_outer = -1
            for event in sorted(line.events, key=lambda e: (e.start_ns, -e.duration_ns)):
                if _SKIP.match(event.name) or event.start_ns < end_of_outer:
                    continue
                end_of_outer = event.start_ns + event.duration_ns
                events.append((line.name, event.name, event.start_ns, event.duration_ns))
    return events


def profile(config, steps: int) -> dict[str, Any]:
    num_classes = datasets.dataset_info(config.data)["num_classes"]
    mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
    compiled, state, batch = step_profile.compile_train_step(
        config, num_classes, config.data.batch_size, mesh)
    rngs = list(jax.random.split(jax.random.key(1), steps + 3))  # indexed before the trace
    for rng in rngs[:3]:  # warm-up
        state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    with tempfile.TemporaryDirectory() as trace_dir:
        begin = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for rng in rngs[3:]:
                state, metrics = compiled(state, batch, rng)
                jax.block_until_ready((state, metrics))
        wall_ms = 1e3 * (time.perf_counter() - begin) / steps
        events = outermost_events(trace_dir)
    per_thunk: dict[str, float] = collections.defaultdict(float)
    per_kind: dict[str, float] = collections.defaultdict(float)
    for _, name, _, duration in events:
        per_thunk[name] += duration / 1e6 / steps
        per_kind[kind_of(name)] += duration / 1e6 / steps
    busy_ms = sum(per_kind.values())
    return {"wall_ms_per_step_traced": wall_ms, "busy_ms_per_step": busy_ms,
            "threads": len({thread for thread, *_ in events}),
            "per_kind_ms": dict(sorted(per_kind.items(), key=lambda kv: -kv[1])),
            "per_thunk_ms": dict(sorted(per_thunk.items(), key=lambda kv: -kv[1])),
            "events_per_step": len(events) / steps,
            "thunk_descriptions": describe_thunks(compiled.as_text()),
            "median_event_us": statistics.median(d for *_, d in events) / 1e3 if events else 0}


def markdown(report: dict[str, Any], top: int) -> str:
    result = report["profile"]
    lines = ["# The embedded default's training step, op by op", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {machine.summary(report['machine'])}", "",
             f"Traced wall time {result['wall_ms_per_step_traced']:.1f} ms per step; the "
             f"thunks' own time, summed over {result['threads']} threads, "
             f"{result['busy_ms_per_step']:.1f} ms; {result['events_per_step']:.0f} thunks "
             f"per step, median {result['median_event_us']:.0f} us.", "",
             "| kind of thunk | ms per step (summed over threads) | share |", "| --- | --- | --- |"]
    for kind, ms in result["per_kind_ms"].items():
        lines.append(f"| `{kind}` | {ms:.2f} | {ms / result['busy_ms_per_step']:.0%} |")
    lines += ["", f"The {top} most expensive thunks:", "",
              "| thunk | what it computes | ms per step |", "| --- | --- | --- |"]
    descriptions = result.get("thunk_descriptions", {})
    for name, ms in list(result["per_thunk_ms"].items())[:top]:
        lines.append(f"| `{name[:90]}` | {descriptions.get(name, '')} | {ms:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    if "xla_cpu_enable_xprof_traceme=true" not in os.environ.get("XLA_FLAGS", ""):
        raise SystemExit(f"{PROGRAM}: set XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true "
                         "before running, or the trace holds no per-op events.")
    report = {"command": f"XLA_FLAGS={os.environ['XLA_FLAGS']} {PROGRAM} {' '.join(argv)}",
              "machine": machine.describe(),
              "profile": profile(load_config(args), args.steps)}
    print(markdown(report, args.top))
    if args.output_dir:
        write_results(args.output_dir, report, markdown(report, args.top))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
