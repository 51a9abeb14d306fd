"""Times one 3x3 atrous convolution per implementation (deeplab_jax/models/atrous.py).

Default shape: an ASPP branch of DeepLabv3-ResNet at 513x513, output stride 16: 2048 -> 256
channels on a 33x33 map, batch 16, bfloat16, SAME padding, rates 1 (the reference: no
dilation), 2, 6, 12, 18. For each rate and impl it times the forward and the forward +
backward (output, input gradient and kernel gradient), each its own jitted function: the
median of `--iters` timed calls after `--warmup` calls, each call ended by
`block_until_ready`. It also records how XLA lowered the convolutions (from the compiled
HLO): a dense kernel of size (2r+1)x(2r+1) where the program asked for a 3x3 kernel with
rhs_dilate=r is the rewrite openxla/xla PR 32231 describes.

    python experiments/gpu_speed/atrous_conv.py --output /tmp/atrous_conv.json
    # CPU correctness run at a toy size (timings on CPU mean nothing):
    python experiments/gpu_speed/atrous_conv.py --channels_in 64 --channels_out 16 --size 17 \
        --batch 2 --iters 3 --warmup 1 --output /tmp/atrous_conv_cpu.json
"""
from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import time
import types
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from absl import flags

from deeplab_jax.analysis import xla_cost
from deeplab_jax.analysis.hlo import conv_lowerings
from deeplab_jax.models.atrous import ATROUS_IMPLS, atrous_conv
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags

PROGRAM = "python experiments/gpu_speed/atrous_conv.py"

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
PEAK_TFLOPS = 790.0  # measured dense bf16 on the H200 (shared/notes/performance.md)


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_integer("channels_in", 2048, "Input channels.", **d)
    flags.DEFINE_integer("channels_out", 256, "Output channels.", **d)
    flags.DEFINE_integer("size", 33, "H = W of the feature map.", **d)
    flags.DEFINE_integer("batch", 16, "Batch.", **d)
    flags.DEFINE_enum("dtype", "bfloat16", sorted(DTYPES), "Compute dtype.", **d)
    flags.DEFINE_list("rates", ["1", "2", "6", "12", "18"], "Atrous rates.", **d)
    flags.DEFINE_multi_enum("impls", list(ATROUS_IMPLS), list(ATROUS_IMPLS),
                            "Implementations (repeat the flag, or a comma list).", **d)
    flags.DEFINE_multi_enum("modes", ["forward", "forward_backward"],
                            ["forward", "forward_backward"], "What to time.", **d)
    flags.DEFINE_integer("warmup", 3, "Warm-up calls.", **d)
    flags.DEFINE_integer("iters", 20, "Timed calls.", **d)
    flags.DEFINE_bool("check", True, "Check every impl's output against the first's "
                      "(relative max error).", **d)
    flags.DEFINE_string("output", None, "JSON file to write (and a .md beside it).", **d)


def parse_args(argv: Sequence[str]) -> types.SimpleNamespace:
    fv = parse_flags(define_flags, _split_lists(argv), PROGRAM)
    args = types.SimpleNamespace(**{flag.name: flag.value
                                    for flag in fv.get_flags_for_module(__name__)})
    args.rates = [int(rate) for rate in args.rates]
    return args


def _split_lists(argv: Sequence[str]) -> list[str]:
    """'--impls=xla,taps' -> '--impls=xla', '--impls=taps' (absl's multi flags repeat)."""
    out = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and name in ("--impls", "--modes"):
            out += [f"{name}={item}" for item in value.split(",") if item]
        else:
            out.append(arg)
    return out


