"""ImageNet-pretrained backbones: TF-slim `resnet_v2_{50,101,152}` checkpoints -> our ResNetV2.

The slim model zoo's checkpoints (download.tensorflow.org/models/resnet_v2_101_2017_04_14.tar.gz)
map onto `models/resnet.py` name by name (`slim_name` is the table); the DeepLab head stays
randomly initialised. Reading a `.ckpt` needs TensorFlow; `convert` writes a plain `.npz`
(no pickle) that a machine without TensorFlow loads:

    python -m deeplab_jax.pretrained convert resnet_v2_101_2017_04_14.tar.gz r101.npz --depth=101

(`deeplab_jax/pretrained.py` is a short alias of this module's command.)

Input convention: slim's resnet_v2 preprocessing feeds pixels scaled to [-1, 1]. DeepLabV3 takes
[0, 255] pixels and applies exactly that scaling inside the model (`normalize_pixels`), which
`load_backbone` checks, and the `.npz` records the convention it was converted for.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tarfile
import tempfile
from typing import Any, Sequence

import numpy as np
from flax import traverse_util

from deeplab_jax.errors import CheckpointError, ConfigError, MissingFileError, UserError
from deeplab_jax.models.resnet import UNITS_PER_BLOCK

INPUT_CONVENTION = "rgb_pixels/127.5-1"  # [0, 255] -> [-1, 1], slim's resnet_v2 preprocessing
NPZ_FORMAT = "deeplab_jax.pretrained_backbone.v1"
METADATA_KEY = "__metadata__"
# slim leaf -> (our collection, our leaf), and slim layer -> our module.
_LEAVES = {"weights": ("params", "kernel"), "biases": ("params", "bias"),
           "beta": ("params", "bias"), "gamma": ("params", "scale"),
           "moving_mean": ("batch_stats", "mean"),
           "moving_variance": ("batch_stats", "var")}
_UNIT_LAYERS = {"preact": "preact_norm", "shortcut": "shortcut", "conv1": "conv1",
                "conv1/BatchNorm": "conv1_norm", "conv2": "conv2", "conv2/BatchNorm": "conv2_norm",
                "conv3": "conv3"}
_NORM_LEAVES = ("beta", "gamma", "moving_mean", "moving_variance")
_UNIT_RE = re.compile(r"^block(\d+)/unit_(\d+)/bottleneck_v2/(.+)$")
_SLOT_RE = re.compile(r"/(weights|biases|beta|gamma|moving_mean|moving_variance)/[^/]+$")
_SCOPE_RE = re.compile(r"^resnet_v2_(\d+)/")
_MAX_LISTED = 40
CONVERT_COMMAND = "python -m deeplab_jax.pretrained convert SRC DST.npz --depth=N"


class TensorFlowNeededError(UserError, ImportError):
    """A TF checkpoint given where TensorFlow is not installed; the message says to convert."""


def read_slim_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint: `path` is a .tar.gz, a directory or a .ckpt prefix."""
    try:
        import tensorflow as tf  # Lazy: training never imports TensorFlow.
    except ImportError as error:
        raise TensorFlowNeededError(
            f"Reading the TF checkpoint {path} needs TensorFlow (pip install tensorflow-cpu). "
            "On a machine without it, convert the checkpoint where TensorFlow is installed "
            f"({CONVERT_COMMAND}) and load the .npz instead.") from error
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory() as directory:
            _safe_extract(path, directory)
            return read_slim_checkpoint(directory)
    prefix = _checkpoint_prefix(path)
    reader = tf.train.load_checkpoint(prefix)
    return {name: np.asarray(reader.get_tensor(name))
            for name in sorted(reader.get_variable_to_shape_map())}


