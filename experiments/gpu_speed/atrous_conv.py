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

import argparse
import functools
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from deeplab_jax import xla_cost  # noqa: E402
from deeplab_jax.models.atrous import ATROUS_IMPLS, atrous_conv  # noqa: E402

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
PEAK_TFLOPS = 790.0  # measured dense bf16 on the H200 (shared/notes/performance.md)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _strs(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels_in", type=int, default=2048)
    parser.add_argument("--channels_out", type=int, default=256)
    parser.add_argument("--size", type=int, default=33, help="H = W of the feature map")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--rates", type=_ints, default=[1, 2, 6, 12, 18])
    parser.add_argument("--impls", type=_strs, default=list(ATROUS_IMPLS))
    parser.add_argument("--modes", type=_strs, default=["forward", "forward_backward"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="check every impl's output against 'xla' (rel. max error)")
    parser.add_argument("--output", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    for impl in args.impls:
        if impl not in ATROUS_IMPLS:
            parser.error(f"--impls: {impl!r} is not one of {ATROUS_IMPLS}")
    for mode in args.modes:
        if mode not in ("forward", "forward_backward"):
            parser.error(f"--modes: {mode!r} is not 'forward' or 'forward_backward'")
    return args


_CONV_LINE = re.compile(r"(convolution\(|custom-call\()")
_WINDOW = re.compile(r"window=\{([^}]*)\}")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def conv_lowerings(hlo_text: str) -> list[str]:
    """The distinct convolutions of an optimized HLO module: kind and window.

    On GPU a cuDNN convolution is a custom-call with target `__cudnn$conv...`; its window
    shows the kernel size and any rhs_dilate it kept.
    """
    found = []
    for line in hlo_text.splitlines():
        if not _CONV_LINE.search(line):
            continue
        window = _WINDOW.search(line)
        if window is None:
            continue
        target = _TARGET.search(line)
        kind = target.group(1) if target else "convolution"
        entry = f"{kind} {window.group(1)}"
        if entry not in found:
            found.append(entry)
    return found


def _time_calls(fn, args, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
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
        rows=rows)


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| rate | impl | mode | median ms | speed-up vs xla | model TFLOP/s | "
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
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
    main()
