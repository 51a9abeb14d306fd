"""ImageNet-pretrained backbones: slim resnet_v2 checkpoints, verified against TF-slim itself.

The reference is `tf_slim.nets.resnet_v2` with random weights and random BN statistics: its
checkpoint goes through our import, and both networks must agree block by block at every
output stride. Error cases use a tiny slim-layout checkpoint (depth 14, width 8).
"""
import contextlib
import functools
import io
import json
import logging
import os
import re
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
import tf_slim as slim
from flax import traverse_util
from tensorflow.python.framework import ops as tf_ops
from tf_slim.nets import resnet_utils, resnet_v2

from configs import tiny
from deeplab_jax import config_lib, models, train
from deeplab_jax.models import pretrained
from deeplab_jax.training import step as train_step_lib
from deeplab_jax.models import segmenter as deeplab_lib
from deeplab_jax.models import get_model
from deeplab_jax.models.resnet import UNITS_PER_BLOCK, ResNetV2, strides_and_rates

DEPTH = 26  # (2, 2, 2, 2) units: numbering, identity shortcuts with a stride, depth changes.
WIDTH = 64  # slim's root conv always has 64 channels.
SIZES = ((2, 65, 65), (1, 49, 81))  # square and non-square odd inputs
OUTPUT_STRIDES = (8, 16, 32)
MULTI_GRID = (1, 2)  # one factor per block4 unit of depth 26
BLOCKS = tuple(f"block{b}" for b in range(1, 5))
TINY_DEPTH = 14  # configs/tiny.py's backbone


@pytest.fixture(scope="module", autouse=True)
def _tf_slim_compat():
    # tf_slim 1.1.0 (its last release) reads ops.Tensor, which TF 2.21 no longer defines.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_ops, "Tensor", getattr(tf_ops, "Tensor", tf.Tensor), raising=False)
        yield


@contextlib.contextmanager
def _slim_scope():
    """slim's resnet_arg_scope, BN moving averages updated in place instead of via UPDATE_OPS.

    slim's UPDATE_OPS path builds a Keras layer (it needs the tf_keras package); inference,
    with is_training=False, is the same fused batch norm on the moving statistics either way.
    """
    bn = dict(decay=0.997, epsilon=1e-5, scale=True, updates_collections=None)
    with slim.arg_scope(resnet_v2.resnet_arg_scope()):
        with slim.arg_scope([slim.conv2d], normalizer_params=bn):
            with slim.arg_scope([slim.batch_norm], **bn):
                yield


def _multi_grid_bottleneck(inputs, unit_rate=1, rate=1, **kwargs):
    """slim's unit at rate * unit_rate: DeepLab's multi-grid (slim itself has none)."""
    return resnet_v2.bottleneck(inputs, rate=rate * unit_rate, **kwargs)


def _slim_blocks(block4_unit_rates=None):
    blocks = [resnet_v2.resnet_v2_block(f"block{i + 1}", base_depth=WIDTH * 2**i,
                                        num_units=units, stride=stride)
              for i, (units, stride) in enumerate(zip(UNITS_PER_BLOCK[DEPTH], (2, 2, 2, 1)))]
    if block4_unit_rates:
        block4 = blocks[3]
        blocks[3] = resnet_utils.Block(block4.scope, _multi_grid_bottleneck, [
            dict(unit, unit_rate=rate) for unit, rate in zip(block4.args, block4_unit_rates)])
    return blocks


def _random_value(name, shape, rng):
    leaf = name.split("/")[-1]
    if leaf == "weights":
        return rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape).astype(np.float32)
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    scale = 0.3 if leaf == "moving_mean" else 0.1  # moving_mean, beta, biases, slots
    return rng.normal(0.0, scale, shape).astype(np.float32)