def _safe_extract(archive: str, directory: str) -> None:
    """Extracts regular files and folders only; absolute paths and '..' are refused."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            parts = member.name.replace("\\", "/").split("/")
            if os.path.isabs(member.name) or member.name.startswith("/") or ".." in parts:
                raise CheckpointError(f"Refusing {archive}: member {member.name!r} would be "
                                      "extracted outside the target folder. Use the slim "
                                      "model zoo's own archive, or extract it yourself and "
                                      "give its folder.")
            if not (member.isfile() or member.isdir()):
                raise CheckpointError(f"Refusing {archive}: member {member.name!r} is a link or "
                                      "a special file. Use the slim model zoo's own archive, "
                                      "or extract it yourself and give its folder.")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
        tar.extractall(directory, members=members, **safe)


def _checkpoint_prefix(path: str) -> str:
    """The path TF reads: a V2 prefix (PREFIX.index + .data) or a V1 single .ckpt file."""
    if os.path.isdir(path):
        found = sorted({os.path.join(root, name[: -len(".index")] if name.endswith(".index")
                                     else name)
                        for root, _, names in os.walk(path) for name in names
                        if name.endswith((".index", ".ckpt"))})
        if len(found) != 1:
            raise MissingFileError(f"Expected one checkpoint (*.index or *.ckpt) in {path}, "
                                   f"found {len(found)}: {found}. Give the prefix of the one "
                                   "to load (e.g. .../resnet_v2_101.ckpt) instead of the "
                                   "folder.")
        return found[0]
    if os.path.exists(path + ".index") or os.path.isfile(path):
        return path
    raise MissingFileError(f"No TF checkpoint at {path}: give a .tar.gz, a folder or the "
                           "checkpoint's prefix (e.g. .../resnet_v2_101.ckpt).")


def _our_key(slim_layer: str, leaf: str) -> str:
    """Maps a slim layer (below resnet_v2_N/) and leaf to our flat key, or raises KeyError."""
    collection, our_leaf = _LEAVES[leaf]
    if slim_layer in ("conv1", "postnorm"):
        module = "root_conv" if slim_layer == "conv1" else "postnorm"
    else:
        match = _UNIT_RE.match(slim_layer)
        if not match or match.group(3) not in _UNIT_LAYERS:
            raise KeyError(slim_layer)
        block, unit, layer = match.groups()
        module = f"block{int(block)}/unit{int(unit):02d}/{_UNIT_LAYERS[layer]}"
    norm_module = module.endswith(("_norm", "postnorm"))
    if norm_module != (leaf in _NORM_LEAVES):
        raise KeyError(slim_layer)
    return f"{collection}/{module}/{our_leaf}"


def slim_name(key: str, depth: int) -> str:
    """The slim variable name of our flat key, e.g. 'params/block1/unit01/conv1/kernel'."""
    collection, *modules, leaf = key.split("/")
    slim_leaf = {v: k for k, v in _LEAVES.items()
                 if v[0] == collection and (k in _NORM_LEAVES) == modules[-1].endswith("norm")}
    layer = {"root_conv": "conv1", "postnorm": "postnorm"}.get(modules[0])
    if layer is None:
        unit_layer = {v: k for k, v in _UNIT_LAYERS.items()}.get(modules[-1], modules[-1])
        layer = f"{modules[0]}/unit_{int(modules[1][4:])}/bottleneck_v2/{unit_layer}"
    return f"resnet_v2_{depth}/{layer}/{slim_leaf.get((collection, leaf), leaf)}"


def _map_variables(variables: dict[str, np.ndarray], depth: int,
                   depth_field: str = "config.model.depth") -> tuple[dict, list[str]]:
    """Flat {our key: array} and the skipped non-backbone names; refuses other depths."""
    depths = sorted({int(m.group(1)) for m in map(_SCOPE_RE.match, variables) if m})
    if depths != [depth]:
        found = ", ".join(f"resnet_v2_{d}" for d in depths) or "no resnet_v2_N variables"
        match = (f"set {depth_field}={depths[0]}" if len(depths) == 1
                 and depths[0] in UNITS_PER_BLOCK else f"set {depth_field} to match")
        raise CheckpointError(f"The checkpoint holds {found}, but the model is ResNet-v2 depth "
                              f"{depth} ({depth_field}={depth}): use a resnet_v2_{depth} "
                              f"checkpoint or {match}.")
    prefix = f"resnet_v2_{depth}/"
    flat, skipped, unmapped = {}, [], []
    for name, value in variables.items():
        rest = name[len(prefix):]
        if not name.startswith(prefix) or rest.startswith("logits/") or _SLOT_RE.search(name):
            skipped.append(name)  # global_step, logits, optimizer slots, other scopes.
            continue
        layer, _, leaf = rest.rpartition("/")
        try:
            flat[_our_key(layer, leaf)] = (name, np.asarray(value))
        except KeyError:
            unmapped.append(name)
    if unmapped:
        raise CheckpointError(f"Unexpected backbone variables in the checkpoint, with no place "
                              f"in our ResNetV2: {_listing(unmapped)}. Give a TF-slim "
                              "resnet_v2_N ImageNet checkpoint (ResNet-v1 and other nets do not "
                              "fit).")
    slots = [name for name in skipped if _SLOT_RE.search(name)]
    others = [name for name in skipped if not _SLOT_RE.search(name)]
    if skipped:
        logging.info("Skipped %d non-backbone variables (%s) and %d optimizer slots (%s).",
                     len(others), _listing(others), len(slots),
                     ", ".join(sorted({name.rsplit("/", 1)[1] for name in slots})))
    return flat, skipped


def slim_to_backbone(variables: dict[str, np.ndarray], depth: int) -> tuple[dict, dict]:
    """slim `resnet_v2_{depth}` variables -> (params, batch_stats) of our ResNetV2 backbone."""
    flat, _ = _map_variables(variables, depth)
    trees = {"params": {}, "batch_stats": {}}
    for key, (_, value) in flat.items():
        collection, rest = key.split("/", 1)
        trees[collection][tuple(rest.split("/"))] = value
    return (traverse_util.unflatten_dict(trees["params"]),
            traverse_util.unflatten_dict(trees["batch_stats"]))


def _listing(names: list[str]) -> str:
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


CASCADED_BLOCKS = ("block5", "block6", "block7")  # copies of block4 that slim's nets lack


def _depth_of(backbone_params: dict) -> int:
    units = tuple(sum(key.startswith("unit") for key in backbone_params.get(f"block{b}", {}))
                  for b in range(1, 5))
    for depth, per_block in UNITS_PER_BLOCK.items():
        if per_block == units:
            return depth
    raise ValueError(f"The backbone's units per block {units} match no depth in "
                     f"{sorted(UNITS_PER_BLOCK)}.")


def _check_input_convention(recorded: str = INPUT_CONVENTION) -> None:
    """The weights expect [-1, 1] inputs: the model's own scaling and the file must agree."""
    from deeplab_jax.models.segmenter import normalize_pixels
    scaled = np.asarray(normalize_pixels(np.array([0.0, 127.5, 255.0], np.float32)))
    message = (f"Input convention mismatch: the weights expect {recorded!r}, this code expects "
               f"{INPUT_CONVENTION!r} and normalize_pixels maps (0, 127.5, 255) to {scaled}. "
               "slim's resnet_v2 weights need pixels / 127.5 - 1, never mean-subtracted pixels.")
    if not np.allclose(scaled, [-1.0, 0.0, 1.0], atol=1e-6):  # our code changed: a bug
        raise ValueError(message)
    if recorded != INPUT_CONVENTION:  # the file's: convert the slim checkpoint again
        raise CheckpointError(f"{message} Convert the slim checkpoint again ({CONVERT_COMMAND}) "
                              "and load that .npz.")


