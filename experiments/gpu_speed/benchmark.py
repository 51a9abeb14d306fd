"""Training-step benchmark: deeplab_jax's DeepLabv3 against torchvision's, in the same run.

Ours: DeepLabV3 (ResNet-v2 50/101, multi-grid (1, 2, 4), ASPP) built from
deeplab_jax.models, trained by the package's own step (deeplab_jax.train_step:
create_train_state, jit_train_step; on-device random scale/crop/flip, masked softmax
cross-entropy, L2 decay, SGD momentum on the poly schedule) on a synthetic batch already in
device memory. Reported per setting (depth, output stride, dtype, atrous impl): the median
step time after warm-up (each step ended by block_until_ready), the mean step time of a
pipelined loop (no per-step sync), images/s, peak device memory, FLOPs per step from XLA's
cost analysis of the compiled step, achieved TFLOP/s and the fraction of 790 TFLOP/s.

Theirs, when torch imports: torchvision's deeplabv3_resnet50/101 (weights=None,
weights_backbone=None, aux_loss=False) at the same batch and crop, SGD momentum with weight
decay, CrossEntropyLoss(ignore_index=255), channels_last, bf16 autocast for the bfloat16
settings (TF32 allowed for float32, as JAX's default precision allows), cudnn.benchmark,
optionally torch.compile. OS8 is torchvision's own model (replace_stride_with_dilation
[False, True, True], ASPP rates (12, 24, 36)); OS16 is built the way torchvision builds it
(resnet(replace_stride_with_dilation=[False, False, True]) + IntermediateLayerGetter +
DeepLabHead) with the ASPP rates set to the paper's (6, 12, 18) (`--torch_os16_rates`),
since torchvision hard-codes (12, 24, 36). FLOPs per step from
torch.utils.flop_counter.FlopCounterMode; peak memory from torch.cuda.max_memory_allocated.

Differences that remain (the table's footnotes say so too): torchvision's ResNet is v1.5
(post-activation) without multi-grid, its head has an extra 3x3 256->256 conv + BN + ReLU and
dropout, and it is fed pre-cropped float tensors, while our step also runs the on-device
augmentation warp from uint8 canvases.

Each setting runs in its own subprocess (fresh device memory, so the peak is per setting;
a crash or timeout costs one row), unless --no_subprocess. `--time_budget_s` skips the jobs
that would not finish in time, in the order given, so one command fits a fixed slot.

    # Everything, on the GPU machine (see README.md for the 10-minute plan):
    python experiments/gpu_speed/benchmark.py --output_dir /tmp/gpu_speed
    # CPU correctness check at toy size (timings on CPU mean nothing):
    python experiments/gpu_speed/benchmark.py --depths 14 --width 8 --aspp_channels 16 \
        --crop 65 --batch 2 --steps 3 --warmup 1 --output_strides 8 --dtypes float32 \
        --atrous_impls xla,taps --output_dir /tmp/gpu_speed_cpu
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

PEAK_TFLOPS = 790.0  # measured dense bf16 on the H200 (shared/notes/performance.md)
ATROUS_IMPLS = ("xla", "space_to_batch", "taps")  # deeplab_jax.models.atrous.ATROUS_IMPLS
DTYPES = ("bfloat16", "float32")
NUM_CLASSES = 21  # PASCAL VOC
IGNORE_LABEL = 255
DEFAULT_JOB_SECONDS = {"jax": 150.0, "torch": 90.0}  # until a job of that kind has run


@dataclasses.dataclass(frozen=True)
class Setting:
    depth: int
    output_stride: int
    dtype: str
    atrous_impl: str = "xla"

    @property
    def name(self) -> str:
        return f"{self.depth}/{self.output_stride}/{self.dtype}/{self.atrous_impl}"

    @property
    def torch_key(self) -> tuple[int, int, str]:
        return self.depth, self.output_stride, self.dtype

    @classmethod
    def parse(cls, text: str) -> "Setting":
        parts = text.strip().split("/")
        if len(parts) not in (3, 4):
            raise ValueError(f"setting {text!r}: want DEPTH/OS/DTYPE[/IMPL], e.g. "
                             "101/16/bfloat16/xla")
        setting = cls(int(parts[0]), int(parts[1]), parts[2], *parts[3:])
        if setting.dtype not in DTYPES:
            raise ValueError(f"setting {text!r}: dtype must be one of {DTYPES}")
        if setting.atrous_impl not in ATROUS_IMPLS:
            raise ValueError(f"setting {text!r}: atrous impl must be one of {ATROUS_IMPLS}")
        if setting.output_stride not in (8, 16, 32):
            raise ValueError(f"setting {text!r}: output stride must be 8, 16 or 32")
        return setting


def _csv(cast):
    return lambda text: [cast(v) for v in text.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = parser.add_argument_group("what to run")
    what.add_argument("--settings", type=_csv(Setting.parse), default=None,
                      help="ordered DEPTH/OS/DTYPE[/IMPL] list; overrides the four lists below")
    what.add_argument("--depths", type=_csv(int), default=[101, 50])
    what.add_argument("--output_strides", type=_csv(int), default=[16, 8])
    what.add_argument("--dtypes", type=_csv(str), default=["bfloat16", "float32"])
    what.add_argument("--atrous_impls", type=_csv(str), default=["xla"])
    what.add_argument("--frameworks", type=_csv(str), default=["jax", "torch"],
                      help="jax, torch or both")
    what.add_argument("--with_input", action="store_true",
                      help="also feed ours through the host input path (files read and "
                      "decoded by train_batches on threads, then prefetch) and compare "
                      "with the resident step")
    what.add_argument("--input", choices=["voc_like", "synthetic"], default="voc_like",
                      help="--with_input data: voc_like = VOC-sized JPEG + PNG files written "
                      "to a temporary VOCdevkit folder and read by voc.VocFolder, as a VOC "
                      "run reads them; synthetic = generated arrays kept in RAM (no decode)")
    shape = parser.add_argument_group("shapes (defaults: the paper's VOC setting)")
    shape.add_argument("--crop", type=int, default=513)
    shape.add_argument("--canvas", type=int, default=None, help="host canvas; default: crop")
    shape.add_argument("--batch", type=int, default=16)
    shape.add_argument("--width", type=int, default=64, help="ResNet root width (64: standard)")
    shape.add_argument("--aspp_channels", type=int, default=256)
    shape.add_argument("--num_classes", type=int, default=NUM_CLASSES)
    shape.add_argument("--devices", type=int, default=1, help="devices in the data mesh")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--warmup", type=int, default=3)
    timing.add_argument("--steps", type=int, default=20, help="timed steps (each loop)")
    timing.add_argument("--input_examples", type=int, default=64,
                        help="--with_input: examples generated (files, or arrays in RAM)")
    timing.add_argument("--input_workers", type=int, default=8,
                        help="--with_input: decoding threads (configs/voc.py's "
                        "data.num_workers)")
    timing.add_argument("--prefetch", type=int, default=2, help="--with_input: host prefetch")
    levers = parser.add_argument_group(
        "levers (NOTES.md), each switched off to measure what it gives; XLA's own flags, "
        "e.g. --xla_gpu_autotune_level=0, go in the XLA_FLAGS environment variable")
    levers.add_argument("--no_donate", action="store_true",
                        help="ours: do not donate the state's buffers to the step")
    timing.add_argument("--time_budget_s", type=float, default=None,
                        help="skip jobs that would end after this many seconds from the start")
    timing.add_argument("--job_timeout_s", type=float, default=420.0)
    timing.add_argument("--job_estimate_s", type=float, default=None,
                        help="--time_budget_s: assumed length of a job before one of its "
                        "kind has run (default 150 s for ours, 90 s for torch)")
    timing.add_argument("--no_subprocess", action="store_true",
                        help="run every job in this process (peak memory then accumulates)")
    theirs = parser.add_argument_group("torchvision")
    theirs.add_argument("--torch_compile", default="none",
                        choices=["none", "default", "reduce-overhead", "max-autotune",
                                 "max-autotune-no-cudagraphs"],
                        help="torch.compile mode for the model (compile time is in warm-up)")
    theirs.add_argument("--torch_os16_rates", type=_csv(int), default=[6, 12, 18],
                        help="ASPP rates of torchvision's OS16 variant (torchvision's own "
                        "DeepLabHead hard-codes 12,24,36)")
    parser.add_argument("--output_dir", default=None, help="writes results.json and results.md")
    parser.add_argument("--compilation_cache_dir", default=None,
                        help="JAX persistent compilation cache (helps a rerun)")
    parser.add_argument("--_job", default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.settings is None:
        try:
            args.settings = [Setting.parse(f"{d}/{o}/{t}/{i}") for d in args.depths
                             for o in args.output_strides for t in args.dtypes
                             for i in args.atrous_impls]
        except ValueError as error:
            parser.error(str(error))
    for framework in args.frameworks:
        if framework not in ("jax", "torch"):
            parser.error(f"--frameworks: {framework!r} is not jax or torch")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    args.canvas = args.canvas or args.crop
    if args.canvas < args.crop:
        parser.error("--canvas must be >= --crop")
    if args.with_input and args.input == "voc_like" and args.canvas < 500:
        parser.error(f"--input voc_like writes 500x375 and 375x500 images, larger than "
                     f"--canvas {args.canvas}: pass --canvas 513 (or --input synthetic)")
    return args


def multi_grid(depth: int) -> tuple[int, ...]:
    """The paper's (1, 2, 4) where block4 has 3 units; 1s for the test-sized depths."""
    from deeplab_jax.models.resnet import UNITS_PER_BLOCK

    units = UNITS_PER_BLOCK[depth][3]
    return (1, 2, 4) if units == 3 else (1,) * units