@pytest.fixture(scope="module")
def slim_reference(tmp_path_factory):
    """A random slim resnet_v2_26, its checkpoint and its activations on random inputs."""
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1.0, 1.0, (*size, 3)).astype(np.float32) for size in SIZES]
    scope = f"resnet_v2_{DEPTH}"
    graph = tf.Graph()
    with graph.as_default(), _slim_scope():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        towers = {}
        settings = [(s, None) for s in OUTPUT_STRIDES] + [(s, MULTI_GRID) for s in (8, 16)]
        for output_stride, unit_rates in settings:  # One set of variables, five towers.
            net, end_points = resnet_v2.resnet_v2(
                images, _slim_blocks(unit_rates), num_classes=None, is_training=False,
                global_pool=False, output_stride=output_stride, reuse=bool(towers), scope=scope)
            towers[output_stride, unit_rates] = {
                **{block: end_points[f"{scope}/{block}"] for block in BLOCKS}, "postnorm": net}
        # What a real ImageNet checkpoint also holds: logits, global_step, optimizer slots.
        logits = slim.conv2d(net, 5, [1, 1], activation_fn=None, normalizer_fn=None,
                             scope=f"{scope}/logits")
        tf.compat.v1.train.MomentumOptimizer(0.1, 0.9).minimize(
            tf.reduce_mean(logits), global_step=tf.compat.v1.train.get_or_create_global_step())
        saver = tf.compat.v1.train.Saver()
        feeds, assigns = {}, []
        for variable in tf.compat.v1.global_variables():  # Random weights and BN statistics.
            if variable.op.name == "global_step":
                continue
            value = tf.compat.v1.placeholder(tf.float32, variable.shape)
            feeds[value] = _random_value(variable.op.name, variable.shape.as_list(), rng)
            assigns.append(variable.assign(value))
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(assigns, feeds)
            outputs = {key: [sess.run(tower, {images: x}) for x in inputs]
                       for key, tower in towers.items()}
            prefix = saver.save(sess, str(tmp_path_factory.mktemp("slim") / f"{scope}.ckpt"),
                                write_meta_graph=False)
    return {"prefix": prefix, "inputs": inputs, "outputs": outputs}


@pytest.fixture(scope="module")
def slim_variables(slim_reference):
    return pretrained.read_slim_checkpoint(slim_reference["prefix"])


@pytest.fixture(scope="module")
def converted(slim_variables):
    return pretrained.slim_to_backbone(slim_variables, DEPTH)


def _ours(converted, output_stride, multi_grid, x):
    model = ResNetV2(depth=DEPTH, width=WIDTH, output_stride=output_stride,
                     multi_grid=multi_grid)
    apply = jax.jit(functools.partial(model.apply, train=False, mutable=["intermediates"]))
    params, batch_stats = converted
    features, state = apply({"params": params, "batch_stats": batch_stats}, jnp.asarray(x))
    return {**{block: np.asarray(state["intermediates"][block]["output"][0])
               for block in BLOCKS}, "postnorm": np.asarray(features["out"])}


