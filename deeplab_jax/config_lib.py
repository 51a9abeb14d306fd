"""Config checks and derived values, in one visible place, before anything compiles.

Derived values: the evaluation output stride (default: the training one), the auxiliary
loss weight (default: the model's own), and whatever the chosen model derives in its own
file (`models/<name>.py: resolve`, e.g. ASPP rates from the output stride, Sec. 3.3). The
resolved config keeps only the chosen model's block; it is what the run saves as
`config.json`.

Checks (each error names the field, its value and the fix): fields that `configs/voc.py`
(the schema every config inherits from) does not define, with the closest known name; an
unknown model or optimizer; output strides the model cannot run at; counts that must be positive;
workdirs that a run must never write into; and, on the command line, a field of another
model's block than the chosen one (`check_overrides`: it would change nothing). The model's
own checks (ASPP rates that only read padding, say) run in its file. Config files are
Python, executed on load: trust them like code.
"""
from __future__ import annotations

import difflib
import importlib
import os
from typing import Any, Iterable, Iterator

import ml_collections

from ml_collections import config_flags

from deeplab_jax import models
from deeplab_jax.errors import ConfigError
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, strides_and_rates
from deeplab_jax.training.step import check_optimizer

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
      ConfigError: naming each unknown field and the closest known one.
    """
    known = known_fields()
    unknown = sorted(set(_field_paths(config.to_dict())) - known)
    if unknown:
        hints = []
        for path in unknown:
            close = difflib.get_close_matches(path, known, n=1)
            hints.append(f"config.{path}" + (f" (did you mean config.{close[0]}?)" if close
                                              else ""))
        raise ConfigError(f"Unknown config fields: {', '.join(hints)}. Correct the name; a "
                          "new field must first be defined in configs/voc.py, the config all "
                          "others inherit from, with its default and a comment.")


def check_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Refuses command-line overrides of another model's block than the chosen one.

    `--config.model.pspnet.bins=...` with `config.model.architecture='deeplabv3'` would change
    nothing; it is a mistake (a forgotten `--config.model.architecture=pspnet`), not a
    setting. Config files may fill several blocks (a variant switching models on the
    command line); only what the command line sets is checked.

    Raises:
      ConfigError: naming the override, its model and the chosen one.
    """
    for path in overrides:
        parts = path.split(".")
        if (len(parts) > 2 and parts[0] == "model" and parts[1] in models.MODELS
                and parts[1] != config.model.architecture):
            raise ConfigError(
                f"--config.{path} sets a field of model {parts[1]!r}, but "
                f"config.model.architecture={config.model.architecture!r}: it would change "
                f"nothing. Add --config.model.architecture={parts[1]}, or drop it.")


