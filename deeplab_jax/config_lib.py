"""Config checks and derived values, in one visible place, before anything compiles.

Derived values: ASPP rates from the output stride (Sec. 3.3: (6, 12, 18) at 16, doubled at
8) and the evaluation output stride (default: the training one). The resolved config is
what the run saves as `config.json`.

Checks (each error names the field, its value and the fix): fields that `configs/voc.py`
(the schema every config inherits from) does not define, with the closest known name;
output strides outside {8, 16, 32}; ASPP rates that every output pixel would read as
padding; counts that must be positive; and workdirs that a run must never write into.
Config files are Python, executed on load: trust them like code.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import math
import os
from typing import Any, Iterator

import ml_collections

from deeplab_jax.models.aspp import default_atrous_rates
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, VALID_OUTPUT_STRIDES, strides_and_rates

# Modules whose configs together define every known field: voc.py (the schema every
# config inherits from) and synthetic.py (the `data.synthetic` generator settings).
SCHEMA_CONFIGS = ("voc", "synthetic")


def _field_paths(tree: Any, prefix: str = "") -> Iterator[str]:
    items = tree.items() if hasattr(tree, "items") else ()
    for key, value in items:
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            yield from _field_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def known_fields() -> set[str]:
    """Every field path ('model.depth', 'data.synthetic.image_size', ...) of the schema."""
    fields: set[str] = set()
    for name in SCHEMA_CONFIGS:
        fields |= set(_field_paths(
            importlib.import_module(f"configs.{name}").get_config().to_dict()))
    return fields


def check_known_fields(config: ml_collections.ConfigDict) -> None:
    """Refuses fields the schema does not define (a typo would otherwise be ignored).

    Raises:
      ValueError: naming each unknown field and the closest known one.
    """
    known = known_fields()
    unknown = sorted(set(_field_paths(config.to_dict())) - known)
    if unknown:
        hints = []
        for path in unknown:
            close = difflib.get_close_matches(path, known, n=1)
            hints.append(f"config.{path}" + (f" (did you mean config.{close[0]}?)" if close
                                              else ""))
        raise ValueError(f"Unknown config fields: {', '.join(hints)}. Every field must be "
                         "defined in configs/voc.py, the config all others inherit from; "
                         "add a new field there with its default and a comment.")


def feature_size(size: int, output_stride: int) -> int:
    """Side of the backbone's feature map for an input side `size` (SAME-padded strides)."""
    return math.ceil(size / output_stride)


def check_atrous_rates_fit(rates: tuple[int, ...], image_size: tuple[int, int],
                           output_stride: int, where: str) -> None:
    """Refuses ASPP rates of which none reaches a feature-map pixel other than the centre.

    A 3x3 convolution at rate r on an n-pixel side reads pixels i - r and i + r: when
    r >= n, every non-centre tap of every output lands in the zero padding and the branch
    is a 1x1 convolution (the paper's Fig. 4 limit). If every rate is that large, ASPP has
    no context branch left: an error. If only some are, a warning: the config may still
    evaluate on larger images than its training crop.

    Raises:
      ValueError: naming the rates, the feature map and the input size.
    """
    sides = [feature_size(side, output_stride) for side in image_size]
    useless = [rate for rate in rates if rate >= max(sides)]
    if not useless:
        return
    message = (f"ASPP rates {tuple(rates)} at output stride {output_stride} on {where} "
               f"{tuple(image_size)} (feature map {sides[0]}x{sides[1]}): rate(s) "
               f"{tuple(useless)} >= the feature map side {max(sides)}, so every non-centre "
               "tap reads padding and those branches act as 1x1 convolutions")
    if len(useless) == len(rates):
        raise ValueError(message + ". Set config.model.atrous_rates to rates below "
                         f"{max(sides)} (the paper's (6, 12, 18) suit 513x513 crops at "
                         "output stride 16), or train on larger crops.")
    logging.warning("%s.", message)


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns a checked copy of `config` with derived values filled in.

    Raises:
      ValueError: naming the field, its value and the fix.
    """
    check_known_fields(config)
    config = ml_collections.ConfigDict(config.to_dict())
    model = config.model
    if model.depth not in UNITS_PER_BLOCK:
        raise ValueError(f"config.model.depth={model.depth} is not one of "
                         f"{sorted(UNITS_PER_BLOCK)}.")
    if not config.eval.output_stride:
        config.eval.output_stride = model.output_stride
    for name, output_stride in (("model", model.output_stride),
                                ("eval", config.eval.output_stride)):
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"config.{name}.output_stride={output_stride} is not one of "
                             f"{VALID_OUTPUT_STRIDES}.")
    if not model.atrous_rates:
        model.atrous_rates = default_atrous_rates(model.output_stride)
    for name, output_stride in (("model", model.output_stride),
                                ("eval", config.eval.output_stride)):
        try:
            strides_and_rates(output_stride, UNITS_PER_BLOCK[model.depth], model.multi_grid)
        except ValueError as error:
            raise ValueError(f"config.{name}.output_stride / config.model.multi_grid: "
                             f"{error}") from error
    eval_model = eval_model_config(config)  # Raises if the rates do not carry over.
    for name in ("crop_size", "canvas_size"):
        if len(config.data[name]) != 2 or min(config.data[name]) < 1:
            raise ValueError(f"config.data.{name}={config.data[name]} must be (height, width), "
                             "both >= 1.")
    if model.architecture == "deeplabv3":
        check_atrous_rates_fit(tuple(model.atrous_rates), tuple(config.data.crop_size),
                               model.output_stride, "training crops")
        check_atrous_rates_fit(tuple(eval_model.atrous_rates), tuple(config.data.canvas_size),
                               eval_model.output_stride, "evaluation canvases")
    if config.num_train_steps < 1:
        raise ValueError(f"config.num_train_steps={config.num_train_steps} must be >= 1.")
    for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                 "max_checkpoints_to_keep", "max_consecutive_nonfinite_steps"):
        if config[name] < 1:
            raise ValueError(f"config.{name}={config[name]} must be >= 1.")
    if config.keep_best_checkpoints < 0:
        raise ValueError(f"config.keep_best_checkpoints={config.keep_best_checkpoints} must "
                         "be >= 0 (0: keep only the latest config.max_checkpoints_to_keep).")
    for name in ("batch_size",):
        if config.data[name] < 1 or config.eval[name] < 1:
            raise ValueError(f"config.data.{name}={config.data[name]} and config.eval.{name}="
                             f"{config.eval[name]} must be >= 1.")
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
    """Returns the absolute workdir (created), refusing folders a run must never write into.

    A relative path is taken from the current directory and `~` is expanded (orbax needs
    absolute paths). `/`, the home folder and an existing file are refused.
    """
    if not workdir:
        raise ValueError("--workdir is required: the folder for checkpoints, logs and metrics.")
    path = os.path.realpath(os.path.expanduser(workdir))
    forbidden = {os.path.realpath(p) for p in ("/", os.path.expanduser("~"))}
    if path in forbidden:
        raise ValueError(f"--workdir={workdir!r} resolves to {path}; give a dedicated folder, "
                         "for example --workdir=/tmp/deeplab_synthetic.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir={workdir!r} resolves to {path}, which is a file; give a "
                         "folder (it is created if missing).")
    os.makedirs(path, exist_ok=True)
    return path
