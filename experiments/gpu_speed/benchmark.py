"""Training-step benchmark: deeplab_jax's DeepLabv3 against torchvision's, in the same run.

    # On the GPU machine, from the repository root (experiments/gpu_session.md has the plan):
    python -m experiments.gpu_speed.benchmark --output_dir /tmp/gpu_speed
    # CPU correctness check at toy size (timings on CPU mean nothing):
    python -m experiments.gpu_speed.benchmark --depths 14 --width 8 --aspp_channels 16 \\
        --atrous_rates 1,2,3 --crop 65 --batch 2 --steps 3 --warmup 1 --output_strides 8 \\
        --dtypes float32 --atrous_impls xla,taps --output_dir /tmp/gpu_speed_cpu

Ours (`ours.py`): DeepLabV3 from `configs/voc.py` at each setting, trained by the package's
own step. Theirs (`theirs.py`), when torch imports: torchvision's DeepLabV3 at the same batch
and crop. Reported per setting: the median step time after warm-up (each step ended by
block_until_ready), the mean step time of a pipelined loop (no per-step sync), images/s,
peak device memory, FLOPs per step (XLA's cost analysis for ours, torch's FlopCounterMode
for theirs), TFLOP/s and the fraction of 790 TFLOP/s, and for ours an HLO census of the
compiled step (`deeplab_jax/analysis/hlo.py`). The report is `report.py`'s.

Each job runs in its own subprocess (`jobs.py`) unless --no_subprocess. `--time_budget_s`
skips the jobs that would not finish in time, in the order given, so one command fits a
fixed slot.
"""
from __future__ import annotations

import os
import time
import types
from typing import Any, Sequence

from absl import flags

from deeplab_jax.models.atrous import ATROUS_IMPLS
from deeplab_jax.reporting.command_line import parse_flags
from experiments.gpu_speed import jobs, report, theirs
from experiments.gpu_speed.settings import NUM_CLASSES, Setting

DEFAULT_JOB_SECONDS = {"jax": 150.0, "torch": 90.0}  # until a job of that kind has run
PROGRAM = "python -m experiments.gpu_speed.benchmark"


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    # What to run.
    flags.DEFINE_list("settings", None, "Ordered DEPTH/OS/DTYPE[/IMPL] list; overrides "
                      "--depths, --output_strides, --dtypes and --atrous_impls.", **d)
    flags.DEFINE_list("depths", ["101", "50"], "ResNet depths.", **d)
    flags.DEFINE_list("output_strides", ["16", "8"], "Output strides.", **d)
    flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Compute dtypes.", **d)
    flags.DEFINE_list("atrous_impls", ["xla"], f"Ours: any of {ATROUS_IMPLS}.", **d)
    flags.DEFINE_list("frameworks", ["jax", "torch"], "jax, torch or both.", **d)
    flags.DEFINE_bool("with_input", False, "Also feed ours through the host input path "
                      "(files read and decoded on threads, then prefetch) and compare with "
                      "the resident step.", **d)
    flags.DEFINE_enum("input", "voc_like", ["voc_like", "synthetic"], "--with_input data: "
                      "VOC-sized JPEG + PNG files read by voc.VocFolder, or generated arrays "
                      "kept in RAM (no decoding).", **d)
    # Shapes (defaults: the paper's VOC setting).
    flags.DEFINE_integer("crop", 513, "Training crop side.", **d)
    flags.DEFINE_integer("canvas", None, "Host canvas side (default: the crop).", **d)
    flags.DEFINE_integer("batch", 16, "Global batch.", **d)
    flags.DEFINE_integer("width", 64, "ResNet root width (64: standard).", **d)
    flags.DEFINE_integer("aspp_channels", 256, "ASPP channels.", **d)
    flags.DEFINE_list("atrous_rates", None, "ASPP rates (default: the paper's at each "
                      "stride; toy crops need smaller ones).", **d)
    flags.DEFINE_integer("num_classes", NUM_CLASSES, "Classes.", **d)
    flags.DEFINE_integer("devices", 1, "Devices in the data mesh.", **d)
    # Timing.
    flags.DEFINE_integer("warmup", 3, "Warm-up steps.", **d)
    flags.DEFINE_integer("steps", 20, "Timed steps (each loop).", **d)
    flags.DEFINE_integer("input_examples", 64, "--with_input: examples generated.", **d)
    flags.DEFINE_integer("input_workers", 8, "--with_input: decoding threads.", **d)
    flags.DEFINE_integer("prefetch", 2, "--with_input: host prefetch.", **d)
    flags.DEFINE_float("time_budget_s", None, "Skip jobs that would end after this many "
                       "seconds from the start.", **d)
    flags.DEFINE_float("job_timeout_s", 420.0, "A job's time limit.", **d)
    flags.DEFINE_float("job_estimate_s", None, "--time_budget_s: assumed length of a job "
                       "before one of its kind has run (150 s for ours, 90 s for torch).", **d)
    flags.DEFINE_bool("no_subprocess", False, "Run every job in this process (peak memory "
                      "then accumulates).", **d)
    # Levers (NOTES.md); XLA's own flags go in the XLA_FLAGS environment variable.
    flags.DEFINE_bool("no_donate", False, "Ours: do not donate the state's buffers.", **d)
    # torchvision.
    flags.DEFINE_enum("torch_compile", "none", ["none", "default", "reduce-overhead",
                                                "max-autotune", "max-autotune-no-cudagraphs"],
                      "torch.compile mode (its compile time is in the warm-up).", **d)
    flags.DEFINE_list("torch_os16_rates", ["6", "12", "18"], "ASPP rates of torchvision's "
                      "OS16 variant (its DeepLabHead hard-codes 12,24,36).", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)
    flags.DEFINE_string("compilation_cache_dir", None, "JAX persistent compilation cache.", **d)