def _compare(flat: dict[str, tuple[str, np.ndarray]], expected: dict[str, Any],
             source: str, depth: int) -> None:
    """Raises CheckpointError naming missing keys, unexpected keys and shape mismatches."""
    missing = [f"{key} ({slim_name(key, depth)})" for key in expected if key not in flat]
    unexpected = [f"{name} (-> {key})" for key, (name, _) in flat.items() if key not in expected]
    shapes = [f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
              for key, (name, value) in flat.items()
              if key in expected and tuple(value.shape) != tuple(expected[key].shape)]
    problems = [f"{len(names)} {what}: {_listing(names)}" for what, names in (
        ("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)) if names]
    if problems:
        hint = (" (slim's ImageNet nets have config.model.width=64)" if shapes else "")
        raise CheckpointError(f"The backbone in {source} does not fit the model{hint}. "
                              + "; ".join(problems) + f". Give the TF-slim resnet_v2_{depth} "
                              "ImageNet checkpoint, or its .npz from `python -m "
                              "deeplab_jax.pretrained convert`.")


def _expected_backbone(depth: int, width: int) -> dict[str, Any]:
    """Flat {key: ShapeDtypeStruct} of a ResNetV2 of this depth and root width."""
    import jax
    import jax.numpy as jnp
    from deeplab_jax.models.resnet import ResNetV2
    model = ResNetV2(depth=depth, width=width, multi_grid=(1,) * UNITS_PER_BLOCK[depth][3])
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32))
    return traverse_util.flatten_dict(dict(shapes), sep="/")


def _read_npz(path: str) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as data:
        if METADATA_KEY not in data.files:
            raise CheckpointError(f"{path} has no {METADATA_KEY!r} entry: not written by "
                                  "`python -m deeplab_jax.pretrained convert`. Convert the slim "
                                  f"checkpoint with it ({CONVERT_COMMAND}) and load that .npz.")
        metadata = json.loads(str(data[METADATA_KEY]))
        flat = {key: (key, data[key]) for key in data.files if key != METADATA_KEY}
    if metadata.get("format") != NPZ_FORMAT:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r}, expected "
                              f"{NPZ_FORMAT!r}. Convert the slim checkpoint again "
                              f"({CONVERT_COMMAND}) and load that .npz.")
    return flat, metadata


