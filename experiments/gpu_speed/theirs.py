"""Their side of the GPU benchmark: torchvision's DeepLabV3-ResNet, in the same run as ours.

torchvision's deeplabv3_resnet50/101 (weights=None, weights_backbone=None, aux_loss=False)
at the same batch and crop, SGD momentum with weight decay, CrossEntropyLoss(ignore_index=
255), channels_last, bf16 autocast for the bfloat16 settings (TF32 allowed for float32, as
JAX's default precision allows), cudnn.benchmark, optionally torch.compile. OS8 is
torchvision's own model (replace_stride_with_dilation [False, True, True], ASPP rates
(12, 24, 36)); OS16 is built the way torchvision builds it (resnet(replace_stride_with_
dilation=[False, False, True]) + IntermediateLayerGetter + DeepLabHead) with the ASPP rates
set to the paper's (6, 12, 18) (`--torch_os16_rates`), since torchvision hard-codes
(12, 24, 36). FLOPs per step from torch.utils.flop_counter.FlopCounterMode; peak memory from
torch.cuda.max_memory_allocated.

Differences that remain (the report's notes say so too): torchvision's ResNet is v1.5
(post-activation) without multi-grid, its head has an extra 3x3 256->256 conv + BN + ReLU and
dropout, and it is fed pre-cropped float tensors, while our step also runs the on-device
augmentation warp from uint8 canvases.
"""
from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Any, Sequence

from deeplab_jax.models.resnet import UNITS_PER_BLOCK
from experiments.gpu_speed.settings import IGNORE_LABEL, PEAK_TFLOPS, Setting


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


def run(setting: Setting, args: Any) -> dict[str, Any]:
    """One setting of theirs, at the same batch and crop as ours."""
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
        framework="torch", setting=setting.torch_key,
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