def parse_args(argv: Sequence[str]) -> types.SimpleNamespace:
    """The flags as a plain namespace (it travels to the job subprocesses as JSON)."""
    fv = parse_flags(define_flags, argv, PROGRAM)
    args = types.SimpleNamespace(**{flag.name: flag.value for flag in
                                    fv.get_flags_for_module(__name__)})

    def fail(message: str):
        raise SystemExit(f"{PROGRAM}: {message}")

    try:
        settings = ([Setting.parse(text) for text in args.settings] if args.settings else
                    [Setting.parse(f"{d}/{o}/{t}/{i}") for d in args.depths
                     for o in args.output_strides for t in args.dtypes
                     for i in args.atrous_impls])
    except ValueError as error:
        fail(str(error))
    for framework in args.frameworks:
        if framework not in ("jax", "torch"):
            fail(f"--frameworks: {framework!r} is not jax or torch")
    if args.steps < 1 or args.warmup < 0:
        fail("--steps must be >= 1 and --warmup >= 0")
    args.canvas = args.canvas or args.crop
    if args.canvas < args.crop:
        fail("--canvas must be >= --crop")
    if args.with_input and args.input == "voc_like" and args.canvas < 500:
        fail(f"--input voc_like writes 500x375 and 375x500 images, larger than --canvas "
             f"{args.canvas}: pass --canvas 513 (or --input synthetic)")
    args.torch_os16_rates = [int(rate) for rate in args.torch_os16_rates]
    args.settings = [setting.name for setting in settings]
    return args


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_args(argv)
    settings = [Setting.parse(name) for name in args.settings]
    torch_ok, torch_line = theirs.torch_status()
    want_torch = "torch" in args.frameworks
    if want_torch and args.no_subprocess and torch_ok:
        # JAX would otherwise take 75% of the GPU before torch runs in this process.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env = report.environment()
    print(f"JAX {env['jax']} on {env['jax_backend']} ({env['jax_device']}); {env['torch']}",
          flush=True)
    if env["jax_backend"] == "cpu":
        print("CPU backend: timings here are correctness checks, not speed figures.")
    torch_skipped = None
    if want_torch and not torch_ok:
        torch_skipped = f"torch is not importable ({torch_line})"
        print(f"torch is not importable here ({torch_line}): skipping torchvision's half.")
    results = dict(env=env, args=vars(args), settings=args.settings, jax=[], torch=[],
                   torch_skipped=torch_skipped)
    start = time.perf_counter()
    durations: dict[str, list[float]] = {"jax": [], "torch": []}

    def attempt(kind: str, setting: Setting, skip_reason: str = "") -> dict[str, Any]:
        name = setting.name if kind == "jax" else setting.torch_key
        estimate = max(durations[kind],
                       default=args.job_estimate_s or DEFAULT_JOB_SECONDS[kind])
        elapsed = time.perf_counter() - start
        if skip_reason:
            result = dict(framework=kind, setting=name, skipped=skip_reason)
        elif args.time_budget_s is not None and elapsed + estimate > args.time_budget_s:
            result = dict(framework=kind, setting=name,
                          skipped=f"time budget: {elapsed:.0f}s used, ~{estimate:.0f}s "
                                  f"needed, {args.time_budget_s:.0f}s allowed")
        else:
            print(f"--- {kind} {name} (t={elapsed:.0f}s)", flush=True)
            result = jobs.run_job(kind, setting, args)
            if "error" not in result:
                durations[kind].append(result["job_wall_s"])
        print(report.summary_line(result), flush=True)
        results[kind].append(result)
        if args.output_dir:
            report.write_report(results, args.output_dir)
        return result

    torch_done = set()
    for setting in settings:
        ours = attempt("jax", setting) if "jax" in args.frameworks else {}
        if want_torch and torch_ok and setting.torch_key not in torch_done:
            torch_done.add(setting.torch_key)
            # Half a comparison is no figure: theirs runs only where ours did.
            attempt("torch", setting, "ours was skipped" if "skipped" in ours else "")
    print(report.markdown(results))
    if args.output_dir:
        report.write_report(results, args.output_dir)
        print(f"wrote {os.path.join(args.output_dir, 'results.json')} and results.md")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