def load_backbone(path: str, params: dict, batch_stats: dict, *,
                  copy_block4_to_cascade: bool = False) -> tuple[dict, dict]:
    """Returns (params, batch_stats) with params['backbone'] etc. replaced from `path`.

    `path`: a slim checkpoint (.tar.gz, folder or .ckpt prefix, needs TensorFlow) or an .npz
    from `convert`. Every other parameter (the DeepLab head) is returned unchanged. A
    backbone with cascaded copies of block4 (block5..block7, `deeplabv3_cascade`) has more
    blocks than the checkpoint: those keep their random initialisation, or with
    `copy_block4_to_cascade` start as copies of the loaded block4 (the same unit count and
    widths, `resnet.py`), all but what reads the block's input in its first unit: block4's
    first unit takes block3's output, a copy's takes block4's (twice as deep), so the copy's
    first `preact_norm` and `conv1` differ in shape and keep their initialisation, and
    block4's projection `shortcut` has no counterpart (a copy's shortcut is the identity).
    """
    if "backbone" not in params:
        raise ConfigError(f"config.model.pretrained_backbone={path!r} needs a model with a "
                          "ResNet-v2 'backbone' (not 'per_pixel', 'segnet' or 'unet'): leave it "
                          "unset (None), or choose a ResNet model in config.model.architecture.")
    if not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise MissingFileError(f"config.model.pretrained_backbone={path!r}: no such file or "
                               "folder. Give a slim resnet_v2_N checkpoint (.tar.gz, its folder "
                               "or .ckpt prefix) or an .npz from `python -m "
                               "deeplab_jax.pretrained convert`.")
    depth = _depth_of(params["backbone"])
    if path.endswith(".npz"):
        flat, metadata = _read_npz(path)
        if metadata.get("depth") != depth:
            raise CheckpointError(f"{path} holds resnet_v2_{metadata.get('depth')}, but the "
                                  f"model is ResNet-v2 depth {depth} (config.model.depth="
                                  f"{depth}): use a resnet_v2_{depth} .npz, or set "
                                  f"--config.model.depth={metadata.get('depth')}.")
        _check_input_convention(metadata.get("input_convention", "<not recorded>"))
    else:
        _check_input_convention()
        flat, _ = _map_variables(read_slim_checkpoint(path), depth)
    targets = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
    everything = traverse_util.flatten_dict(targets, sep="/")
    expected = {key: value for key, value in everything.items()
                if key.split("/")[1] not in CASCADED_BLOCKS}
    _compare(flat, expected, path, depth)
    new = {key: np.asarray(value, dtype=expected[key].dtype) for key, (_, value) in flat.items()}
    cascade = sorted({key.split("/")[1] for key in everything} & set(CASCADED_BLOCKS))
    kept = []  # cascade arrays left at their initialisation although copying was asked
    for key, value in everything.items():  # block5..7: random, or block4's loaded arrays
        collection, block, rest = key.split("/", 2)
        if block in cascade:
            source = new.get(f"{collection}/block4/{rest}")
            if copy_block4_to_cascade and source is not None and source.shape == value.shape:
                new[key] = source
            else:
                new[key] = value
                kept += [key] if copy_block4_to_cascade else []
    if kept:
        logging.info("Not copied from block4 (their input is block4's output, wider than "
                     "block3's): %s; they keep their initialisation.", _listing(kept))
    trees = traverse_util.unflatten_dict(new, sep="/")
    logging.info("Loaded %d backbone arrays (%d values) of resnet_v2_%d from %s; the head "
                 "stays as initialised%s.", len(flat), sum(v[1].size for v in flat.values()),
                 depth, path, f", {', '.join(cascade)} " + (
                     "copied from block4" if copy_block4_to_cascade else "random")
                 if cascade else "")
    return ({**params, "backbone": trees["params"]},
            {**batch_stats, "backbone": trees["batch_stats"]})


