"""Do convolution kernel gradients written as matrix products beat XLA CPU's own?

    python -m experiments.cpu_speed.kernel_grads --output_dir=experiments/cpu_speed/kernel_grads \
        [--config=configs/synthetic.py] [--rounds=4] [--steps=20]

XLA writes the kernel gradient of a convolution as another convolution, over the batch,
with a window the size of the feature map (`op_profile/`: "conv f32[512,8,8,16] *
f32[8,8,16,64] -> f32[512,3,3,64] window={size=8x8 stride=6x6}" is an ASPP branch's), and
its CPU backend hands those to YNNPACK with layout transposes around them. For a stride-1
convolution the same gradient is, per kernel tap, one matrix product of the shifted input
and the output gradient over the pixels where that tap lands inside the image:

    dW[ky, kx] = sum over n, h, w of x[n, h + ky*r - pad, w + kx*r - pad]^T dy[n, h, w]

`dot_kernel_grad_conv` is that: XLA's forward pass and input gradient, and the kernel
gradient as one einsum per tap (taps that read only padding give zeros). This script
compiles the config's training step once per variant in one process (`VARIANTS`: as it is;
every stride-1 NHWC convolution so written; the 1x1s only; the 3x3s only), swapping
`lax.conv_general_dilated` only while tracing (nothing in the package changes), measures
how far the gradients differ, and times the variants in interleaved rounds (A B C D ...), so
the ratios are measured in one run on one machine.
It is a measurement, not an option of the package: see README.md for why it is not used.
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax import lax
from jax.sharding import Mesh
from ml_collections import config_flags

from deeplab_jax import parallel
from deeplab_jax.analysis import step_profile
from deeplab_jax.data import datasets
from deeplab_jax.models import get_model
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags
from deeplab_jax.training import losses
from experiments.cpu_speed.compare import load_config
from experiments.results_files import write_results

PROGRAM = "python -m experiments.cpu_speed.kernel_grads"
NHWC = ("NHWC", "HWIO", "NHWC")
_XLA_CONV = lax.conv_general_dilated


@functools.lru_cache(maxsize=None)
def dot_kernel_grad_conv(padding: tuple[tuple[int, int], ...], rates: tuple[int, int]):
    """A stride-1 NHWC/HWIO convolution whose kernel gradient is one einsum per tap."""
    conv = functools.partial(_XLA_CONV, window_strides=(1, 1), padding=padding,
                             rhs_dilation=rates, dimension_numbers=NHWC)

    @jax.custom_vjp
    def convolve(x, kernel):
        return conv(x, kernel)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        dx = jax.vjp(lambda x_: conv(x_, kernel), x)[1](dy)[0]
        (pad_top, _), (pad_left, _) = padding
        height, width = x.shape[1:3]
        out_height, out_width = dy.shape[1:3]
        taps = []
        for ky in range(kernel.shape[0]):
            for kx in range(kernel.shape[1]):
                dy_offset, dx_offset = ky * rates[0] - pad_top, kx * rates[1] - pad_left
                # Output pixels whose tap (ky, kx) lands inside the image.
                h0, h1 = max(0, -dy_offset), min(out_height, height - dy_offset)
                w0, w1 = max(0, -dx_offset), min(out_width, width - dx_offset)
                if h0 >= h1 or w0 >= w1:
                    taps.append(jnp.zeros(kernel.shape[2:], kernel.dtype))
                    continue
                shifted = x[:, h0 + dy_offset:h1 + dy_offset, w0 + dx_offset:w1 + dx_offset]
                taps.append(jnp.einsum("nhwi,nhwo->io", shifted, dy[:, h0:h1, w0:w1],
                                       preferred_element_type=jnp.float32))
        dkernel = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
        return dx, dkernel

    convolve.defvjp(forward, backward)
    return convolve


def _conv_with_dot_kernel_grads(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None,
                                feature_group_count=1, batch_group_count=1, precision=None,
                                preferred_element_type=None, *, kernel_sizes=(1, 3)):
    """`lax.conv_general_dilated`, routed to `dot_kernel_grad_conv` where it applies."""
    applies = (lhs.ndim == 4 and rhs.ndim == 4
               and tuple(rhs.shape[:2]) in {(k, k) for k in kernel_sizes}
               and tuple(window_strides) == (1, 1)
               and tuple(lhs_dilation or (1, 1)) == (1, 1)
               and feature_group_count == 1 and batch_group_count == 1
               and precision is None and preferred_element_type is None
               and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
               == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
    if not applies:
        return _XLA_CONV(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                         dimension_numbers, feature_group_count, batch_group_count,
                         precision, preferred_element_type)
    rates = tuple(rhs_dilation or (1, 1))
    if isinstance(padding, str):
        spans = [(k - 1) * r + 1 for k, r in zip(rhs.shape[:2], rates)]
        padding = lax.padtype_to_pads(lhs.shape[1:3], spans, (1, 1), padding)
    padding = tuple((int(low), int(high)) for low, high in padding)
    return dot_kernel_grad_conv(padding, rates)(lhs, rhs)


# Name -> the kernel sizes (k of k x k) whose stride-1 convolutions get per-tap gradients.
VARIANTS = {"xla": (), "dots": (1, 3), "dots_1x1_only": (1,), "dots_3x3_only": (3,)}


@contextlib.contextmanager
def dot_kernel_grads(kernel_sizes: Sequence[int] = (1, 3)):
    """While active, traced stride-1 NHWC convolutions with a k x k kernel, k in
    `kernel_sizes`, get per-tap einsum kernel gradients."""
    previous = lax.conv_general_dilated
    lax.conv_general_dilated = functools.partial(_conv_with_dot_kernel_grads,
                                                 kernel_sizes=tuple(kernel_sizes))
    try:
        yield
    finally:
        lax.conv_general_dilated = previous


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    config_flags.DEFINE_config_file("config", "configs/synthetic.py", "The config whose step "
                                    "is timed (--config.FIELD=VALUE overrides a field).", **d)
    flags.DEFINE_integer("rounds", 4, "Interleaved timing rounds (A B A B ...).", **d)
    flags.DEFINE_integer("steps", 20, "Timed steps per round and variant.", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)


def _gradient_difference(config, num_classes: int) -> float:
    """Largest |difference| between the two variants' parameter gradients, relative to the
    largest gradient entry, for the same parameters and batch (no update applied)."""
    model = get_model(config.model, num_classes)
    crop = tuple(config.data.crop_size)
    images = jax.random.normal(jax.random.key(0), (4, *crop, 3))
    labels = jax.random.randint(jax.random.key(1), (4, *crop), 0, num_classes)
    variables = model.init(jax.random.key(2), images, train=False)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, images, train=True,
                                mutable=["batch_stats"])
        return losses.mean_cross_entropy(logits, labels)

    reference = jax.jit(jax.grad(loss))(variables["params"])
    with dot_kernel_grads():
        ours = jax.jit(jax.grad(loss))(variables["params"])
    scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(reference))
    worst = max(float(jnp.abs(a - b).max())
                for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(ours)))
    return worst / scale


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    lines = ["# Kernel gradients as per-tap matrix products, on the embedded default's step", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {machine.summary(report['machine'])}", "",
             "Gradients agree (XLA's against every stride-1 convolution rewritten): largest "
             f"difference {report['gradient_difference']:.1e} of the largest gradient entry.",
             "",
             "| variant | ms / step (median of rounds) | rounds (medians) | / XLA's | compile s |",
             "| --- | --- | --- | --- | --- |"]
    base = rows["xla"]["median_ms"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['median_ms']:.1f} | "
                     f"{', '.join(f'{t:.1f}' for t in row['rounds_ms'])} | "
                     f"{row['median_ms'] / base:.2f} | {row['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    config = load_config(args)
    num_classes = datasets.dataset_info(config.data)["num_classes"]
    mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
    variants, compile_s = {}, {}
    for name, kernel_sizes in VARIANTS.items():
        start = time.perf_counter()
        with dot_kernel_grads(kernel_sizes):
            variants[name] = step_profile.compile_train_step(
                config, num_classes, config.data.batch_size, mesh)
        compile_s[name] = time.perf_counter() - start
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, (compiled, state, batch) in variants.items():
            # The step donates its state: each round starts from a fresh copy.
            times = step_profile.time_train_steps(compiled, jax.tree.map(jnp.copy, state),
                                                  batch, args.steps, 3, seed=round_index)
            rounds[name].append(1e3 * statistics.median(times))
            print(f"round {round_index + 1} {name}: {rounds[name][-1]:.1f} ms", flush=True)
    report = {
        "command": f"{PROGRAM} {' '.join(argv)}", "machine": machine.describe(),
        "gradient_difference": _gradient_difference(config, num_classes),
        "results": {name: {"median_ms": statistics.median(rounds[name]),
                           "rounds_ms": rounds[name], "compile_s": compile_s[name]}
                    for name in variants}}
    print(markdown(report))
    if args.output_dir:
        write_results(args.output_dir, report, markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
