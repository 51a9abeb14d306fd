"""How a table cell becomes a config, per setting.

- `full`: the paper's setting (Sec. 4.1): `configs/voc.py` as it is (train_aug, crops 513,
  batch 16, poly lr 0.007, BN decay 0.9997, 30K steps), ResNet-50/101 initialised from
  TF-slim's ImageNet checkpoints (`--pretrained_dir`), each cell trained and evaluated at its
  own output stride. A GPU's job; it runs unchanged there (the data from `--set`).
- `cpu_small`: the baselines' reduced CPU setting on CamVid (`experiments/baselines/
  protocol.py`: 90x120 images, crops 65x97, batch 8, lr 0.1, SGD with momentum, the paper's
  augmentation) at width 8, from scratch, with CPU-sized stand-ins for ResNet-50 and -101
  whose block4 keeps its three units (depths 20 and 29, `resnet.UNITS_PER_BLOCK`), ASPP
  as the baselines scale DeepLabv3's (256 channels x width / 64: 32; rates (2, 4, 6) at
  OS16), and
  `CPU_STEPS` steps.
- `tiny`: `cpu_small` at an eighth of the resolution for 2 steps: this script's test.
"""
from __future__ import annotations

import ast
from typing import Any, Optional, Sequence

import ml_collections

from configs import camvid, voc
from deeplab_jax import config_lib
from deeplab_jax.errors import ConfigError
from experiments.baselines import protocol
from experiments.cascade.tables import Cell

CPU_STEPS = 3000  # 65 epochs of CamVid train at batch 8: the tables fit one session
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"depths": {50: 50, 101: 101}, "overrides": {}},
    "cpu_small": {
        "depths": {50: 20, 101: 29},
        # Width 8, not the baselines' 16: a cascade repeats block4, the widest block, up to
        # four times (12 units at the output stride); at width 16 the OS8 block7 model took
        # 40 minutes of a shared 2-core CPU, a quarter of that at width 8.
        "overrides": {**protocol.SETTINGS["cpu_small"], "model.width": 8,
                      "num_train_steps": CPU_STEPS,
                      "eval_every_steps": CPU_STEPS, "checkpoint_every_steps": 1000,
                      "model.deeplabv3_cascade.aspp_channels": 32,  # 256 x 8 / 64
                      "model.deeplabv3_cascade.atrous_rates": (2, 4, 6),
                      # The same function as "xla", 2.5x faster for ASPP on this CPU at these
                      # sizes: most of its taps read only padding and are skipped (atrous.py).
                      "model.atrous_impl": "taps"},
    },
}
SETTINGS["tiny"] = {
    "depths": SETTINGS["cpu_small"]["depths"],
    "overrides": {**SETTINGS["cpu_small"]["overrides"],
                  **{key: value for key, value in protocol.SETTINGS["tiny"].items()
                     if key.startswith("data.") or key.endswith("_steps")}},
}


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """['data.folder=/data/voc', 'data.batch_size=8'] -> {field: value}; values are Python
    literals where they parse as one (numbers, tuples, booleans), strings otherwise."""
    parsed = {}
    for assignment in assignments:
        field, separator, text = assignment.partition("=")
        if not separator or not field:
            raise ConfigError(f"--set={assignment}: write FIELD=VALUE, e.g. "
                             "--set=data.folder=/data/voc.")
        try:
            parsed[field.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[field.strip()] = text
    return parsed


def cell_config(cell: Cell, setting: str, *, seed: int = 0,
                overrides: Optional[dict[str, Any]] = None,
                pretrained: Optional[dict[int, str]] = None) -> ml_collections.ConfigDict:
    """The resolved config of `cell` in `setting`, trained from `seed`.

    Args:
      overrides: dotted fields set last (`--set`), e.g. where the data is.
      pretrained: the setting's depth -> an ImageNet checkpoint (`full`).
    """
    if setting not in SETTINGS:
        raise ConfigError(f"--setting={setting!r} is not one of {sorted(SETTINGS)}.")
    config = voc.get_config() if setting == "full" else camvid.get_config()
    depth = SETTINGS[setting]["depths"][cell.depth]
    for path, value in {**SETTINGS[setting]["overrides"], **(overrides or {})}.items():
        protocol.set_field(config, path, value)
    # ASPP rates are given at OS16 (the paper's), then carried to the cell's stride (Sec. 4.2).
    config.model.update(architecture="deeplabv3_cascade", depth=depth, output_stride=16,
                        multi_grid=cell.multi_grid)
    config.model.deeplabv3_cascade.update(num_cascaded_blocks=cell.num_cascaded_blocks,
                                          aspp=cell.aspp)
    if pretrained and depth in pretrained:
        config.model.pretrained_backbone = pretrained[depth]
    config.seed = int(seed)
    return config_lib.at_output_stride(config, cell.output_stride, cell.output_stride)