# --------------------------------------------------------------------------------------
# Ours (JAX)


def import_train_step():
    """deeplab_jax.train_step, even where ml_collections is not installed.

    train_step.py imports ml_collections for its annotations only (it has `from __future__
    import annotations`); the benchmark passes plain namespaces, so an empty stand-in module
    is enough when the real one is missing.
    """
    try:
        import ml_collections  # noqa: F401
    except ImportError:
        stub = types.ModuleType("ml_collections")
        stub.ConfigDict = dict  # never instantiated: annotations only
        stub.BENCHMARK_STUB = True
        sys.modules["ml_collections"] = stub
    return importlib.import_module("deeplab_jax.train_step")


def step_config(args: argparse.Namespace) -> types.SimpleNamespace:
    """What jit_train_step / create_optimizer read from the config: configs/voc.py's values."""
    ns = types.SimpleNamespace
    return ns(
        num_train_steps=30_000,
        optim=ns(base_learning_rate=0.007, poly_power=0.9, momentum=0.9, weight_decay=1e-4,
                 freeze_bn=False),
        data=ns(crop_size=(args.crop, args.crop), min_scale=0.5, max_scale=2.0,
                scale_step=0.25, flip=True, ignore_label=IGNORE_LABEL))


def synthetic_host_batch(args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    """A host batch as input_pipeline makes it: uint8 canvases, labels with ignore, sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (args.batch, args.canvas, args.canvas)
    labels = rng.integers(0, args.num_classes, shape, dtype=np.uint8)
    labels[rng.random(shape) < 0.05] = IGNORE_LABEL
    return {"image": rng.integers(0, 256, shape + (3,), dtype=np.uint8),
            "label": labels,
            "size": np.full((args.batch, 2), args.canvas, np.int32)}


def _device_info(device) -> dict[str, Any]:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        pass
    peak = stats.get("peak_bytes_in_use") if stats else None
    return {"device": getattr(device, "device_kind", str(device)),
            "peak_bytes": int(peak) if peak is not None else None,
            "bytes_limit": int(stats["bytes_limit"]) if stats and "bytes_limit" in stats
            else None}


def forward_flops(model, crop: int) -> float:
    """FLOPs of one image's training-mode forward, every conv tap counted (padding too).

    Read from the jaxpr of `model` (any atrous impl: build it with "xla"): 2 * output
    elements * kh * kw * C_in / groups per convolution, 2 * M * N * K per dot_general
    (the logits' resize). Independent of how XLA later lowers the convolutions, so it is
    the same for every impl, and it counts what torch's FlopCounterMode counts.
    """
    import jax
    import jax.extend
    import jax.numpy as jnp
    import numpy as np

    jaxprs_in_params = getattr(jax.extend.core, "jaxprs_in_params", None)
    if jaxprs_in_params is None:  # older JAX
        jaxprs_in_params = jax.core.jaxprs_in_params
    images = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True,
                                                    mutable=["batch_stats"]))(variables, images)
    total = 0.0

    def visit(jaxpr):
        nonlocal total
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                rhs = eqn.invars[1].aval
                out = eqn.outvars[0].aval
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
                taps = np.prod([rhs.shape[d] for d in spec[2:]])
                total += 2.0 * np.prod(out.shape) * taps * rhs.shape[spec[1]]
            elif eqn.primitive.name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval
                out = eqn.outvars[0].aval
                total += 2.0 * np.prod(out.shape) * np.prod([lhs.shape[d] for d in lhs_contract])
            for sub in jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return total


def run_jax(setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """One setting of ours: compile, warm up, time; optionally feed through the host path."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    if args.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
    train_step_lib = import_train_step()
    from deeplab_jax import parallel
    from deeplab_jax.models.deeplab import DeepLabV3
    from deeplab_jax import xla_cost

    devices = jax.devices()[:args.devices]
    mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
    parallel.check_global_batch_size(args.batch, mesh)
    replicated, sharded = parallel.replicated_sharding(mesh), parallel.data_sharding(mesh)
    model = DeepLabV3(num_classes=args.num_classes, depth=setting.depth,
                      output_stride=setting.output_stride, multi_grid=multi_grid(setting.depth),
                      aspp_channels=args.aspp_channels, width=args.width,
                      dtype={"bfloat16": jnp.bfloat16, "float32": jnp.float32}[setting.dtype],
                      atrous_impl=setting.atrous_impl)
    model_flops = 3 * args.batch * forward_flops(model.clone(atrous_impl="xla"), args.crop)
    config = step_config(args)
    optimizer = train_step_lib.create_optimizer(config.optim, config.num_train_steps)
    start = time.perf_counter()
    state = jax.jit(train_step_lib.create_train_state, static_argnums=(1, 2, 3),
                    out_shardings=replicated)(jax.random.key(0), model, optimizer,
                                              (args.crop, args.crop))
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    batch = parallel.to_global_batch(synthetic_host_batch(args), mesh)
    total_steps = args.warmup + 2 * args.steps + (args.steps + args.warmup
                                                  if args.with_input else 0)
    rngs = list(jax.random.split(jax.random.key(1), total_steps))
    step = train_step_lib.jit_train_step(config, replicated, sharded,
                                         donate_state=not args.no_donate)
    start = time.perf_counter()
    compiled = step.lower(state, batch, rngs[0]).compile()
    compile_s = time.perf_counter() - start
    flops = xla_cost.flops(compiled)
    memory = xla_cost.memory(compiled)
    census = hlo_census(compiled.as_text())

    def run(state, batch, rng):
        return compiled(state, batch, rng)

    def wait(state, metrics):
        jax.block_until_ready((metrics, jax.tree.leaves(state.params)[0]))

    start = time.perf_counter()
    for _ in range(args.warmup):
        state, metrics = run(state, batch, rngs.pop())
        wait(state, metrics)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        state, metrics = run(state, batch, rngs.pop())
        wait(state, metrics)
        times.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    for _ in range(args.steps):  # pipelined: dispatch runs ahead, one sync at the end
        state, metrics = run(state, batch, rngs.pop())
    wait(state, metrics)
    pipelined_s = (time.perf_counter() - begin) / args.steps
    loss = float(metrics["loss_sum"] / np.maximum(float(metrics["valid_pixels"]), 1.0))
    median = statistics.median(times)
    result = dict(
        framework="jax", setting=setting.name, depth=setting.depth,
        output_stride=setting.output_stride, dtype=setting.dtype,
        atrous_impl=setting.atrous_impl, batch=args.batch, crop=args.crop, width=args.width,
        num_params=int(num_params), init_s=init_s, compile_s=compile_s, warmup_s=warmup_s,
        median_step_ms=1e3 * median, min_step_ms=1e3 * min(times),
        step_times_ms=[1e3 * t for t in times], pipelined_step_ms=1e3 * pipelined_s,
        images_per_s=args.batch / median, flops_per_step=flops,
        flops_source="XLA cost analysis of the compiled step",
        tflops_per_s=flops / median / 1e12 if flops else None,
        hlo_ops=census["ops"], conv_lowerings=census["conv_lowerings"],
        model_flops_per_step=model_flops,
        model_flops_source="3 x forward conv+matmul FLOPs from the jaxpr, every tap counted",
        model_tflops_per_s=model_flops / median / 1e12,
        mfu_of_790=model_flops / median / 1e12 / PEAK_TFLOPS,
        final_loss=loss, loss_is_finite=math.isfinite(loss), xla_memory=memory,
        **_device_info(devices[0]))
    result["fraction_of_790"] = (result["tflops_per_s"] / PEAK_TFLOPS
                                 if result["tflops_per_s"] is not None else None)
    if args.with_input:
        result["with_input"] = _feed_through_input_path(args, mesh, run, wait, state, rngs,
                                                        pipelined_s)
    return result


_HLO_OPCODE = re.compile(r" = [^=]*?\b([a-z][a-z0-9-]*)\(")
CENSUS_OPS = ("fusion", "convolution", "custom-call", "transpose", "copy", "all-reduce")


def hlo_census(hlo_text: str) -> dict[str, Any]:
    """What the compiled step is made of, for NOTES.md's levers: op counts and conv windows.

    `ops` counts the instructions of the optimized module by opcode (fusions, convolutions
    and cuDNN custom-calls, transposes and copies, which NHWC throughout should keep near
    zero, all-reduces); `conv_lowerings` lists each distinct convolution's kind and window,
    as atrous_conv.py reads them (a 3x3 window with rhs_dilate is native dilation).
    """
    ops = collections.Counter()
    for line in hlo_text.splitlines():
        match = _HLO_OPCODE.search(line)
        if match and match.group(1) in CENSUS_OPS:
            ops[match.group(1)] += 1
    lowerings = _load_sibling("gpu_speed", "atrous_conv").conv_lowerings(hlo_text)
    return {"ops": {op: ops.get(op, 0) for op in CENSUS_OPS}, "conv_lowerings": lowerings}


def _input_source(args, folder: str):
    """The examples `--with_input` feeds, and a description of them."""
    from deeplab_jax.data import synthetic, voc

    if args.input == "synthetic":
        size = min(args.canvas, args.crop)
        return (synthetic.SyntheticShapes("train", args.input_examples, image_size=size),
                f"synthetic_shapes, {args.input_examples} examples of {size}^2 generated "
                "once and kept in RAM (no decoding)")
    throughput = _load_sibling("input_throughput", "benchmark")
    throughput.make_voc_like_folder(folder, args.input_examples)
    source = voc.VocFolder(folder, "train")
    kb = throughput.mean_file_kb(voc.example_files(folder, image_id)[0]
                                 for image_id in source.ids)
    return source, (f"voc_like: {len(source)} VOC-sized JPEG ({kb:.0f} KB mean) + palette "
                    "PNG files read by voc.VocFolder (from the page cache after the first "
                    f"pass), decoded on {args.input_workers} threads")


def _load_sibling(folder: str, name: str):
    """experiments/FOLDER/NAME.py as a module (experiments are scripts, not a package)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), folder,
                        f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _feed_through_input_path(args, mesh, run, wait, state, rngs, resident_s):
    """Steps fed by input_pipeline.train_batches + prefetch, as train.py feeds them."""
    from deeplab_jax import parallel
    from deeplab_jax.data import input_pipeline

    with tempfile.TemporaryDirectory(prefix="gpu_speed_input_") as folder:
        start = time.perf_counter()
        source, description = _input_source(args, folder)
        generate_s = time.perf_counter() - start

        def batches(num_workers):
            return input_pipeline.train_batches(
                source, global_batch_size=args.batch, seed=0, start_step=0,
                canvas_size=(args.canvas, args.canvas), ignore_label=IGNORE_LABEL,
                num_workers=num_workers)

        host_only = batches(args.input_workers)  # the host path alone, no device
        next(host_only)  # thread pool start-up and first reads
        begin = time.perf_counter()
        for _ in range(args.steps):
            next(host_only)
        host_batch_s = (time.perf_counter() - begin) / args.steps
        stream = input_pipeline.prefetch(batches(args.input_workers),
                                         buffer_size=args.prefetch)
        for _ in range(args.warmup):
            state, metrics = run(state, parallel.to_global_batch(next(stream), mesh),
                                 rngs.pop())
        wait(state, metrics)
        begin = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = run(state, parallel.to_global_batch(next(stream), mesh),
                                 rngs.pop())
        wait(state, metrics)
        fed_s = (time.perf_counter() - begin) / args.steps
    return dict(
        source=description, input_workers=args.input_workers,
        generate_s=generate_s, host_batch_ms=1e3 * host_batch_s,
        host_batches_per_s=1.0 / host_batch_s, fed_step_ms=1e3 * fed_s,
        resident_step_ms=1e3 * resident_s, fed_over_resident=fed_s / resident_s,
        input_bound=bool(fed_s > 1.05 * resident_s))


# --------------------------------------------------------------------------------------
# Theirs (torchvision)


def torch_status() -> tuple[bool, str]:
    try:
        import torch
        import torchvision
    except Exception as error:  # noqa: BLE001
        return False, f"{type(error).__name__}: {error}"
    return True, f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def build_torchvision_deeplab(depth: int, output_stride: int, num_classes: int,
                              os16_rates: Sequence[int] = (6, 12, 18)):
    """torchvision's DeepLabV3-ResNet at OS8 (its default) or OS16.

    OS8 is `deeplabv3_resnet{50,101}(weights=None, weights_backbone=None, aux_loss=False)`.
    torchvision has no OS16 switch: its constructors hard-code
    replace_stride_with_dilation=[False, True, True] and DeepLabHead hard-codes ASPP rates
    (12, 24, 36). OS16 is therefore built as `_deeplabv3_resnet` builds the model (the
    backbone through IntermediateLayerGetter, DeepLabHead, DeepLabV3) from
    resnet(replace_stride_with_dilation=[False, False, True]), with the head's ASPP replaced
    by torchvision's own ASPP at `os16_rates` (same parameters; only the dilations differ).
    """
    import torchvision
    from torchvision.models import segmentation
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3

    if output_stride not in (8, 16):
        raise ValueError("the torchvision comparison covers output strides 8 and 16")
    if depth in (50, 101):
        if output_stride == 8:
            constructor = getattr(segmentation, f"deeplabv3_resnet{depth}")
            model = constructor(weights=None, weights_backbone=None, num_classes=num_classes,
                                aux_loss=False)
            return model, "torchvision constructor, ASPP rates (12, 24, 36)"
        resnet = functools.partial(getattr(torchvision.models, f"resnet{depth}"), weights=None)
    else:
        # Our test depths (14, 26...), for the CPU check of this code path only: the same
        # construction over torchvision's ResNet class with our units per block.
        from deeplab_jax.models.resnet import UNITS_PER_BLOCK
        from torchvision.models.resnet import Bottleneck, ResNet

        if depth not in UNITS_PER_BLOCK:
            raise ValueError(f"ResNet depth {depth} is not defined; use one of "
                             f"{sorted(UNITS_PER_BLOCK)}")
        resnet = functools.partial(ResNet, Bottleneck, list(UNITS_PER_BLOCK[depth]))
    backbone = resnet(replace_stride_with_dilation=[False, output_stride == 8, True])
    backbone = IntermediateLayerGetter(backbone, return_layers={"layer4": "out"})
    head = DeepLabHead(2048, num_classes)  # ASPP (12, 24, 36): torchvision's OS8 rates
    if output_stride == 8:
        return DeepLabV3(backbone, head, None), "ASPP rates (12, 24, 36)"
    head[0] = ASPP(2048, list(os16_rates))
    return (DeepLabV3(backbone, head, None),
            f"replace_stride_with_dilation=[False, False, True], ASPP rates "
            f"{tuple(os16_rates)} (torchvision's DeepLabHead default is (12, 24, 36))")


def run_torch(setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 as JAX's default precision
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model, construction = build_torchvision_deeplab(setting.depth, setting.output_stride,
                                                    args.num_classes, args.torch_os16_rates)
    num_params = sum(p.numel() for p in model.parameters())
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((args.batch, 3, args.crop, args.crop), generator=generator)
    images = (images * 2 - 1).to(device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.num_classes, (args.batch, args.crop, args.crop),
                           generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.05] = IGNORE_LABEL
    labels = labels.to(device)
    bf16 = setting.dtype == "bfloat16"
    forward = model if args.torch_compile == "none" else torch.compile(
        model, mode=None if args.torch_compile == "default" else args.torch_compile)

    def step(net):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(net(images)["out"], labels)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:
        step(model)  # eager: the counter sees every aten op
    flops = float(counter.get_total_flops())
    sync()
    start = time.perf_counter()
    for _ in range(args.warmup):
        step(forward)
    sync()
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        step(forward)
        sync()
        times.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    for _ in range(args.steps):
        loss = step(forward)
    sync()
    pipelined_s = (time.perf_counter() - begin) / args.steps
    median = statistics.median(times)
    loss = float(loss.detach())
    return dict(
        framework="torch", setting=f"{setting.depth}/{setting.output_stride}/{setting.dtype}",
        depth=setting.depth, output_stride=setting.output_stride, dtype=setting.dtype,
        batch=args.batch, crop=args.crop, construction=construction,
        torch=torch.__version__, torchvision=torchvision.__version__,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        config=("channels_last, " + ("bf16 autocast" if bf16 else "float32 (TF32 allowed)")
                + ", cudnn.benchmark, torch.compile=" + args.torch_compile),
        num_params=int(num_params), warmup_s=warmup_s, median_step_ms=1e3 * median,
        min_step_ms=1e3 * min(times), step_times_ms=[1e3 * t for t in times],
        pipelined_step_ms=1e3 * pipelined_s, images_per_s=args.batch / median,
        flops_per_step=flops, flops_source="torch.utils.flop_counter.FlopCounterMode",
        tflops_per_s=flops / median / 1e12, fraction_of_790=flops / median / 1e12 / PEAK_TFLOPS,
        mfu_of_790=flops / median / 1e12 / PEAK_TFLOPS,  # every tap counted, as model FLOPs
        final_loss=loss, loss_is_finite=math.isfinite(loss),
        device=torch.cuda.get_device_name() if cuda else "cpu",
        peak_bytes=int(torch.cuda.max_memory_allocated()) if cuda else None)


# --------------------------------------------------------------------------------------
# Orchestration


def run_job(kind: str, setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one job here or in a subprocess; always returns a result dict (maybe an error)."""
    started = time.perf_counter()
    if args.no_subprocess:
        try:
            result = (run_jax if kind == "jax" else run_torch)(setting, args)
        except Exception as error:  # noqa: BLE001  (one failed row, not a failed run)
            result = dict(framework=kind, setting=setting.name,
                          error=f"{type(error).__name__}: {error}")
    else:
        result = _run_subprocess(kind, setting, args)
    result["job_wall_s"] = time.perf_counter() - started
    return result


def _run_subprocess(kind: str, setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        job = dict(kind=kind, setting=dataclasses.asdict(setting),
                   args={k: v for k, v in vars(args).items() if k != "settings"},
                   output=os.path.join(folder, "result.json"))
        job_path = os.path.join(folder, "job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        command = [sys.executable, os.path.abspath(__file__), "--_job", job_path]
        try:
            completed = subprocess.run(command, timeout=args.job_timeout_s, cwd=REPO_ROOT)
        except subprocess.TimeoutExpired:
            return dict(framework=kind, setting=setting.name,
                        error=f"timed out after {args.job_timeout_s:.0f}s")
        if completed.returncode != 0 or not os.path.exists(job["output"]):
            return dict(framework=kind, setting=setting.name,
                        error=f"worker exited with status {completed.returncode} (its "
                              "output is above)")
        with open(job["output"]) as f:
            return json.load(f)


def _worker(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    args = argparse.Namespace(**job["args"])
    setting = Setting(**job["setting"])
    result = (run_jax if job["kind"] == "jax" else run_torch)(setting, args)
    with open(job["output"], "w") as f:
        json.dump(result, f)


def _fmt(value, spec: str, scale: float = 1.0, missing: str = "n/a") -> str:
    return missing if value is None else format(value * scale, spec)


def _summary_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"[{result['framework']}] {result['setting']}: ERROR {result['error']}"
    if result.get("skipped"):
        return f"[{result['framework']}] {result['setting']}: skipped ({result['skipped']})"
    line = (f"[{result['framework']}] {result['setting']}: "
            f"{result['median_step_ms']:.2f} ms/step, {result['images_per_s']:.1f} img/s, "
            f"{_fmt(result.get('flops_per_step'), '.3g', 1e-12)} TFLOP/step, "
            f"{_fmt(result.get('tflops_per_s'), '.3g')} TFLOP/s "
            f"({_fmt(result.get('fraction_of_790'), '.1f', 100)}% of 790)"
            + (f", model-FLOPs MFU {100 * result['mfu_of_790']:.1f}%"
               if "mfu_of_790" in result else "") + ", peak "
            f"{_fmt(result.get('peak_bytes'), '.2f', 2**-30)} GiB"
            + (f" (XLA plan {result['xla_memory']['peak_memory_in_bytes'] / 2**30:.3g} GiB)"
               if (result.get("xla_memory") or {}).get("peak_memory_in_bytes") is not None
               else "") + f", loss {result['final_loss']:.3f}")
    if "with_input" in result:
        feed = result["with_input"]
        line += (f"\n    with input: {feed['fed_step_ms']:.2f} ms/step fed vs "
                 f"{feed['resident_step_ms']:.2f} resident (x{feed['fed_over_resident']:.2f}); "
                 f"host alone {feed['host_batch_ms']:.1f} ms/batch -> "
                 f"{'INPUT-BOUND' if feed['input_bound'] else 'not input-bound'}")
    return line


def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    lines = [f"# Training-step benchmark ({env['jax_backend']}: {env['jax_device']})", "",
             f"JAX {env['jax']}, flax {env['flax']}, optax {env['optax']}; {env['torch']}. "
             f"Batch {report['args']['batch']}, crop {report['args']['crop']}, "
             f"{report['args']['steps']} timed steps after {report['args']['warmup']} "
             "warm-up; median of block_until_ready'd steps.", ""]
    if env["jax_backend"] == "cpu":
        lines += ["**CPU backend: these timings are correctness checks, not speed figures.**",
                  ""]
    if report["args"].get("no_donate") or env.get("xla_flags"):
        lines += ["**Levers changed for this run:** "
                  + ("state not donated (--no_donate); " if report["args"].get("no_donate")
                     else "") + f"XLA_FLAGS={env.get('xla_flags') or '(unset)'}", ""]
    lines += ["| model | OS | dtype | atrous impl | ours ms | ours img/s | ours peak GiB | "
              "ours TFLOP/step (XLA) | ours TFLOP/s (XLA) | ours % of 790 (XLA) | "
              "ours MFU % (model FLOPs) | theirs ms | theirs img/s | theirs peak GiB | "
              "theirs TFLOP/step (torch) | theirs TFLOP/s | ours/theirs time |",
              "| --- " * 17 + "|"]
    torch_rows = {r["setting"]: r for r in report["torch"]}

    def cells(r):
        if not r or "error" in r or r.get("skipped"):
            note = (r.get("error") or r.get("skipped") or "not run") if r else "not run"
            return [note.replace("|", "/")[:80]] + [""] * 4
        peak = _fmt(r.get("peak_bytes"), ".2f", 2**-30)
        planned = (r.get("xla_memory") or {}).get("peak_memory_in_bytes")
        if r.get("peak_bytes") is None and planned is not None:
            peak += f" (XLA plan {planned / 2**30:.2g})"
        return [f"{r['median_step_ms']:.2f}", f"{r['images_per_s']:.1f}", peak,
                _fmt(r.get("flops_per_step"), ".3g", 1e-12),
                _fmt(r.get("tflops_per_s"), ".3g")]

    for ours in report["jax"]:
        key = "/".join(ours["setting"].split("/")[:3])
        theirs = torch_rows.get(key, {})
        model, stride, dtype, impl = ours["setting"].split("/")
        ours_cells = cells(ours)
        ok = "median_step_ms" in ours
        ours_cells += ([_fmt(ours.get("fraction_of_790"), ".1f", 100),
                        _fmt(ours.get("mfu_of_790"), ".1f", 100)] if ok else ["", ""])
        ratio = ""
        if ok and "median_step_ms" in theirs:
            ratio = f"{ours['median_step_ms'] / theirs['median_step_ms']:.2f}"
        lines.append("| " + " | ".join([f"R{model}", stride, dtype, impl] + ours_cells
                                       + cells(theirs) + [ratio]) + " |")
    feeds = [r for r in report["jax"] if "with_input" in r]
    if feeds:
        lines += ["", "## Fed through the host input path", "",
                  "| setting | resident ms/step | fed ms/step | fed/resident | host ms/batch "
                  "(no device) | input-bound? | data |", "| --- " * 7 + "|"]
        for r in feeds:
            f = r["with_input"]
            lines.append(f"| {r['setting']} | {f['resident_step_ms']:.2f} | "
                         f"{f['fed_step_ms']:.2f} | {f['fed_over_resident']:.2f} | "
                         f"{f['host_batch_ms']:.1f} | {'yes' if f['input_bound'] else 'no'} | "
                         f"{f['source']} |")
    lines += ["", "Notes:",
              "- ours: deeplab_jax DeepLabV3 (ResNet-v2, multi-grid (1,2,4), ASPP rates "
              "(6,12,18) at OS16, (12,24,36) at OS8), the package's train_step including the "
              "on-device scale/crop/flip warp, uint8 canvases resident on the device.",
              "- theirs: torchvision DeepLabV3" + "".join(sorted(
                  {f"; OS{r['output_stride']}: {r['construction']}" for r in report["torch"]
                   if "construction" in r})) + ". Torchvision's head has an extra 3x3 256->256 conv and dropout; its "
              "ResNet is v1.5 without multi-grid; fed pre-cropped float tensors.",
              "- FLOPs: XLA's cost analysis counts only the multiply-adds whose input lies "
              "inside the feature map (padding taps excluded, so large atrous rates count "
              "less), and what it counts depends on the atrous impl; torch's FlopCounterMode "
              "and our 'model FLOPs' (3 x the forward's conv and matmul FLOPs, from the "
              "jaxpr, impl-independent) count every tap. MFU uses model FLOPs.",
              "- ours/theirs time < 1 means ours is faster."]
    if report.get("torch_skipped"):
        lines += [f"- torchvision half skipped: {report['torch_skipped']}"]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    import flax
    import jax
    import optax

    ok, torch_line = torch_status()
    return dict(jax=jax.__version__, jax_backend=jax.default_backend(),
                jax_device=getattr(jax.devices()[0], "device_kind", str(jax.devices()[0])),
                jax_device_count=jax.device_count(), flax=flax.__version__,
                optax=optax.__version__, torch=torch_line if ok else f"no torch ({torch_line})",
                python=platform.python_version(), xla_flags=os.environ.get("XLA_FLAGS", ""))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args._job:
        _worker(args._job)
        return {}
    torch_ok, torch_line = torch_status()
    want_torch = "torch" in args.frameworks
    if want_torch and args.no_subprocess and torch_ok:
        # JAX would otherwise take 75% of the GPU before torch runs in this process.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env = environment()
    print(f"JAX {env['jax']} on {env['jax_backend']} ({env['jax_device']}); {env['torch']}",
          flush=True)
    if env["jax_backend"] == "cpu":
        print("CPU backend: timings here are correctness checks, not speed figures.")
    torch_skipped = None
    if want_torch and not torch_ok:
        torch_skipped = f"torch is not importable ({torch_line})"
        print(f"torch is not importable here ({torch_line}): skipping torchvision's half.")
    report = dict(env=env, args={k: v for k, v in vars(args).items()
                                 if k not in ("settings", "_job")},
                  settings=[s.name for s in args.settings], jax=[], torch=[],
                  torch_skipped=torch_skipped)
    start = time.perf_counter()
    durations: dict[str, list[float]] = {"jax": [], "torch": []}
    torch_done = set()

    def attempt(kind, setting):
        estimate = max(durations[kind], default=args.job_estimate_s
                       or DEFAULT_JOB_SECONDS[kind])
        elapsed = time.perf_counter() - start
        if args.time_budget_s is not None and elapsed + estimate > args.time_budget_s:
            result = dict(framework=kind, setting=setting.name if kind == "jax" else
                          "/".join(setting.name.split("/")[:3]),
                          skipped=f"time budget: {elapsed:.0f}s used, ~{estimate:.0f}s "
                                  f"needed, {args.time_budget_s:.0f}s allowed")
        else:
            print(f"--- {kind} {setting.name if kind == 'jax' else setting.torch_key} "
                  f"(t={elapsed:.0f}s)", flush=True)
            result = run_job(kind, setting, args)
            if "error" not in result:
                durations[kind].append(result["job_wall_s"])
        print(_summary_line(result), flush=True)
        report[kind].append(result)
        if args.output_dir:
            write_report(report, args.output_dir)

    for setting in args.settings:
        if "jax" in args.frameworks:
            attempt("jax", setting)
        if want_torch and torch_ok and setting.torch_key not in torch_done:
            torch_done.add(setting.torch_key)
            attempt("torch", setting)
    print(markdown(report))
    if args.output_dir:
        write_report(report, args.output_dir)
        print(f"wrote {os.path.join(args.output_dir, 'results.json')} and results.md")
    return report


def write_report(report: dict[str, Any], output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(markdown(report))


if __name__ == "__main__":
    main()
