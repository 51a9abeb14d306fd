"""Our jitted CPU training step against the same model's step in PyTorch, on the same cores.

    python -m experiments.cpu_speed.compare --torch_python=/path/to/venv/bin/python \
        --output_dir=experiments/cpu_speed/results [--config=configs/synthetic.py]

Ours: the config's model (default: the embedded default, a depth-14 width-16 DeepLabv3 at
OS8 on 57x57 images, batch 16) trained by the package's own step (`training/step.py`:
augmentation warp, BN over the batch, masked cross-entropy, L2 on the kernels, SGD with
momentum), compiled once, timed after warm-up, each step waited for. Theirs: the same model
built with torch.nn (`torch_step.py`, run by `--torch_python`, an interpreter with torch;
it needs no JAX), its step eager and `torch.compile`d, channels_last, the same thread count.
The two are checked to be the same model: parameter counts equal, forward FLOPs equal (every
convolution tap counted on both sides; the aligned-corners upsampling is two matmuls in ours
and not counted by torch's counter, so it is reported apart). Each side runs in its own
process, one after the other, so neither shares the cores with the other.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags
from jax.sharding import Mesh

from deeplab_jax import config_lib, parallel
from deeplab_jax.analysis import model_flops, step_profile, xla_cost
from deeplab_jax.data import augment, datasets
from deeplab_jax.models import get_model
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags
from deeplab_jax.training.step import augment_config_kwargs
from experiments.results_files import write_results

PROGRAM = "python -m experiments.cpu_speed.compare"
HERE = os.path.dirname(os.path.abspath(__file__))


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    config_flags.DEFINE_config_file("config", "configs/synthetic.py", "The config whose step "
                                    "is timed (--config.FIELD=VALUE overrides a field).", **d)
    flags.DEFINE_string("torch_python", None, "A Python with torch (torch_step.py's side).",
                        **d)
    flags.DEFINE_integer("steps", 30, "Timed steps.", **d)
    flags.DEFINE_integer("warmup", 5, "Warm-up steps (torch.compile compiles in them).", **d)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)


def load_config(flag_values: flags.FlagValues):
    """The --config flag's config, overrides checked and derived fields filled in."""
    return config_lib.resolve_config(config_lib.config_from_flag(flag_values["config"]))


def model_spec(config, num_classes: int) -> dict[str, Any]:
    """What torch_step.py builds: our model's layers, from our own plan."""
    model = config.model
    if model.architecture != "deeplabv3":
        raise SystemExit(f"{PROGRAM}: torch_step.py builds DeepLabv3 only, not "
                         f"{model.architecture!r}.")
    height, width = config.data.crop_size
    if height != width or (height - 1) % 8:
        raise SystemExit(f"{PROGRAM}: torch_step.py takes square 8k+1 crops (odd root "
                         f"outputs, where TF's SAME max pool pads symmetrically), not "
                         f"{(height, width)}.")
    plan = strides_and_rates(model.output_stride, UNITS_PER_BLOCK[model.depth],
                             model.multi_grid)
    return {"width": model.width, "plan": plan, "aspp_channels": model.deeplabv3.aspp_channels,
            "atrous_rates": list(model.deeplabv3.atrous_rates), "num_classes": num_classes,
            "bn_momentum": model.bn_momentum, "bn_epsilon": model.bn_epsilon,
            "weight_decay": config.optim.weight_decay,
            "learning_rate": config.optim.base_learning_rate,
            "optimizer": config.optim.optimizer, "momentum": config.optim.momentum,
            "batch": config.data.batch_size, "size": height}