def _assert_close(ours, theirs, what):
    assert ours.shape == theirs.shape, what
    scale = float(np.max(np.abs(theirs)))
    assert scale > 0, what
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_imported_backbone_matches_tf_slim_block_by_block(slim_reference, converted,
                                                          output_stride):
    for x, theirs in zip(slim_reference["inputs"], slim_reference["outputs"][output_stride, None]):
        ours = _ours(converted, output_stride, (1,) * UNITS_PER_BLOCK[DEPTH][3], x)
        for name in (*BLOCKS, "postnorm"):
            _assert_close(ours[name], theirs[name], f"{name} at OS{output_stride}, {x.shape}")
        expected = (-(-x.shape[1] // output_stride), -(-x.shape[2] // output_stride))
        assert ours["postnorm"].shape[1:3] == expected


@pytest.mark.parametrize("output_stride", [8, 16])
def test_multi_grid_matches_slim_units_at_rate_times_factor(slim_reference, converted,
                                                            output_stride):
    x = slim_reference["inputs"][0]
    plain = slim_reference["outputs"][output_stride, None][0]
    theirs = slim_reference["outputs"][output_stride, MULTI_GRID][0]
    ours = _ours(converted, output_stride, MULTI_GRID, x)
    for name in (*BLOCKS, "postnorm"):
        _assert_close(ours[name], theirs[name], f"{name} at OS{output_stride}")
    # The reference is sensitive to it: multi-grid leaves block3 and changes block4.
    np.testing.assert_array_equal(plain["block3"], theirs["block3"])
    difference = np.max(np.abs(plain["block4"] - theirs["block4"]))
    assert difference > 1e-2 * np.max(np.abs(plain["block4"]))


def _slim_plan(depth, output_stride, monkeypatch):
    """(stride, rate) of every unit as slim's own resnet_v2_{depth} hands them out."""
    plan = {}

    def record(block, inputs, rate=1, stride=1, **unused):
        plan.setdefault(block, []).append((stride, rate))
        return inputs

    original = resnet_v2.resnet_v2

    def recording_resnet_v2(inputs, blocks, *args, **kwargs):
        blocks = [resnet_utils.Block(b.scope, functools.partial(record, b.scope), b.args)
                  for b in blocks]
        return original(inputs, blocks, *args, **kwargs)

    with monkeypatch.context() as patch, tf.Graph().as_default(), _slim_scope():
        patch.setattr(resnet_v2, "resnet_v2", recording_resnet_v2)
        getattr(resnet_v2, f"resnet_v2_{depth}")(
            tf.compat.v1.placeholder(tf.float32, [1, 65, 65, 3]), num_classes=None,
            is_training=False, global_pool=False, output_stride=output_stride)
    return [plan[block] for block in BLOCKS]


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_strides_and_rates_are_slims_times_the_multi_grid(depth, monkeypatch):
    units = UNITS_PER_BLOCK[depth]
    for output_stride in OUTPUT_STRIDES:
        theirs = _slim_plan(depth, output_stride, monkeypatch)
        assert strides_and_rates(output_stride, units, (1,) * units[3]) == theirs
        ours = strides_and_rates(output_stride, units, (1, 2, 4))
        assert ours[:3] == theirs[:3]
        assert ours[3] == [(s, r * m) for (s, r), m in zip(theirs[3], (1, 2, 4))]


def test_every_slim_backbone_variable_has_a_place(slim_variables, converted):
    backbone = {name for name in slim_variables if name.startswith(f"resnet_v2_{DEPTH}/")
                and "/logits/" not in name and not name.endswith("/Momentum")}
    model = ResNetV2(depth=DEPTH, width=WIDTH, multi_grid=(1, 1))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32))
    expected = traverse_util.flatten_dict(dict(shapes), sep="/")
    assert {pretrained.slim_name(key, DEPTH) for key in expected} == backbone
    flat = traverse_util.flatten_dict({"params": converted[0], "batch_stats": converted[1]},
                                      sep="/")
    assert {key: v.shape for key, v in flat.items()} == {k: v.shape for k, v in expected.items()}
    for key, value in flat.items():
        np.testing.assert_array_equal(value, slim_variables[pretrained.slim_name(key, DEPTH)])


def test_logits_global_step_and_slots_are_skipped_and_reported(slim_variables, caplog):
    assert "global_step" in slim_variables and f"resnet_v2_{DEPTH}/logits/weights" in slim_variables
    slot = f"resnet_v2_{DEPTH}/block1/unit_1/bottleneck_v2/conv1/weights/Momentum"
    assert slot in slim_variables
    with caplog.at_level(logging.INFO):
        params, _ = pretrained.slim_to_backbone(slim_variables, DEPTH)
    assert "logits" not in params
    for name in ("global_step", f"resnet_v2_{DEPTH}/logits/weights", "optimizer slots (Momentum)"):
        assert name in caplog.text


# -- Loading into the model's trees, errors, files ------------------------------------------

def _target(depth=TINY_DEPTH, width=8):
    """Abstract (params, batch_stats) of a DeepLabV3 with this backbone."""
    config = tiny.get_config()
    config.model.update(depth=depth, width=width, multi_grid=(1,) * UNITS_PER_BLOCK[depth][3])
    config.model.deeplabv3.atrous_rates = (1, 2, 3)
    model = get_model(config.model, num_classes=3)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32))
    return shapes["params"], shapes["batch_stats"]


