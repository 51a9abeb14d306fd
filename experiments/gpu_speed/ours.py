"""Our side of the GPU benchmark: deeplab_jax's DeepLabv3 trained by the package's own step.

The model and the step come from `configs/voc.py` itself (the paper's setting: poly lr,
momentum, weight decay, BN decay, the on-device random scale/crop/flip), changed only
where the setting says (depth, output stride, dtype, atrous impl) and in the benchmark's
shapes (crop, batch, width); the step is compiled by `analysis/step_profile.py` exactly as
training compiles it. Timed on a synthetic batch already in device memory, and optionally
fed through the host input path (real files decoded on threads, as a VOC run reads them).
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from configs import voc
from deeplab_jax import config_lib, parallel
from deeplab_jax.analysis import hlo, model_flops, step_profile, xla_cost
from deeplab_jax.data import input_pipeline, synthetic
from deeplab_jax.data import voc as voc_data
from deeplab_jax.models import get_model
from experiments.gpu_speed.settings import (IGNORE_LABEL, PEAK_TFLOPS, Setting, multi_grid,
                                            synthetic_host_batch)
from experiments.input_throughput.benchmark import make_voc_like_folder, mean_file_kb


def step_config(setting: Setting, args: Any) -> ml_collections.ConfigDict:
    """configs/voc.py at this setting and the benchmark's shapes, resolved."""
    config = voc.get_config()
    model = config.model
    model.depth, model.output_stride = setting.depth, setting.output_stride
    model.dtype, model.atrous_impl = setting.dtype, setting.atrous_impl
    model.multi_grid = multi_grid(setting.depth)
    model.width, model.deeplabv3.aspp_channels = args.width, args.aspp_channels
    # None: the paper's rates at this stride; toy crops need smaller ones (config checks).
    model.deeplabv3.atrous_rates = tuple(int(r) for r in args.atrous_rates) if args.atrous_rates else None
    config.data.crop_size = (args.crop, args.crop)
    config.data.canvas_size = (args.canvas, args.canvas)
    config.data.batch_size = args.batch
    return config_lib.resolve_config(config)


def device_info(device) -> dict[str, Any]:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (not implemented on CPU)
        stats = None
    peak = (stats or {}).get("peak_bytes_in_use")
    return {"device": getattr(device, "device_kind", str(device)),
            "peak_bytes": int(peak) if peak is not None else None,
            "bytes_limit": int(stats["bytes_limit"]) if stats and "bytes_limit" in stats
            else None}


