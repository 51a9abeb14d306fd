"""The embedded default's training step under XLA's CPU flags, each in its own process.

    python -m experiments.cpu_speed.xla_flags --output_dir=experiments/cpu_speed/xla_flags \
        [--config=configs/synthetic.py] [--base_flags=--xla_cpu_max_isa=AVX2] [--rounds=2]

XLA reads XLA_FLAGS once, when the backend starts, so each setting is timed by a fresh
`python -m experiments.cpu_speed.compare` (ours only) with XLA_FLAGS set. The settings run
in rounds, interleaved (A B C ... A B C), and each one's figure is its median over rounds,
so that a drift of the machine during the sweep lands on every setting alike; the table
gives each setting's ms per step and its ratio to no flags, measured in the same run.
`--base_flags` is added to every setting: `--xla_cpu_max_isa=AVX2` makes XLA's own code
generation stop at AVX2 (what a Zen 3 machine has), a partial stand-in for such a machine
(it does not reach the kernels compiled into jaxlib, nor clocks and caches).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from absl import flags

from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags
from experiments.results_files import write_results

PROGRAM = "python -m experiments.cpu_speed.xla_flags"

# Name -> XLA_FLAGS. What each changes, from xla/debug_options_flags.cc (jaxlib 0.10.2):
SETTINGS = {
    "none": "",
    # Fast-math: reassociation, no NaN/Inf guarantees; changes results, shown for scale only.
    "fast_math": "--xla_cpu_enable_fast_math=true",
    # Convolutions and dots handed to XNNPACK's newer YNNPACK library instead of Eigen.
    "ynn_conv_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution,"
                    "individual_dot",
    "xnn_conv_dot": "--xla_cpu_experimental_xnn_fusion_type=individual_convolution,"
                    "individual_dot",
    # XNNPACK off. The step's convolutions run in YNNPACK (`ynn_fusion` in op_profile/) with
    # no flag set; with this one they still do (op_profile.py under it), so it does not
    # reach them: no flag found here hands them back to Eigen.
    "xnnpack_off": "--xla_cpu_use_xnnpack=false",
    # oneDNN (Intel's library) for dots and convolutions.
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    # Eigen's thread pool off for convolutions and dots (one thread inside each op).
    "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
    # Less LLVM optimisation: compiles faster, runs what XLA emits itself slower.
    "llvm_cheap": "--xla_llvm_disable_expensive_passes=true",
    "backend_opt_1": "--xla_backend_optimization_level=1",
}


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_string("config", "configs/synthetic.py", "The config whose step is timed.",
                        **d)
    flags.DEFINE_multi_string("config_override", [], "--config.FIELD=VALUE passed on to each "
                              "timed process.", **d)
    flags.DEFINE_list("settings", list(SETTINGS), "Names from SETTINGS, in order.", **d)
    flags.DEFINE_string("base_flags", "", "XLA flags added to every setting.", **d)
    flags.DEFINE_integer("rounds", 2, "Times each setting is timed (interleaved).", **d)
    flags.DEFINE_integer("steps", 20, "Timed steps per process.", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)


def time_setting(config: str, overrides: list[str], xla_flags: str,
                 steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "XLA_FLAGS": xla_flags}
        process = subprocess.run(
            [sys.executable, "-m", "experiments.cpu_speed.compare", f"--config={config}",
             *overrides, f"--steps={steps}", "--warmup=3", f"--output_dir={folder}"],
            env=env, capture_output=True, text=True)
        if process.returncode:
            return {"error": process.stderr.strip().splitlines()[-1:]}
        with open(os.path.join(folder, "results.json")) as file:
            return json.load(file)["ours"]


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    base = rows.get("none", {}).get("median_ms")
    lines = ["# XLA CPU flags on the embedded default's training step", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {machine.summary(report['machine'])}  ",
             f"Flags added to every setting: `{report['base_flags'] or '(none)'}`", "",
             "| setting | XLA_FLAGS | ms / step (median of rounds) | rounds | / none | "
             "compile s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        if "median_ms" not in row:
            lines.append(f"| {name} | `{SETTINGS[name]}` | failed: {row.get('error')} | | | |")
            continue
        ratio = f"{row['median_ms'] / base:.2f}" if base else ""
        lines.append(f"| {name} | `{SETTINGS[name] or '(none)'}` | {row['median_ms']:.1f} | "
                     f"{', '.join(f'{t:.1f}' for t in row['rounds_ms'])} | {ratio} | "
                     f"{row['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"{PROGRAM}: unknown settings {unknown}; known: {list(SETTINGS)}")
    timings: dict[str, list[dict[str, Any]]] = {name: [] for name in args.settings}
    for round_index in range(args.rounds):
        for name in args.settings:
            xla_flags = f"{args.base_flags} {SETTINGS[name]}".strip()
            result = time_setting(args.config, args.config_override, xla_flags, args.steps)
            print(f"round {round_index + 1} {name}: {result.get('median_ms', result)}",
                  flush=True)
            timings[name].append(result)
    results = {}
    for name, runs in timings.items():
        good = [run for run in runs if "median_ms" in run]
        if not good:
            results[name] = {"error": runs[-1].get("error")}
            continue
        results[name] = {"median_ms": statistics.median(run["median_ms"] for run in good),
                         "rounds_ms": [run["median_ms"] for run in good],
                         "compile_s": statistics.median(run["compile_s"] for run in good),
                         "xla_flops_per_step": good[0]["xla_flops_per_step"]}
    report = {"command": f"{PROGRAM} {' '.join(argv)}", "machine": machine.describe(),
              "base_flags": args.base_flags, "results": results}
    print(markdown(report))
    if args.output_dir:
        write_results(args.output_dir, report, markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