def _tiny_slim_variables():
    """A random slim-layout resnet_v2_14 of width 8 (slim's zoo nets are width 64)."""
    rng = np.random.default_rng(1)
    params, batch_stats = _target()
    flat = traverse_util.flatten_dict(
        {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}, sep="/")
    names = {key: pretrained.slim_name(key, TINY_DEPTH) for key in flat}
    variables = {names[key]: _random_value(names[key], value.shape, rng)
                 for key, value in flat.items()}
    variables["global_step"] = np.array(1000, np.int64)
    variables[f"resnet_v2_{TINY_DEPTH}/logits/weights"] = np.ones((1, 1, 256, 5), np.float32)
    return variables


def _write_checkpoint(variables, prefix, version=tf.compat.v1.train.SaverDef.V2):
    with tf.Graph().as_default():
        tf_variables = {name: tf.compat.v1.Variable(value, name=f"v{i}")
                        for i, (name, value) in enumerate(variables.items())}
        saver = tf.compat.v1.train.Saver(tf_variables, write_version=version)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, str(prefix), write_meta_graph=False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    variables = _tiny_slim_variables()
    prefix = _write_checkpoint(variables, tmp_path_factory.mktemp("tiny") / "resnet_v2_14.ckpt")
    return prefix, variables


def test_load_backbone_replaces_the_backbone_and_keeps_the_head(tiny_checkpoint):
    prefix, variables = tiny_checkpoint
    target = _target()
    params, batch_stats = pretrained.load_backbone(prefix, *target)
    assert params["aspp"] is target[0]["aspp"] and params["logits"] is target[0]["logits"]
    np.testing.assert_array_equal(
        params["backbone"]["block3"]["unit01"]["conv2_norm"]["scale"],
        variables["resnet_v2_14/block3/unit_1/bottleneck_v2/conv2/BatchNorm/gamma"])
    np.testing.assert_array_equal(
        batch_stats["backbone"]["postnorm"]["var"],
        variables["resnet_v2_14/postnorm/moving_variance"])
    assert (jax.tree.structure(params), jax.tree.structure(batch_stats)) == (
        jax.tree.structure(target[0]), jax.tree.structure(target[1]))


@pytest.mark.parametrize("name", [name for name in models.MODELS
                                  if models.uses_resnet_backbone(name)])
def test_the_imported_backbone_loads_into_every_resnet_model(tiny_checkpoint, name):
    """One backbone, many heads: slim's weights fit every model's `backbone`, unchanged."""
    prefix, variables = tiny_checkpoint
    config = tiny.get_config()
    config.model.architecture = name
    config.model.output_stride = models.MODELS[name].OUTPUT_STRIDES[0]
    config = config_lib.resolve_config(config)
    model = get_model(config.model, num_classes=3)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32))
    params, batch_stats = pretrained.load_backbone(prefix, shapes["params"],
                                                   shapes["batch_stats"])
    np.testing.assert_array_equal(
        params["backbone"]["block3"]["unit01"]["conv2_norm"]["scale"],
        variables["resnet_v2_14/block3/unit_1/bottleneck_v2/conv2/BatchNorm/gamma"])
    assert {key: value for key, value in params.items() if key != "backbone"} == {
        key: value for key, value in shapes["params"].items() if key != "backbone"}


