"""The comparison's protocol: one base config, one setting, one row per model.

Every row trains `configs/camvid.py` with the setting's shared overrides (backbone depth
and width, steps, schedule, batch, augmentation, seed: the same in every row) plus only the
model-specific settings where the model's reference implementation differs: its output
stride, its auxiliary-loss weight, and its head's widths and rates scaled to the setting's
backbone the way DeepLabv3's are. `ROWS` says which, and the table prints it.

Settings:
- `cpu_small`: experiments/camvid's reduced CPU setting (90x120 images, crops 65x97, a
  depth-14 width-16 ResNet-v2, batch 8, lr 0.1, 5000 steps): DeepLabv3 at OS16 is exactly
  the run recorded there.
- `full`: configs/camvid.py as it is (360x480, ResNet-50, batch 16), for a GPU.
- `tiny`: `cpu_small` at 1/8 of the resolution for 2 steps: the test of this script.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import ml_collections

from configs import camvid
from deeplab_jax import config_lib, models
from deeplab_jax.evaluation import outputs

# Shared by every row of a setting: dotted config field -> value.
SETTINGS: dict[str, dict[str, Any]] = {
    "cpu_small": {
        "data.image_scale": 0.25, "data.canvas_size": (97, 129), "data.crop_size": (65, 97),
        "data.batch_size": 8, "data.num_workers": 2,
        # The split at 90x120 is 15 MiB: decoded and shrunk once, not every epoch
        # (data/memory_cache.py; the same batches either way).
        "data.cache_mib": 256,
        "model.depth": 14, "model.width": 16, "model.multi_grid": (1,),
        "optim.base_learning_rate": 0.1, "num_train_steps": 5000,
        "eval_every_steps": 2500, "checkpoint_every_steps": 2500, "log_every_steps": 250,
    },
    "full": {},
}
SETTINGS["tiny"] = {**SETTINGS["cpu_small"], "data.image_scale": 0.125,
                    "data.canvas_size": (49, 65), "data.crop_size": (33, 49),
                    "num_train_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2,
                    "log_every_steps": 1}
# Head widths and rates per setting, scaled like DeepLabv3's (cpu_small: ASPP 256 -> 64 at
# width 16, rates (6, 12, 18) -> (2, 4, 6) at OS16 on 90x120 images: a third of the paper's).
HEAD_SCALES: dict[str, dict[str, Any]] = {
    "cpu_small": {
        "model.deeplabv3.aspp_channels": 64, "model.deeplabv3.atrous_rates": (2, 4, 6),
        "model.deeplabv3plus.aspp_channels": 64, "model.deeplabv3plus.atrous_rates": (2, 4, 6),
        "model.deeplabv3plus.low_level_channels": 12,
        "model.deeplabv3plus.decoder_channels": 64,
        # Rates are given at the config's own stride (16) and carried to the row's: v2's
        # (6, 12, 18, 24) at OS8 are (3, 6, 9, 12) at 16, and a third of those is this.
        "model.deeplabv2.atrous_rates": (1, 2, 3, 4),
        "model.pspnet.channels": 128, "model.dilated_fcn.channels": 128,
        "model.unet.channels": (16, 32, 64, 128, 256),  # 64..1024 / 4, as the ResNet's width
        "model.unet_resnet.decoder_channels": (64, 32, 16),
        "model.segnet.width_divisor": 4,
        "model.context_module.aspp_channels": 64, "model.context_module.atrous_rates": (2, 4, 6),
        "model.per_pixel.width": 64,
        # The VGG-16 models at a quarter of VGG's widths, fc6/fc7 at 256 (LargeFOV's 1024 / 4;
        # the Dilation front end's 4096 / 16: at / 4 its 7x7 fc6 alone would hold 6.4M
        # parameters, 3x any other row), LargeFOV's fc6 rate 12 at a third, as the ASPP's.
        "model.deeplabv1.width_divisor": 4, "model.deeplabv1.fc_channels": 256,
        "model.deeplabv1.fc6_rate": 4,
        "model.dilation_frontend.width_divisor": 4, "model.dilation_frontend.fc_channels": 256,
        "model.context_module.width_divisor": 4, "model.context_module.fc_channels": 256,
        "model.refinenet.channels": (128, 64, 64, 64),  # (512, 256, 256, 256) / 4
        # k = 15 in the paper, the side of its 16x16 stride-32 map; ours is 3x4 (65x97 crops).
        "model.gcn.kernel_size": 5,
        # The CRF at a quarter of the resolution: DeepLab v2's spatial stds / 4.
        "eval.crf.bilateral_xy_std": 67.0 / 4, "eval.crf.gaussian_xy_std": 1.0 / 4,
    },
    "full": {},
}
HEAD_SCALES["tiny"] = HEAD_SCALES["cpu_small"]


@dataclasses.dataclass(frozen=True)
class Row:
    """One model of the table and what it sets beyond the shared setting."""

    name: str
    architecture: str
    output_stride: int
    why: str  # where the row's own settings come from
    overrides: tuple[tuple[str, Any], ...] = ()
    crf_of: str = ""  # a CRF row: the trained row it evaluates with the dense CRF
    # A staged row (its paper trains it in stages, `training/freeze.py`): it starts from
    # this row's checkpoint of the same seed, its `fresh` parameters newly initialised, its
    # `frozen` ones held fixed, and trains the setting's schedule again.
    starts_from: str = ""
    fresh: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()


# The rows whose model has no BatchNorm where it has depth (as their papers'): at the
# protocol's learning rate of 0.1 DeepLab v1 (VGG-16), RefineNet (residual units, pooling
# chains and fusion sums) and GCN (nine residual refinements) diverged within 12 steps
# (measured, seed 0; RefineNet also at 0.03). 0.01 trains them, as it trains a He-initialised
# VGG from scratch (He et al. 2015, Sec. 2.2); their papers fine-tune from ImageNet at 0.001.
# The context module alone on a frozen front end is such a model too (8 layers, no BN): on
# DeepLabv3's logits at 0.1 its loss rose to 4.6 within 250 steps (pixel accuracy 0.30).
NO_BN_LEARNING_RATE = 0.01

ROWS = (
    Row("DeepLabv3 OS16", "deeplabv3", 16, "the paper's training stride (Sec. 4.1)"),
    Row("DeepLabv3 OS8", "deeplabv3", 8, "the paper's OS8 (rates doubled, Sec. 4.2)"),
    Row("DeepLabv3+", "deeplabv3plus", 16,
        "OS16, separable ASPP and decoder (the official code's defaults)"),
    Row("PSPNet", "pspnet", 8, "OS8, auxiliary loss 0.4 (paper Sec. 3.4; mmsegmentation)"),
    Row("FCN-8s", "fcn", 32, "OS32: the skip architecture on the un-dilated backbone",
        (("model.fcn.variant", "8s"),)),
    Row("FCN-32s", "fcn", 32, "OS32, no skips", (("model.fcn.variant", "32s"),)),
    Row("Dilated FCN", "dilated_fcn", 8, "OS8, auxiliary loss 0.4 (mmsegmentation fcn_r50-d8)"),
    Row("DeepLab v2", "deeplabv2", 8, "OS8, ASPP-L by sum, no BN in the head (the paper)"),
    Row("U-Net", "unet", 16, "from scratch, its own encoder (no ResNet)"),
    Row("U-Net (ResNet-v2)", "unet_resnet", 32, "OS32: a decoder over the un-dilated stages"),
    Row("SegNet", "segnet", 16, "VGG16-BN encoder from scratch; median-frequency class "
        "weights (the paper)", (("optim.class_weighting", "median_frequency"),)),
    Row("SegNet-Basic", "segnet", 16, "4 layers of 7x7; median-frequency class weights",
        (("model.segnet.variant", "basic"), ("optim.class_weighting", "median_frequency"))),
    Row("Context module", "context_module", 8, "OS8, the basic module instead of ASPP"),
    Row("DeepLabv3 + context", "context_module", 8, "OS8, the module on DeepLabv3's logits",
        (("model.context_module.front_end", "deeplabv3"),)),
    Row("DeepLab v1 (LargeFOV)", "deeplabv1", 8,
        "VGG-16 from scratch, fc6 3x3 at a third of the paper's rate 12 (Chen et al. 2015); "
        "lr 0.01: without BatchNorm it diverged at the protocol's 0.1 (step 10)",
        (("optim.base_learning_rate", NO_BN_LEARNING_RATE),)),
    Row("RefineNet", "refinenet", 32, "4-cascaded on the un-dilated stages (Lin et al. "
        "2017); lr 0.01: no BN in the head, diverged at 0.1",
        (("optim.base_learning_rate", NO_BN_LEARNING_RATE),)),
    Row("GCN", "gcn", 32, "GCN + boundary refinement on the un-dilated stages (Peng et al. "
        "2017); lr 0.01: no BN in the head, diverged at 0.1",
        (("optim.base_learning_rate", NO_BN_LEARNING_RATE),)),
    Row("Dilation front end", "dilation_frontend", 8,
        "VGG-16 from scratch, pool4/5 removed, fc6 7x7 at dilation 4 (Yu and Koltun 2016); "
        "lr 0.01 as DeepLab v1's", (("optim.base_learning_rate", NO_BN_LEARNING_RATE),)),
    Row("Context module (staged)", "context_module", 8,
        "the basic module on the frozen front end's scores: Yu and Koltun's stage 2",
        (("model.context_module.front_end", "dilation"), ("model.output_stride", 8),
         ("model.context_module.dropout_rate", 0.0),
         ("optim.base_learning_rate", NO_BN_LEARNING_RATE)),
        starts_from="Dilation front end", fresh=("context/*",),
        frozen=("conv*", "fc6/*", "fc7/*", "final/*")),
    Row("Context module (staged + joint)", "context_module", 8,
        "stage 3: front end and module fine-tuned together",
        (("model.context_module.front_end", "dilation"), ("model.output_stride", 8),
         ("optim.base_learning_rate", NO_BN_LEARNING_RATE)),
        starts_from="Context module (staged)"),
    Row("DeepLabv3 + context (staged)", "context_module", 8,
        "the module on the frozen DeepLabv3 OS8's logits (the staged schedule on our front "
        "end); lr 0.01 as the other staged module's",
        (("model.context_module.front_end", "deeplabv3"),
         ("optim.base_learning_rate", NO_BN_LEARNING_RATE)),
        starts_from="DeepLabv3 OS8", fresh=("context/*",),
        frozen=("backbone/*", "aspp/*", "logits/*")),
    Row("per-pixel control", "per_pixel", 16, "1x1 convs only: no spatial context"),
    Row("DeepLabv3 OS16 + CRF", "deeplabv3", 16, "the dense CRF after the network",
        crf_of="DeepLabv3 OS16"),
    Row("DeepLab v2 + CRF", "deeplabv2", 8, "the dense CRF after the network (as v2)",
        crf_of="DeepLab v2"),
    Row("DeepLab v1 + CRF", "deeplabv1", 8, "the dense CRF after the network (as v1)",
        crf_of="DeepLab v1 (LargeFOV)"),
)


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """config.<path> = value, for a dotted path such as "model.deeplabv3.aspp_channels"."""
    *sections, name = path.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[name] = value


def row_config(row: Row, setting: str) -> ml_collections.ConfigDict:
    """configs/camvid.py with the setting's shared overrides and the row's own, resolved.

    Rates given at the config's own stride are carried to the row's stride
    (`config_lib.at_output_stride`), as the output-stride ablation does.
    """
    if setting not in SETTINGS:
        raise ValueError(f"--setting={setting!r} is not one of {sorted(SETTINGS)}.")
    config = camvid.get_config()
    for path, value in {**SETTINGS[setting], **HEAD_SCALES[setting]}.items():
        set_field(config, path, value)
    config.model.architecture = row.architecture
    for path, value in row.overrides:
        set_field(config, path, value)
    if row.crf_of:
        trained = next(other for other in ROWS if other.name == row.crf_of)
        config = row_config(trained, setting)
        config.eval.crf.enabled = True
        return config
    if hasattr(models.MODELS[row.architecture], "at_output_stride"):
        return config_lib.at_output_stride(config, row.output_stride, row.output_stride)
    config.model.output_stride = row.output_stride
    return config_lib.resolve_config(config)


def seeded(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """`config` trained from `seed`: the parameters, data order and augmentation all change."""
    config = copy.deepcopy(config)
    config.seed = int(seed)
    return config


def staged(config: ml_collections.ConfigDict, row: Row, root: str,
           seed: int) -> ml_collections.ConfigDict:
    """A staged row's `config` starting from its previous stage's run of the same seed."""
    if not row.starts_from:
        return config
    config = copy.deepcopy(config)
    previous = next(other for other in ROWS if other.name == row.starts_from)
    config.init_from = cell_workdir(root, previous, seed)
    config.init_from_fresh = tuple(row.fresh)
    config.optim.frozen = tuple(row.frozen)
    return config


def dependency(row: Row) -> str:
    """The row this one needs trained first (its CRF's or its previous stage's), or ''."""
    return row.crf_of or row.starts_from


def cell_workdir(root: str, row: Row, seed: int) -> str:
    """ROOT/<row>/seed_<seed>: one run per (row, seed), each resuming on its own.

    A CRF row trains nothing: its cells are those of the row it evaluates."""
    name = row.crf_of or row.name
    return os.path.join(root, name.replace(" ", "_").replace("+", "plus"), f"seed_{seed}")


def finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether the run in `workdir` has evaluated its last step (its training is over)."""
    name = outputs.evaluation_name(config.data.eval_split, config.num_train_steps,
                                   output_stride=config.eval.output_stride,
                                   scales=config.eval.scales, flip=config.eval.flip)
    return os.path.exists(os.path.join(workdir, "eval", name + ".json"))