def time_ours(config, num_classes: int, steps: int, warmup: int) -> dict[str, Any]:
    mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
    start = time.perf_counter()
    compiled, state, batch = step_profile.compile_train_step(
        config, num_classes, config.data.batch_size, mesh)
    compile_s = time.perf_counter() - start
    times = step_profile.time_train_steps(compiled, state, batch, steps, warmup, seed=1)
    rngs = jax.random.split(jax.random.key(1), steps)
    # The augmentation warp alone (ours runs it inside the step; torch is fed crops).
    warp = jax.jit(lambda rng, b: augment.augment_batch(
        rng, b["image"], b["label"], b["size"], **augment_config_kwargs(config.data)))
    jax.block_until_ready(warp(rngs[0], batch))
    warp_times = []
    for index in range(steps):
        begin = time.perf_counter()
        jax.block_until_ready(warp(rngs[index], batch))
        warp_times.append(time.perf_counter() - begin)
    model = get_model(config.model, num_classes)
    crop = config.data.crop_size
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                               jax.ShapeDtypeStruct((1, *crop, 3), np.float32))
    forward = model_flops.forward_flops(model, *crop)
    # The upsampling's two matmuls (`models/resize.py`): [H, h] then [W, w] per channel.
    feature = [-(-side // config.model.output_stride) for side in crop]
    resize = 2 * num_classes * crop[0] * feature[0] * feature[1] + \
        2 * num_classes * crop[1] * feature[1] * crop[0]
    return {"params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
            "forward_flops_per_image": forward,
            "xla_flops_per_step": xla_cost.flops(compiled),
            "compile_s": compile_s, "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times), "warp_median_ms": 1e3 * statistics.median(warp_times),
            "upsampling_flops_per_image": resize, "jax": jax.__version__}


def time_theirs(torch_python: str, spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        spec_path, result_path = (os.path.join(folder, name) for name in ("spec.json",
                                                                            "result.json"))
        with open(spec_path, "w") as file:
            json.dump(spec, file)
        subprocess.run([torch_python, os.path.join(HERE, "torch_step.py"), spec_path,
                        result_path], check=True)
        with open(result_path) as file:
            return json.load(file)


def markdown(report: dict[str, Any]) -> str:
    ours, theirs = report["ours"], report["theirs"]
    best = min((name for name in ("eager", "compiled") if "median_ms" in theirs.get(name, {})),
               key=lambda name: theirs[name]["median_ms"])
    lines = ["# The embedded default's CPU training step: ours against PyTorch", "",
             f"Command: `{report['command']}`  ", f"Machine: {machine.summary(report['machine'])}"
             f"  ", f"torch {theirs['torch']} with {theirs['threads']} threads; JAX "
             f"{ours['jax']}", "",
             "| | ms / step (median) | images / s | params | forward GFLOP / image |",
             "| --- | --- | --- | --- | --- |",
             f"| ours (jitted step, augmentation included) | **{ours['median_ms']:.1f}** | "
             f"{report['batch'] * 1e3 / ours['median_ms']:.0f} | {ours['params']:,} | "
             f"{(ours['forward_flops_per_image'] - ours['upsampling_flops_per_image']) / 1e9:.4f}"
             f" (+ {ours['upsampling_flops_per_image'] / 1e9:.4f} upsampling) |"]
    for name in ("eager", "compiled"):
        entry = theirs.get(name, {})
        if "median_ms" in entry:
            lines.append(f"| PyTorch {name} | {entry['median_ms']:.1f} | "
                         f"{report['batch'] * 1e3 / entry['median_ms']:.0f} | "
                         f"{theirs['params']:,} | {theirs['forward_flops_per_image'] / 1e9:.4f} |")
        else:
            lines.append(f"| PyTorch {name} | {entry.get('error', 'not run')[:120]} | | | |")
    lines += ["", f"Ours / PyTorch's fastest ({best}): **{ours['median_ms'] / theirs[best]['median_ms']:.2f}**"
              f" (< 1: ours is faster). Our augmentation warp alone: {ours['warp_median_ms']:.1f} "
              "ms per step (PyTorch is fed ready crops).", ""]
    if theirs.get("eager_top_ops"):
        lines += ["PyTorch eager's most expensive ops (self CPU time per step, torch.profiler; "
                  "ours op by op: `op_profile.py`):", "",
                  "| op | input shapes | ms / step | calls / step |", "| --- | --- | --- | --- |"]
        lines += [f"| `{op['op']}` | `{op['shapes']}` | {op['self_ms_per_step']:.2f} | "
                  f"{op['calls_per_step']:.0f} |" for op in theirs["eager_top_ops"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    config = load_config(args)
    num_classes = datasets.dataset_info(config.data)["num_classes"]
    spec = {**model_spec(config, num_classes), "steps": args.steps, "warmup": args.warmup,
            "threads": len(os.sched_getaffinity(0))}
    ours = time_ours(config, num_classes, args.steps, args.warmup)
    print(json.dumps(ours), flush=True)
    theirs = time_theirs(args.torch_python, spec) if args.torch_python else {}
    report = {"command": f"{PROGRAM} {' '.join(argv)}", "machine": machine.describe(),
              "batch": config.data.batch_size, "spec": spec, "ours": ours, "theirs": theirs}
    if theirs:
        report["same_params"] = theirs["params"] == ours["params"]
        print(markdown(report))
    if args.output_dir:
        write_results(args.output_dir, report, markdown(report) if theirs else None)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