def convert(source: str, destination: str, depth: int) -> dict[str, Any]:
    """Writes the backbone of slim checkpoint `source` as an .npz; returns its metadata."""
    if not destination.endswith(".npz"):
        raise ConfigError(f"The destination {destination} must end in .npz; name it e.g. "
                          f"resnet_v2_{depth}.npz.")
    flat, skipped = _map_variables(read_slim_checkpoint(source), depth, "--depth")
    root = flat.get("params/root_conv/kernel")
    width = int(root[1].shape[-1]) if root is not None else 64
    _compare(flat, _expected_backbone(depth, width), source, depth)
    metadata = {"format": NPZ_FORMAT, "depth": depth, "width": width,
                "input_convention": INPUT_CONVENTION, "source": os.path.basename(source),
                "skipped": skipped}
    arrays = {key: value for key, (_, value) in flat.items()}
    np.savez(destination, **arrays, **{METADATA_KEY: np.array(json.dumps(metadata))})
    logging.info("Wrote %d arrays of resnet_v2_%d to %s.", len(arrays), depth, destination)
    return metadata


USAGE = ("usage: python -m deeplab_jax.pretrained convert SOURCE DESTINATION.npz --depth=N\n"
         "  SOURCE: resnet_v2_N_*.tar.gz, its extracted folder or a .ckpt prefix (needs "
         "TensorFlow)")


def run_command(argv: Sequence[str]) -> None:
    """The `convert` command line: `argv` as sys.argv (program name first)."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    from deeplab_jax.reporting import command_line  # pylint: disable=import-outside-toplevel

    args = [arg for arg in argv[1:] if not arg.startswith("-")]
    if len(args) != 3 or args[0] != "convert":
        raise SystemExit(USAGE)
    options = command_line.parse_flags(
        lambda flag_values: flags.DEFINE_enum(
            "depth", None, [str(depth) for depth in sorted(UNITS_PER_BLOCK)],
            "ResNet-v2 depth of the checkpoint.", flag_values=flag_values),
        [arg for arg in argv[1:] if arg.startswith("-")], "python -m deeplab_jax.pretrained")
    if options.depth is None:
        raise SystemExit(USAGE)
    command_line.setup_logging()
    convert(args[1], args[2], int(options.depth))


if __name__ == "__main__":
    import sys

    from deeplab_jax import errors

    errors.run_command(lambda: run_command(sys.argv), "python -m deeplab_jax.pretrained")