def run(setting: Setting, args: Any) -> dict[str, Any]:
    """One setting of ours: compile, warm up, time; optionally feed through the host path."""
    if args.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
    config = step_config(setting, args)
    devices = jax.devices()[:args.devices]
    mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
    parallel.check_global_batch_size(args.batch, mesh)
    model = get_model(config.model, args.num_classes)
    forward = model_flops.forward_flops(model.clone(atrous_impl="xla"), args.crop)
    model_flops_per_step = 3 * args.batch * forward
    start = time.perf_counter()
    compiled, state, _ = step_profile.compile_train_step(
        config, args.num_classes, args.batch, mesh, donate_state=not args.no_donate)
    compile_s = time.perf_counter() - start
    batch = parallel.to_global_batch(
        synthetic_host_batch(args.batch, args.canvas, args.num_classes), mesh)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    flops, memory = xla_cost.flops(compiled), xla_cost.memory(compiled)
    census = hlo.census(compiled.as_text())
    rngs = list(jax.random.split(jax.random.key(1), args.warmup + 2 * args.steps
                                 + (args.steps + args.warmup if args.with_input else 0)))

    def wait(state, metrics):
        jax.block_until_ready((metrics, jax.tree.leaves(state.params)[0]))

    start = time.perf_counter()
    for _ in range(args.warmup):
        state, metrics = compiled(state, batch, rngs.pop())
        wait(state, metrics)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        state, metrics = compiled(state, batch, rngs.pop())
        wait(state, metrics)
        times.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    for _ in range(args.steps):  # pipelined: dispatch runs ahead, one sync at the end
        state, metrics = compiled(state, batch, rngs.pop())
    wait(state, metrics)
    pipelined_s = (time.perf_counter() - begin) / args.steps
    loss = float(metrics["loss_sum"] / np.maximum(float(metrics["valid_pixels"]), 1.0))
    median = statistics.median(times)
    result = dict(
        framework="jax", setting=setting.name, depth=setting.depth,
        output_stride=setting.output_stride, dtype=setting.dtype,
        atrous_impl=setting.atrous_impl, batch=args.batch, crop=args.crop, width=args.width,
        atrous_rates=list(config.model.deeplabv3.atrous_rates), config="configs/voc.py",
        num_params=int(num_params), compile_s=compile_s, warmup_s=warmup_s,
        median_step_ms=1e3 * median, min_step_ms=1e3 * min(times),
        step_times_ms=[1e3 * t for t in times], pipelined_step_ms=1e3 * pipelined_s,
        images_per_s=args.batch / median, flops_per_step=flops,
        flops_source="XLA cost analysis of the compiled step",
        tflops_per_s=flops / median / 1e12 if flops else None,
        hlo_ops=census["ops"], conv_lowerings=census["conv_lowerings"],
        model_flops_per_step=model_flops_per_step,
        model_flops_source="3 x forward conv+matmul FLOPs from the jaxpr, every tap counted",
        model_tflops_per_s=model_flops_per_step / median / 1e12,
        mfu_of_790=model_flops_per_step / median / 1e12 / PEAK_TFLOPS,
        final_loss=loss, loss_is_finite=math.isfinite(loss), xla_memory=memory,
        **device_info(devices[0]))
    result["fraction_of_790"] = (result["tflops_per_s"] / PEAK_TFLOPS
                                 if result["tflops_per_s"] is not None else None)
    if args.with_input:
        result["with_input"] = _feed_through_input_path(
            args, mesh, compiled, wait, state, rngs, pipelined_s)
    return result


def _input_source(args: Any, folder: str):
    """The examples `--with_input` feeds, and a description of them."""
    if args.input == "synthetic":
        size = min(args.canvas, args.crop)
        return (synthetic.SyntheticShapes("train", args.input_examples, image_size=size),
                f"synthetic_shapes, {args.input_examples} examples of {size}^2 generated "
                "once and kept in RAM (no decoding)")
    make_voc_like_folder(folder, args.input_examples)
    source = voc_data.VocFolder(folder, "train")
    kb = mean_file_kb(voc_data.example_files(folder, image_id)[0] for image_id in source.ids)
    return source, (f"voc_like: {len(source)} VOC-sized JPEG ({kb:.0f} KB mean) + palette "
                    "PNG files read by voc.VocFolder (from the page cache after the first "
                    f"pass), decoded on {args.input_workers} threads")


def _feed_through_input_path(args, mesh, compiled, wait, state, rngs, resident_s):
    """Steps fed by input_pipeline.train_batches + prefetch, as training feeds them."""
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
            state, metrics = compiled(state, parallel.to_global_batch(next(stream), mesh),
                                      rngs.pop())
        wait(state, metrics)
        begin = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = compiled(state, parallel.to_global_batch(next(stream), mesh),
                                      rngs.pop())
        wait(state, metrics)
        fed_s = (time.perf_counter() - begin) / args.steps
    return dict(
        source=description, input_workers=args.input_workers,
        generate_s=generate_s, host_batch_ms=1e3 * host_batch_s,
        host_batches_per_s=1.0 / host_batch_s, fed_step_ms=1e3 * fed_s,
        resident_step_ms=1e3 * resident_s, fed_over_resident=fed_s / resident_s,
        input_bound=bool(fed_s > 1.05 * resident_s))