@pytest.mark.parametrize("copy", [False, True])
def test_cascaded_blocks_start_random_or_as_copies_of_the_imported_block4(tiny_checkpoint,
                                                                           copy):
    """slim's nets have block1-4: the cascade's block5-7 keep their initialisation or copy
    the imported block4 (`deeplabv3_cascade.cascade_init`)."""
    prefix, variables = tiny_checkpoint
    config = tiny.get_config()
    config.model.update(architecture="deeplabv3_cascade", output_stride=16,
                        pretrained_backbone=prefix)
    config.model.deeplabv3_cascade.update(num_cascaded_blocks=2,
                                          cascade_init="block4" if copy else "random")
    config = config_lib.resolve_config(config)
    model = get_model(config.model, num_classes=3)
    initial = model.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3)), train=False)
    params, batch_stats = pretrained.load_backbone(
        prefix, initial["params"], initial["batch_stats"],
        **models.model_module("deeplabv3_cascade").pretrained_options(config.model))
    backbone = params["backbone"]
    assert sorted(name for name in backbone if name.startswith("block")) == [
        f"block{i}" for i in range(1, 7)]
    np.testing.assert_array_equal(
        backbone["block4"]["unit01"]["conv2"]["kernel"],
        variables["resnet_v2_14/block4/unit_1/bottleneck_v2/conv2/weights"])
    # block4's first unit reads block3's output (half block4's depth) and projects it with a
    # shortcut conv; a copy's first unit reads block4's output: its preact_norm and conv1
    # differ in shape and keep their initialisation, and it has no shortcut.
    reads_the_input = (["unit01", "preact_norm"], ["unit01", "conv1"])
    for block in ("block5", "block6"):
        for collection, loaded, start in (("params", backbone, initial["params"]),
                                          ("batch_stats", batch_stats["backbone"],
                                           initial["batch_stats"])):
            flat = traverse_util.flatten_dict(loaded[block], sep="/")
            block4 = traverse_util.flatten_dict(loaded["block4"], sep="/")
            init = traverse_util.flatten_dict(start["backbone"][block], sep="/")
            for key, value in flat.items():
                copied = copy and key.split("/")[:2] not in reads_the_input
                np.testing.assert_array_equal(value, block4[key] if copied else init[key],
                                              err_msg=f"{collection}/{block}/{key}")
    if not copy:
        assert not np.allclose(backbone["block5"]["unit01"]["conv2"]["kernel"],
                               backbone["block4"]["unit01"]["conv2"]["kernel"])


def test_copying_block4_needs_an_imagenet_backbone():
    config = tiny.get_config()
    config.model.architecture = "deeplabv3_cascade"
    config.model.deeplabv3_cascade.cascade_init = "block4"
    with pytest.raises(ValueError, match="needs config.model.pretrained_backbone"):
        config_lib.resolve_config(config)


def _load_modified(tmp_path, variables, depth=TINY_DEPTH):
    prefix = _write_checkpoint(variables, tmp_path / f"resnet_v2_{depth}.ckpt")
    return pretrained.load_backbone(prefix, *_target())


def test_missing_variable_is_named(tiny_checkpoint, tmp_path):
    name = "resnet_v2_14/block2/unit_1/bottleneck_v2/conv2/BatchNorm/moving_variance"
    variables = dict(tiny_checkpoint[1])
    del variables[name]
    with pytest.raises(ValueError, match=r"1 missing: batch_stats/block2/unit01/conv2_norm/var "
                                         rf"\({re.escape(name)}\)"):
        _load_modified(tmp_path, variables)


@pytest.mark.parametrize("name", [
    "resnet_v2_14/block4/unit_2/bottleneck_v2/conv1/weights",  # a unit the model lacks
    "resnet_v2_14/block1/unit_1/bottleneck_v2/conv4/weights",  # a layer slim never has
])
def test_unexpected_variable_is_named(tiny_checkpoint, tmp_path, name):
    variables = {**tiny_checkpoint[1], name: np.zeros((1, 1, 8, 8), np.float32)}
    with pytest.raises(ValueError, match=re.escape(name)):
        _load_modified(tmp_path, variables)


def test_wrong_shape_is_named_with_both_shapes(tiny_checkpoint, tmp_path):
    name = "resnet_v2_14/block3/unit_1/bottleneck_v2/conv3/weights"
    variables = {**tiny_checkpoint[1], name: np.zeros((1, 1, 32, 64), np.float32)}
    with pytest.raises(ValueError, match=re.escape(f"{name}: checkpoint (1, 1, 32, 64) vs "
                                                   "model (1, 1, 32, 128)")):
        _load_modified(tmp_path, variables)