def _time_calls(fn, args, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def benchmark(args: types.SimpleNamespace) -> dict[str, Any]:
    dtype = DTYPES[args.dtype]
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    shape = (args.batch, args.size, args.size, args.channels_in)
    x = jax.random.normal(kx, shape, jnp.float32).astype(dtype)
    kernel = (jax.random.normal(kk, (3, 3, args.channels_in, args.channels_out), jnp.float32)
              / np.sqrt(9 * args.channels_in)).astype(dtype)
    cotangent = jax.random.normal(
        kg, (args.batch, args.size, args.size, args.channels_out), jnp.float32).astype(dtype)
    # Dense 3x3 taps over the whole (padded) map, as cuDNN and torch's counter count them.
    forward_flops = 2.0 * args.batch * args.size**2 * 9 * args.channels_in * args.channels_out
    rows = []
    for rate in args.rates:
        reference = None
        for impl in args.impls:
            conv = functools.partial(atrous_conv, rate=rate, padding="SAME", impl=impl)

            def forward_backward(x, kernel, cotangent, conv=conv):
                y, vjp = jax.vjp(conv, x, kernel)
                return (y,) + vjp(cotangent)  # y too, or XLA drops the forward

            for mode in args.modes:
                fn, fn_args, model_flops = (
                    (conv, (x, kernel), forward_flops) if mode == "forward"
                    else (forward_backward, (x, kernel, cotangent), 3 * forward_flops))
                start = time.perf_counter()
                compiled = jax.jit(fn).lower(*fn_args).compile()
                compile_s = time.perf_counter() - start
                times = _time_calls(compiled, fn_args, args.warmup, args.iters)
                median = statistics.median(times)
                row = dict(rate=rate, impl=impl, mode=mode, median_ms=1e3 * median,
                           min_ms=1e3 * min(times), compile_s=compile_s,
                           model_flops=model_flops, xla_flops=xla_cost.flops(compiled),
                           model_tflops_per_s=model_flops / median / 1e12,
                           conv_lowerings=conv_lowerings(compiled.as_text()))
                row["fraction_of_790"] = row["model_tflops_per_s"] / PEAK_TFLOPS
                if args.check and mode == "forward":
                    y = np.asarray(compiled(*fn_args), np.float32)
                    if reference is None:
                        reference = y
                    scale = max(float(np.abs(reference).max()), 1e-30)
                    row["max_rel_error_vs_first_impl"] = float(  # first impl: xla by default
                        np.abs(y - reference).max() / scale)
                rows.append(row)
                print(f"rate {rate:>2} {impl:>14} {mode:>16}: {row['median_ms']:9.3f} ms "
                      f"(compile {compile_s:.1f}s)", flush=True)
    for row in rows:  # speed relative to XLA's own dilated convolution
        xla = [r for r in rows if r["rate"] == row["rate"] and r["mode"] == row["mode"]
               and r["impl"] == "xla"]
        row["speedup_vs_xla"] = xla[0]["median_ms"] / row["median_ms"] if xla else None
    device = jax.devices()[0]
    return dict(
        what="one 3x3 atrous convolution, SAME padding, per implementation",
        shape=dict(batch=args.batch, size=args.size, channels_in=args.channels_in,
                   channels_out=args.channels_out, dtype=args.dtype),
        warmup=args.warmup, iters=args.iters,
        env=dict(jax=jax.__version__, backend=jax.default_backend(),
                 device=getattr(device, "device_kind", str(device)),
                 python=platform.python_version()),
        machine=machine.describe(),  # CPU model and cores, GPU, JAX version, XLA flags
        rows=rows)


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"Machine: {machine.summary(result['machine'])}", "",
             "| rate | impl | mode | median ms | speed-up vs xla | model TFLOP/s | "
             "% of 790 | fwd max rel. error vs first impl | conv lowering (compiled HLO) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        speedup = "n/a" if row["speedup_vs_xla"] is None else f"{row['speedup_vs_xla']:.2f}x"
        lowering = "; ".join(row["conv_lowerings"]) or "(no convolution)"
        error = row.get("max_rel_error_vs_first_impl")
        error = "" if error is None else f"{error:.1e}"
        lines.append(f"| {row['rate']} | {row['impl']} | {row['mode']} | "
                     f"{row['median_ms']:.3f} | {speedup} | {row['model_tflops_per_s']:.1f} | "
                     f"{100 * row['fraction_of_790']:.1f} | {error} | {lowering} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"JAX {jax.__version__} on {jax.default_backend()} "
          f"({getattr(jax.devices()[0], 'device_kind', '?')})", flush=True)
    if jax.default_backend() == "cpu":
        print("CPU backend: timings here are correctness checks, not speed figures.")
    result = benchmark(args)
    table = markdown_table(result)
    print(table)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
            f.write(table + "\n")
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
