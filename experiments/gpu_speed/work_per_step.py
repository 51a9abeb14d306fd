"""The work each model does per training step: ours against torchvision's, counted, not timed.

    python -m experiments.gpu_speed.work_per_step --output_dir experiments/gpu_speed/work_per_step

FLOP counts need no GPU, so this table exists before any timing does. `benchmark.py` gives
ours/theirs *time*. This gives the factor that turns it into a ratio per unit of work:
torchvision's head adds a 3x3 256->256 conv, and its ResNet-v1.5 differs from our v2.

- Ours: `deeplab_jax.analysis.model_flops.forward_flops`, every conv tap and matmul in the jaxpr of one image's
  forward. The training step is taken as 3x that (forward, input gradient, weight
  gradient), the convention the benchmark's MFU uses.
- Theirs: torch's `FlopCounterMode` over the model built exactly as `theirs.py` builds
  it, on the meta device (shapes only, no arithmetic). It counts one forward, then one
  forward+backward of CrossEntropyLoss(ignore_index=255) at the full batch.

Both count a multiply-add as 2 FLOPs and count taps that land in padding. Parameter counts
are the trainable parameters, BN scale and offset included.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import flags

from deeplab_jax.analysis.model_flops import forward_flops
from deeplab_jax.reporting.command_line import parse_flags
from experiments.gpu_speed.settings import multi_grid

PROGRAM = "python -m experiments.gpu_speed.work_per_step"


def ours(depth: int, output_stride: int, crop: int, num_classes: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from deeplab_jax.models.deeplabv3 import DeepLabV3

    # As the benchmark builds ours: ASPP rates derived from the stride, (6, 12, 18) at OS16.
    model = DeepLabV3(num_classes=num_classes, depth=depth, output_stride=output_stride,
                      multi_grid=multi_grid(depth))
    images = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    params = sum(int(x.size) for x in jax.tree.leaves(variables["params"]))
    return {"params": params, "forward_flops_per_image": forward_flops(model, crop)}


def theirs(depth: int, output_stride: int, crop: int, num_classes: int,
           batch: int) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from experiments.gpu_speed.theirs import build_torchvision_deeplab

    with torch.device("meta"):
        model, construction = build_torchvision_deeplab(depth, output_stride, num_classes)
        images = torch.empty(batch, 3, crop, crop)
        labels = torch.zeros(batch, crop, crop, dtype=torch.long)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()  # one image: BN in training mode refuses a 1x1 map of batch 1 (pooling)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(images[:1])
    forward = float(counter.get_total_flops())
    model.train()
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    with FlopCounterMode(display=False) as counter:
        criterion(model(images)["out"], labels).backward()
    return {"params": int(params), "forward_flops_per_image": forward,
            "train_flops_per_step": float(counter.get_total_flops()),
            "construction": construction}


def count(depth: int, output_stride: int, crop: int, batch: int, num_classes: int,
          with_torch: bool) -> dict[str, Any]:
    row = {"setting": f"R{depth} OS{output_stride}", "depth": depth,
           "output_stride": output_stride, "crop": crop, "batch": batch}
    mine = ours(depth, output_stride, crop, num_classes)
    row["ours"] = {**mine, "train_flops_per_step": 3 * batch * mine["forward_flops_per_image"]}
    if with_torch:
        row["theirs"] = theirs(depth, output_stride, crop, num_classes, batch)
        row["theirs_over_ours_forward"] = (row["theirs"]["forward_flops_per_image"]
                                           / mine["forward_flops_per_image"])
    return row


def markdown(rows: Sequence[dict[str, Any]], command: str, torch_note: str) -> str:
    crop, batch = rows[0]["crop"], rows[0]["batch"]
    lines = [f"# Work per training step: ours against torchvision's (crop {crop}, batch {batch})",
             "", "Counted, not timed: FLOPs need no GPU. A multiply-add is 2 FLOPs; padding taps "
             "count.", "",
             "| setting | ours params (M) | theirs params (M) | ours forward GFLOP/image | "
             "theirs forward GFLOP/image | theirs/ours forward | ours train TFLOP/step (3x "
             "forward) | theirs train TFLOP/step (counted) |", "| --- " * 8 + "|"]
    for row in rows:
        mine, other = row["ours"], row.get("theirs")
        cells = [row["setting"], f"{mine['params'] / 1e6:.2f}",
                 f"{other['params'] / 1e6:.2f}" if other else "n/a",
                 f"{mine['forward_flops_per_image'] / 1e9:.1f}",
                 f"{other['forward_flops_per_image'] / 1e9:.1f}" if other else "n/a",
                 f"{row['theirs_over_ours_forward']:.3f}" if other else "n/a",
                 f"{mine['train_flops_per_step'] / 1e12:.2f}",
                 f"{other['train_flops_per_step'] / 1e12:.2f}" if other else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    import jax
    import platform

    lines += ["", f"Theirs: {torch_note}", "",
              f"Counted with JAX {jax.__version__} and Python {platform.python_version()} on "
              f"{platform.machine()} ({platform.node() or 'unknown host'}); counts do not "
              "depend on the machine.", "",
              "Per unit of work, ours/theirs step time (benchmark.py) should be multiplied by "
              "theirs/ours forward FLOPs to compare throughput of the same arithmetic.", "",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_list("settings", ["50/16", "50/8", "101/16", "101/8"], "DEPTH/OS list.",
                      flag_values=fv)
    flags.DEFINE_integer("crop", 513, "Crop side.", flag_values=fv)
    flags.DEFINE_integer("batch", 16, "Global batch.", flag_values=fv)
    flags.DEFINE_integer("num_classes", 21, "Classes.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.",
                        flag_values=fv)


def main(argv: Sequence[str]) -> list[dict[str, Any]]:
    args = parse_flags(define_flags, argv, PROGRAM)
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        with_torch = True
        torch_note = (f"torchvision {torchvision.__version__} DeepLabV3 built as theirs.py "
                      "builds it (no aux head; OS16 with ASPP rates (6, 12, 18)).")
    except ImportError as error:
        with_torch, torch_note = False, f"not counted: {error}"
    rows = []
    for text in args.settings:
        depth, stride = (int(part) for part in text.split("/"))
        rows.append(count(depth, stride, args.crop, args.batch, args.num_classes, with_torch))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows, f"{PROGRAM} {' '.join(argv)}".strip(), torch_note)
    print(table)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as file:
            json.dump({"rows": rows, "torch": torch_note}, file, indent=2)
        with open(os.path.join(args.output_dir, "results.md"), "w") as file:
            file.write(table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