def row_settings(row: Row, resolved: ml_collections.ConfigDict) -> str:
    """What the row sets beyond the shared setting, for the table."""
    model = resolved.model
    if row.crf_of:
        crf = resolved.eval.crf
        return (f"{row.crf_of}'s checkpoint; CRF {crf.iterations} iterations, w {crf.bilateral_weight:g}"
                f"/{crf.gaussian_weight:g}, xy std {crf.bilateral_xy_std:g}/"
                f"{crf.gaussian_xy_std:g} px, rgb std {crf.bilateral_rgb_std:g}, grid "
                f"{crf.downsample}")
    block = model.get(row.architecture)
    fields = ", ".join(f"{key}={tuple(value) if isinstance(value, (list, tuple)) else value}"
                       for key, value in (block.items() if block is not None else ()))
    weighting = resolved.optim.class_weighting
    stage = ""
    if row.starts_from:
        stage = (f"; from {row.starts_from}'s checkpoint, "
                 + (f"frozen {', '.join(row.frozen)}, " if row.frozen else "all trained, ")
                 + f"{resolved.num_train_steps} more steps")
    return (f"OS{model.output_stride}, aux {model.aux_loss_weight:g}"
            + (f", class weights {weighting}" if weighting != "none" else "")
            + stage + (f"; {fields}" if fields else ""))
