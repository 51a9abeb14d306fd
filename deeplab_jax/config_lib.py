"""Config checks and derived values, in one visible place, before anything compiles.

Derived values: ASPP rates from the output stride (Sec. 3.3: (6, 12, 18) at 16, doubled at
8) and the evaluation output stride (default: the training one). The resolved config is
what the run saves as `config.json`.
"""
from __future__ import annotations

import os

import ml_collections

from deeplab_jax.models.aspp import default_atrous_rates
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns a checked copy of `config` with derived values filled in.

    Raises:
      ValueError: naming the field, its value and the fix.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    model = config.model
    if model.depth not in UNITS_PER_BLOCK:
        raise ValueError(f"config.model.depth={model.depth} is not one of "
                         f"{sorted(UNITS_PER_BLOCK)}.")
    if not model.atrous_rates:
        model.atrous_rates = default_atrous_rates(model.output_stride)
    if not config.eval.output_stride:
        config.eval.output_stride = model.output_stride
    for name, output_stride in (("model", model.output_stride),
                                ("eval", config.eval.output_stride)):
        try:
            strides_and_rates(output_stride, UNITS_PER_BLOCK[model.depth], model.multi_grid)
        except ValueError as error:
            raise ValueError(f"config.{name}.output_stride / config.model.multi_grid: "
                             f"{error}") from error
    eval_model_config(config)  # Raises if the rates do not carry over to the eval stride.
    for name in ("crop_size", "canvas_size"):
        if len(config.data[name]) != 2:
            raise ValueError(f"config.data.{name}={config.data[name]} must be (height, width).")
    if config.num_train_steps < 1:
        raise ValueError(f"config.num_train_steps={config.num_train_steps} must be >= 1.")
    for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if config[name] < 1:
            raise ValueError(f"config.{name}={config[name]} must be >= 1.")
    return config


def eval_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model config at the evaluation output stride.

    The ASPP rates scale with the stride, train rate * train stride / eval stride, so rates
    trained at 16 double at 8 (Sec. 4.2: "rates are doubled when output_stride = 8").
    """
    model = ml_collections.ConfigDict(config.model.to_dict())
    train_stride, eval_stride = model.output_stride, config.eval.output_stride
    rates = [rate * train_stride / eval_stride for rate in model.atrous_rates]
    if any(rate != int(rate) or rate < 1 for rate in rates):
        raise ValueError(
            f"ASPP rates {tuple(model.atrous_rates)} at output stride {train_stride} do not "
            f"give whole rates at eval output stride {eval_stride} ({rates}); set "
            "config.model.atrous_rates to multiples of the stride ratio.")
    model.atrous_rates = tuple(int(rate) for rate in rates)
    model.output_stride = eval_stride
    return model


def at_output_stride(config: ml_collections.ConfigDict, train_stride: int,
                     eval_stride: int) -> ml_collections.ConfigDict:
    """`config` trained at `train_stride` and evaluated at `eval_stride`, resolved.

    ASPP rates given in the config are those of its own stride: they are rescaled to the
    train stride as `eval_model_config` rescales them to an eval stride, so an ablation
    over strides keeps the same field of view in pixels (Sec. 4.2). Raises if they do not
    stay whole numbers.
    """
    config = resolve_config(config)  # rates filled in at the config's own stride
    config.eval.output_stride = train_stride
    config.model.atrous_rates = eval_model_config(config).atrous_rates
    config.model.output_stride = train_stride
    config.eval.output_stride = eval_stride
    return resolve_config(config)


def check_workdir(workdir: str) -> str:
    """Returns the absolute workdir, refusing folders a run must never write into."""
    if not workdir:
        raise ValueError("--workdir is required: the folder for checkpoints, logs and metrics.")
    path = os.path.realpath(os.path.expanduser(workdir))
    forbidden = {os.path.realpath(p) for p in ("/", os.path.expanduser("~"))}
    if path in forbidden:
        raise ValueError(f"--workdir={workdir!r} resolves to {path}; give a dedicated folder, "
                         "for example --workdir=/tmp/deeplab_synthetic.")
    os.makedirs(path, exist_ok=True)
    return path