def test_wrong_depth_is_refused_naming_both(tiny_checkpoint, tmp_path, slim_variables):
    renamed = {name.replace("resnet_v2_14/", "resnet_v2_50/"): value
               for name, value in tiny_checkpoint[1].items()}
    with pytest.raises(ValueError, match=r"holds resnet_v2_50, but the model is ResNet-v2 "
                                         r"depth 14 \(config.model.depth=14\)"):
        _load_modified(tmp_path, renamed, depth=50)
    with pytest.raises(ValueError, match="holds resnet_v2_26, but .* depth 101"):
        pretrained.slim_to_backbone(slim_variables, 101)


def _leaves_equal(a, b):
    flat_a, flat_b = (traverse_util.flatten_dict(t, sep="/") for t in (a, b))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def test_tar_gz_in_the_zoo_layout_loads(tiny_checkpoint, tmp_path):
    prefix = tiny_checkpoint[0]
    archive = tmp_path / "resnet_v2_14_2017_04_14.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for suffix in (".index", ".data-00000-of-00001"):
            tar.add(prefix + suffix, arcname=f"resnet_v2_14.ckpt{suffix}")
    from_tar = pretrained.load_backbone(str(archive), *_target())
    direct = pretrained.load_backbone(prefix, *_target())
    for a, b in zip(from_tar, direct):
        _leaves_equal(a["backbone"], b["backbone"])


def test_v1_single_file_checkpoint_in_a_folder_loads(tiny_checkpoint, tmp_path):
    _write_checkpoint(tiny_checkpoint[1], tmp_path / "resnet_v2_14.ckpt",
                      version=tf.compat.v1.train.SaverDef.V1)
    assert os.path.isfile(tmp_path / "resnet_v2_14.ckpt")
    loaded = pretrained.load_backbone(str(tmp_path), *_target())
    direct = pretrained.load_backbone(tiny_checkpoint[0], *_target())
    _leaves_equal(loaded[0]["backbone"], direct[0]["backbone"])


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/absolute_escape.txt", "link"])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ValueError, match=re.escape(repr(member))):
        pretrained.read_slim_checkpoint(str(archive))
    assert not os.path.exists(tmp_path.parent / "escape.txt")


def test_npz_round_trip_equals_the_direct_load(slim_reference, tmp_path):
    destination = str(tmp_path / "r26.npz")
    pretrained.run_command(["pretrained", "convert", slim_reference["prefix"], destination,
                            f"--depth={DEPTH}"])
    with np.load(destination, allow_pickle=False) as data:
        metadata = json.loads(str(data[pretrained.METADATA_KEY]))
        assert "params/block1/unit02/conv2/kernel" in data.files
        assert "batch_stats/block4/unit01/preact_norm/mean" in data.files
    assert metadata["depth"] == DEPTH and metadata["width"] == WIDTH
    assert metadata["input_convention"] == pretrained.INPUT_CONVENTION
    target = _target(DEPTH, WIDTH)
    from_npz = pretrained.load_backbone(destination, *target)
    direct = pretrained.load_backbone(slim_reference["prefix"], *target)
    for a, b in zip(from_npz, direct):
        _leaves_equal(a["backbone"], b["backbone"])
    with pytest.raises(ValueError, match="holds resnet_v2_26, but the model is ResNet-v2 depth 14"):
        pretrained.load_backbone(destination, *_target())


def test_npz_of_another_input_convention_is_refused(tiny_checkpoint, tmp_path):
    destination = str(tmp_path / "tiny.npz")
    pretrained.convert(tiny_checkpoint[0], destination, TINY_DEPTH)
    with np.load(destination, allow_pickle=False) as data:
        arrays = dict(data)
    metadata = json.loads(str(arrays[pretrained.METADATA_KEY]))
    metadata["input_convention"] = "caffe_bgr_mean_subtracted"
    arrays[pretrained.METADATA_KEY] = np.array(json.dumps(metadata))
    np.savez(destination, **arrays)
    with pytest.raises(ValueError, match="Input convention mismatch.*caffe_bgr_mean_subtracted"):
        pretrained.load_backbone(destination, *_target())