def config_from_flag(config_flag: Any) -> ml_collections.ConfigDict:
    """The config of a `--config` flag (config_flags.DEFINE_config_file), overrides checked.

    ml_collections defers a config file's loading error to the first use of the config: it
    is raised here, as a ConfigError naming the file."""
    config = config_flag.value
    try:
        config.to_dict()
    except OSError as error:
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        raise ConfigError(f"--config={config_flags.get_config_filename(config_flag)}: the "
                          f"config file could not be loaded ({reason}). Give a config file "
                          "such as --config=configs/voc.py (a relative path starts from the "
                          "current folder).") from error
    check_overrides(config, config_flags.get_override_values(config_flag))
    return config


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns a checked copy of `config` with derived values filled in.

    Raises:
      ConfigError: naming the field, its value and the fix.
    """
    check_known_fields(config)
    config = ml_collections.ConfigDict(config.to_dict())
    model = config.model
    module = models.model_module(model.architecture)
    if model.depth not in UNITS_PER_BLOCK:
        raise ConfigError(f"config.model.depth={model.depth} is not one of "
                          f"{sorted(UNITS_PER_BLOCK)}; set one of them, e.g. "
                          "--config.model.depth=101 (50, 101 and 152 are the ImageNet "
                          "ResNets).")
    if not config.eval.output_stride:
        config.eval.output_stride = model.output_stride
    for name, output_stride in (("model", model.output_stride),
                                ("eval", config.eval.output_stride)):
        if output_stride not in module.OUTPUT_STRIDES:
            suggested = 16 if 16 in module.OUTPUT_STRIDES else module.OUTPUT_STRIDES[0]
            raise ConfigError(f"config.{name}.output_stride={output_stride} is not one of "
                              f"{module.OUTPUT_STRIDES}, the output strides model "
                              f"{model.architecture!r} runs at; set one of them, e.g. "
                              f"--config.{name}.output_stride={suggested}.")
        cascaded = (module.num_cascaded_blocks(model)
                    if hasattr(module, "num_cascaded_blocks") else 0)
        try:
            strides_and_rates(output_stride, UNITS_PER_BLOCK[model.depth], model.multi_grid,
                              cascaded)
        except ValueError as error:
            fields = (f"config.{name}.output_stride={output_stride}, "
                      f"config.model.multi_grid={tuple(model.multi_grid)}")
            if hasattr(module, "num_cascaded_blocks"):
                fields += (f", config.model.{model.architecture}.num_cascaded_blocks="
                           f"{cascaded}")
            raise ConfigError(f"{fields}: {error}") from error
    if model.aux_loss_weight is None:
        model.aux_loss_weight = module.AUX_LOSS_WEIGHT
    if model.aux_loss_weight < 0:
        raise ConfigError(f"config.model.aux_loss_weight={model.aux_loss_weight} must be >= 0: "
                          "set 0 (no auxiliary loss) or a positive weight, or leave it unset "
                          f"for the model's default ({module.AUX_LOSS_WEIGHT}).")
    for name in ("crop_size", "canvas_size"):
        if len(config.data[name]) != 2 or min(config.data[name]) < 1:
            raise ConfigError(f"config.data.{name}={config.data[name]} must be (height, width), "
                              f"both >= 1, e.g. --config.data.{name}='(513, 513)'.")
    if hasattr(module, "resolve"):
        module.resolve(config, config.eval.output_stride)
    for name in models.MODELS:  # the resolved config describes the chosen model only
        if name != model.architecture and name in model:
            del model[name]
    check_optimizer(config.optim.optimizer)
    if config.num_train_steps < 1:
        raise ConfigError(f"config.num_train_steps={config.num_train_steps} must be >= 1: set "
                          "the number of updates to train, e.g. --config.num_train_steps=30000 "
                          "(to evaluate without training, use --mode=eval).")
    for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                 "max_checkpoints_to_keep", "max_consecutive_nonfinite_steps"):
        if config[name] < 1:
            raise ConfigError(f"config.{name}={config[name]} must be >= 1; set "
                              f"--config.{name} to 1 or more.")
    if config.keep_best_checkpoints < 0:
        raise ConfigError(f"config.keep_best_checkpoints={config.keep_best_checkpoints} must "
                          "be >= 0 (0: keep only the latest config.max_checkpoints_to_keep).")
    resamples = config.eval.interval_resamples
    if resamples != 0 and resamples < 100:
        raise ConfigError(f"config.eval.interval_resamples={resamples}: use 0 (no intervals) "
                          "or at least 100 resamples (the default is 1000).")
    for name in ("batch_size",):
        if config.data[name] < 1 or config.eval[name] < 1:
            raise ConfigError(f"config.data.{name}={config.data[name]} and config.eval.{name}="
                              f"{config.eval[name]} must be >= 1; set both to a multiple of the "
                              "device count (1 or more).")
    return config


def eval_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model config at the evaluation output stride (`config` resolved).

    The model's own `at_output_stride` carries its block over: ASPP rates scale with the
    stride, train rate * train stride / eval stride, so rates trained at 16 double at 8
    (Sec. 4.2: "rates are doubled when output_stride = 8").
    """
    model = ml_collections.ConfigDict(config.model.to_dict())
    return _at_output_stride(model, config.eval.output_stride)


def _at_output_stride(model: ml_collections.ConfigDict,
                      output_stride: int) -> ml_collections.ConfigDict:
    module = models.model_module(model.architecture)
    if hasattr(module, "at_output_stride") and output_stride != model.output_stride:
        module.at_output_stride(model[model.architecture], model.output_stride, output_stride)
    model.output_stride = output_stride
    return model


def at_output_stride(config: ml_collections.ConfigDict, train_stride: int,
                     eval_stride: int) -> ml_collections.ConfigDict:
    """`config` trained at `train_stride` and evaluated at `eval_stride`, resolved.

    What the model derives from its stride (ASPP rates) is taken at the config's own stride
    and carried to the train stride as `eval_model_config` carries it to an eval stride, so
    an ablation over strides keeps the same field of view in pixels (Sec. 4.2). Raises if
    rates do not stay whole numbers.
    """
    strides = models.model_module(config.model.architecture).OUTPUT_STRIDES
    for name, stride in (("train", train_stride), ("eval", eval_stride)):
        if stride not in strides:
            raise ConfigError(f"{name} output stride {stride} is not one of {strides}, the "
                              f"output strides model {config.model.architecture!r} runs at; "
                              "choose among them.")
    config = resolve_config(config)  # derived values at the config's own stride
    config.model = _at_output_stride(config.model, train_stride)
    config.eval.output_stride = eval_stride
    return resolve_config(config)


def check_workdir(workdir: str) -> str:
    """Returns the absolute workdir (created), refusing folders a run must never write into.

    A relative path is taken from the current directory and `~` is expanded (orbax needs
    absolute paths). `/`, the home folder and an existing file are refused.
    """
    if not workdir:
        raise ConfigError("--workdir is required: the folder for checkpoints, logs and metrics; "
                          "give one, e.g. --workdir=/tmp/deeplab_synthetic.")
    path = os.path.realpath(os.path.expanduser(workdir))
    forbidden = {os.path.realpath(p) for p in ("/", os.path.expanduser("~"))}
    if path in forbidden:
        raise ConfigError(f"--workdir={workdir!r} resolves to {path}; give a dedicated folder, "
                          "for example --workdir=/tmp/deeplab_synthetic.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir={workdir!r} resolves to {path}, which is a file; give a "
                          "folder (it is created if missing).")
    os.makedirs(path, exist_ok=True)
    return path
