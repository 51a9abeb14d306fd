"""The embedded default's model and training step in PyTorch, for the CPU comparison.

    python experiments/cpu_speed/torch_step.py SPEC.json RESULT.json   # (torch only, no JAX)

Run by `compare.py`, which writes SPEC.json from our own model (so the two have the same
layers by construction) and checks that the parameter counts and FLOPs agree. The model is
our DeepLabV3 written with torch.nn: the pre-activation ResNet-v2 (TF-slim's layout: the
stride on each block's last unit, a 1x1 max pool as the identity shortcut's subsampling,
explicit symmetric padding of strided convolutions), multi-grid block4, ASPP with image
pooling, a 1x1 classifier and aligned-corners upsampling. It needs no torchvision: the
building blocks are torch.nn's (torchvision's compiled ops do not load against the CPU
build of torch on these machines).

The step: forward in training mode (BatchNorm over the batch), softmax cross-entropy with
ignore index 255, backward, the config's optimizer (SGD with momentum, or Adam with b1 = the
momentum) with weight decay on the convolution kernels only (ours: an L2 term on them, the
same gradient; for Adam, torch's coupled `weight_decay` is that L2 term too), on a batch
already in memory,
channels_last, `torch.set_num_threads(threads)`; eager and `torch.compile`d, each timed.
Our step also runs the on-device augmentation warp; `compare.py` times that part alone.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class PreActBottleneck(nn.Module):
    def __init__(self, in_channels, depth, bottleneck, stride, rate, momentum, eps):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, momentum=momentum, eps=eps)  # noqa: E731
        self.preact_norm = bn(in_channels)
        self.stride = stride
        self.shortcut = (nn.Conv2d(in_channels, depth, 1, stride=stride, bias=True)
                         if in_channels != depth else None)
        self.conv1 = nn.Conv2d(in_channels, bottleneck, 1, bias=False)
        self.conv1_norm = bn(bottleneck)
        # slim's conv2d_same: explicit symmetric padding when strided, SAME otherwise.
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, 3, stride=stride, dilation=rate,
                               padding=rate, bias=False)
        self.conv2_norm = bn(bottleneck)
        self.conv3 = nn.Conv2d(bottleneck, depth, 1, bias=True)

    def forward(self, x):
        preact = F.relu(self.preact_norm(x))
        shortcut = (x[:, :, ::self.stride, ::self.stride] if self.shortcut is None
                    else self.shortcut(preact))
        y = F.relu(self.conv1_norm(self.conv1(preact)))
        y = F.relu(self.conv2_norm(self.conv2(y)))
        return shortcut + self.conv3(y)


class DeepLabV3(nn.Module):
    """SPEC: width, plan [[[stride, rate], ...] per block], aspp_channels, rates, classes."""

    def __init__(self, spec):
        super().__init__()
        momentum, eps = 1.0 - spec["bn_momentum"], spec["bn_epsilon"]
        bn = lambda c: nn.BatchNorm2d(c, momentum=momentum, eps=eps)  # noqa: E731
        width = spec["width"]
        self.root_conv = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=True)
        units, channels = [], width
        for block, plan in enumerate(spec["plan"]):
            bottleneck = width * 2 ** block
            for stride, rate in plan:
                units.append(PreActBottleneck(channels, 4 * bottleneck, bottleneck, stride,
                                              rate, momentum, eps))
                channels = 4 * bottleneck
        self.units = nn.Sequential(*units)
        self.postnorm = bn(channels)
        aspp = spec["aspp_channels"]
        self.branch0 = nn.Sequential(nn.Conv2d(channels, aspp, 1, bias=False), bn(aspp),
                                     nn.ReLU())
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, aspp, 3, padding=r, dilation=r, bias=False),
                          bn(aspp), nn.ReLU()) for r in spec["atrous_rates"])
        self.image_pool = nn.Sequential(nn.Conv2d(channels, aspp, 1, bias=False), bn(aspp),
                                        nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(5 * aspp, aspp, 1, bias=False), bn(aspp),
                                     nn.ReLU())
        self.logits = nn.Conv2d(aspp, spec["num_classes"], 1, bias=True)

    def forward(self, images):
        x = self.root_conv(images / 127.5 - 1.0)
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # TF SAME on the odd-sized root output
        x = F.relu(self.postnorm(self.units(x)))
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True)).expand(
            -1, -1, x.shape[2], x.shape[3])
        y = torch.cat([self.branch0(x)] + [branch(x) for branch in self.branches] + [pooled],
                      dim=1)
        logits = self.logits(self.project(y))
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear",
                             align_corners=True)


def run(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = DeepLabV3(spec).to(memory_format=torch.channels_last).train()
    params = sum(p.numel() for p in model.parameters())
    kernels = [p for name, p in model.named_parameters() if p.ndim == 4]
    others = [p for name, p in model.named_parameters() if p.ndim != 4]
    groups = [{"params": kernels, "weight_decay": spec["weight_decay"]},
              {"params": others, "weight_decay": 0.0}]
    if spec["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(groups, lr=spec["learning_rate"], momentum=spec["momentum"])
    elif spec["optimizer"] == "adam":
        optimizer = torch.optim.Adam(groups, lr=spec["learning_rate"],
                                     betas=(spec["momentum"], 0.999))
    else:
        raise ValueError(f"torch_step.py has no optimizer {spec['optimizer']!r}.")
    batch, size = spec["batch"], spec["size"]
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 255).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, spec["num_classes"], (batch, size, size), generator=generator)
    criterion = nn.CrossEntropyLoss(ignore_index=255)

    def step(net):
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(net(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images[:1])
    forward_flops = float(counter.get_total_flops())
    model.train()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "params": params, "forward_flops_per_image": forward_flops}
    for name, net in (("eager", model), ("compiled", None)):
        try:
            if net is None:
                net = torch.compile(model)
            start = time.perf_counter()
            for _ in range(spec["warmup"]):
                step(net)
            warmup_s = time.perf_counter() - start
            times = []
            for _ in range(spec["steps"]):
                begin = time.perf_counter()
                loss = step(net)
                times.append(time.perf_counter() - begin)
            results[name] = {"median_ms": 1e3 * statistics.median(times),
                             "min_ms": 1e3 * min(times), "warmup_s": warmup_s,
                             "loss": float(loss.detach())}
        except Exception as error:  # noqa: BLE001  (torch.compile may be unavailable)
            results[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    results["eager_top_ops"] = top_ops(lambda: step(model), spec["steps"])
    return results


def top_ops(run_step, steps: int, count: int = 25) -> list[dict]:
    """The eager step's most expensive aten ops (self CPU time per step, by input shapes),
    to set beside our own per-op profile (`op_profile.py`)."""
    from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(steps):
            run_step()
    averages = profiler.key_averages(group_by_input_shape=True)
    rows = sorted(averages, key=lambda event: -event.self_cpu_time_total)[:count]
    return [{"op": event.key, "shapes": str(event.input_shapes)[:160],
             "self_ms_per_step": event.self_cpu_time_total / 1e3 / steps,
             "calls_per_step": event.count / steps} for event in rows]


if __name__ == "__main__":
    with open(sys.argv[1]) as spec_file:
        result = run(json.load(spec_file))
    with open(sys.argv[2], "w") as result_file:
        json.dump(result, result_file, indent=1)