def test_npz_loads_without_tensorflow_and_a_checkpoint_says_to_convert(tiny_checkpoint,
                                                                       tmp_path, monkeypatch):
    destination = str(tmp_path / "tiny.npz")
    pretrained.convert(tiny_checkpoint[0], destination, TINY_DEPTH)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails.
    params, _ = pretrained.load_backbone(destination, *_target())
    np.testing.assert_array_equal(params["backbone"]["root_conv"]["bias"],
                                  tiny_checkpoint[1]["resnet_v2_14/conv1/biases"])
    with pytest.raises(ImportError, match="needs TensorFlow.*convert SRC DST.npz"):
        pretrained.load_backbone(tiny_checkpoint[0], *_target())


def test_a_model_fed_mean_subtracted_pixels_is_refused(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(deeplab_lib, "normalize_pixels",
                        lambda images: images.astype(jnp.float32) - 117.0)  # a mean pixel
    with pytest.raises(ValueError, match="Input convention mismatch"):
        pretrained.load_backbone(tiny_checkpoint[0], *_target())


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.model\.pretrained_backbone="
                                                r"'.*nothing\.ckpt': no such file or folder"):
        pretrained.load_backbone(str(tmp_path / "nothing.ckpt"), *_target())


# -- The training loop ------------------------------------------------------------------------

def _checkpoint_backbone(workdir, step):
    state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                          "state"))
    return state["params"]["backbone"], state["batch_stats"]["backbone"]


class _FirstStep(Exception):
    """Stops a run at its first training step, carrying the state it would train."""

    def __init__(self, state):
        super().__init__()
        self.state = state


def _state_at_first_step(config, workdir, monkeypatch):
    def jit_train_step(*unused_args, **unused_kwargs):
        def step(state, batch, rng):
            raise _FirstStep(state)
        return step

    monkeypatch.setattr(train_step_lib, "jit_train_step", jit_train_step)
    with pytest.raises(_FirstStep) as stop:
        train.train_and_evaluate(config, workdir)
    return stop.value.state


def test_a_fresh_run_trains_from_the_imported_backbone(tiny_checkpoint, tmp_path, monkeypatch):
    prefix, variables = tiny_checkpoint
    config = tiny.get_config()
    config.model.pretrained_backbone = prefix
    state = _state_at_first_step(config, str(tmp_path / "run"), monkeypatch)
    expected = pretrained.slim_to_backbone(variables, TINY_DEPTH)
    _leaves_equal(jax.device_get(state.params["backbone"]), expected[0])
    _leaves_equal(jax.device_get(state.batch_stats["backbone"]), expected[1])
    assert state.params["backbone"]["root_conv"]["kernel"].sharding.is_fully_replicated
    assert int(state.step) == 0


@pytest.mark.slow  # Two tiny runs: about 40 s on 2 CPU cores.
def test_training_starts_from_the_pretrained_backbone_and_resuming_keeps_it(tiny_checkpoint,
                                                                            tmp_path):
    prefix, variables = tiny_checkpoint
    config = tiny.get_config()
    config.model.pretrained_backbone = prefix
    # lr 0 and frozen BN: a step changes nothing, so step 1 holds the imported weights.
    config.optim.base_learning_rate = 0.0
    config.optim.freeze_bn = True
    config.num_train_steps = config.eval_every_steps = 1
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    expected = pretrained.slim_to_backbone(variables, TINY_DEPTH)
    for saved, imported in zip(_checkpoint_backbone(workdir, 1), expected):
        _leaves_equal(saved, imported)
    # A resumed run keeps its checkpoint: the (now missing) pretrained file is never read.
    config.model.pretrained_backbone = str(tmp_path / "gone.npz")
    config.num_train_steps = 2
    train.train_and_evaluate(config, workdir)
    for saved, imported in zip(_checkpoint_backbone(workdir, 2), expected):
        _leaves_equal(saved, imported)
