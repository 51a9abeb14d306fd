"""GCN (Peng et al. 2017): shapes, parameter names, the k x 1 / 1 x k kernels, gradients, config.

The model is built with its own `build` from the tiny config plus its `default_config()`
block, so these tests do not need its registry line.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from deeplab_jax import config_lib, models
from deeplab_jax.errors import ConfigError
from deeplab_jax.models import gcn, resize

NUM_CLASSES = 5
KERNEL_SIZE = 5  # a CPU-sized k (the paper's 15 is the default)
STAGES = (32, 16, 8, 4)
TOP_LEVEL = ({"backbone"}
             | {f"stride{s}_preact_norm" for s in (16, 8, 4)}
             | {f"gcn{s}" for s in STAGES} | {f"gcn{s}_refine" for s in STAGES}
             | {f"refine{s}" for s in (16, 8, 4, 2, 1)})
UPSAMPLERS = {f"upsample{s}" for s in (16, 8, 4, 2, 1)}


def _config(**block_fields):
    config = tiny.get_config()
    if "gcn" not in config.model:  # until the registry (hence configs/voc.py) has the block
        config.model.gcn = gcn.default_config()
    config.model.gcn.update({"kernel_size": KERNEL_SIZE, **block_fields})
    config.model.output_stride = 32
    gcn.resolve(config, 32)
    return config


def _model(**block_fields):
    return gcn.build(_config(**block_fields).model, NUM_CLASSES)


def _init_shapes(model, size=(65, 97)):
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))


def _shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def _numpy_variables(model, size, seed=0):
    return _numpy_draw(_init_shapes(model, size), seed)


def _numpy_draw(abstract_variables, seed=0):
    """Variables drawn in numpy on an abstract tree: kernels normal with variance 1/fan-in,
    biases and means 0, scales and variances 1. On 2 busy cores, compiling `init` (every
    initializer) takes longer than compiling the gradient itself."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape),
                               leaf.dtype)
        return (jnp.ones if name in ("scale", "var") else jnp.zeros)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_variables)


def _images(size, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0, 255, (batch, *size, 3)), jnp.float32)


# 65x97 and 33x33 are 32k+1 (the codebase's crops: every 2x step is exactly 2n-1); 64x96
# and CamVid's reduced 90x120 take the resizes after the deconvolutions (bilinear upsampling
# resizes straight to each size, whatever it is).
@pytest.mark.parametrize("size,upsampling", [
    ((65, 97), "deconv"), ((33, 33), "deconv"), ((64, 96), "deconv"), ((90, 120), "deconv"),
    ((65, 97), "bilinear"), ((64, 96), "bilinear")])
def test_logits_have_the_input_size(size, upsampling):
    model = _model(upsampling=upsampling)
    variables = _init_shapes(model, size)
    for train in (False, True):
        logits = jax.eval_shape(
            lambda v, x, train=train: model.apply(v, x, train=train,
                                                  mutable=["batch_stats"] if train else False),
            variables, jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
        logits = logits[0] if train else logits
        assert logits.shape == (2, *size, NUM_CLASSES) and logits.dtype == jnp.float32


def test_the_stride_one_map_is_the_input_size_before_any_final_resize():
    """Fig. 2A's last BR runs at the image size: the head's own output is 65x97 already."""
    model = _model()
    variables = _init_shapes(model)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                 mutable=["intermediates"]),
        variables, jax.ShapeDtypeStruct((1, 65, 97, 3), jnp.float32))
    refined = state["intermediates"]
    assert refined["refine1"]["__call__"][0].shape == (1, 65, 97, NUM_CLASSES)
    assert refined["refine2"]["__call__"][0].shape == (1, 33, 49, NUM_CLASSES)
    assert refined["refine4"]["__call__"][0].shape == (1, 17, 25, NUM_CLASSES)


def test_parameter_names_and_an_unchanged_backbone():
    variables = _init_shapes(_model())
    params = variables["params"]
    assert set(params) == TOP_LEVEL | UPSAMPLERS
    for stride in STAGES:
        assert sorted(params[f"gcn{stride}"]) == ["left_1_by_k", "left_k_by_1", "right_1_by_k",
                                                   "right_k_by_1"]
        assert all(sorted(conv) == ["bias", "kernel"] for conv in params[f"gcn{stride}"].values())
    for name in [f"gcn{s}_refine" for s in STAGES] + [f"refine{s}" for s in (16, 8, 4, 2, 1)]:
        assert {key: value["kernel"].shape for key, value in params[name].items()} == {
            "conv1": (3, 3, NUM_CLASSES, NUM_CLASSES), "conv2": (3, 3, NUM_CLASSES, NUM_CLASSES)}
    for name in UPSAMPLERS:  # bias-free, classes to classes
        assert _shapes(params[name]) == {
            "kernel": ((3, 3, NUM_CLASSES, NUM_CLASSES), jnp.float32)}
    assert set(variables["batch_stats"]) == {"backbone"} | {
        f"stride{s}_preact_norm" for s in (16, 8, 4)}
    # The backbone is DeepLabv3's, name for name and shape for shape: ImageNet weights and
    # backbone checkpoints load into GCN as into every ResNet-based model.
    deeplab_config = config_lib.resolve_config(tiny.get_config())  # its tree has no stride
    assert deeplab_config.model.architecture == "deeplabv3"
    deeplab = _init_shapes(models.get_model(deeplab_config.model, NUM_CLASSES))
    for collection in ("params", "batch_stats"):
        assert _shapes(variables[collection]["backbone"]) == _shapes(
            deeplab[collection]["backbone"]), collection
    # Bilinear upsampling: the same tree without the deconvolutions.
    bilinear = _init_shapes(_model(upsampling="bilinear"))["params"]
    assert set(bilinear) == TOP_LEVEL
    assert _shapes(bilinear) == _shapes({k: v for k, v in params.items() if k in TOP_LEVEL})


@pytest.mark.parametrize("kernel_size", [3, KERNEL_SIZE, 15])
def test_the_gcn_branches_are_k_by_1_and_1_by_k(kernel_size):
    config = _config(kernel_size=kernel_size)
    params = _init_shapes(gcn.build(config.model, NUM_CLASSES))["params"]
    width = config.model.width
    # Channels of each tap at depth 14 (one unit per block, `resnet.py`): stride 4 is the root
    # (the input of block1's only unit), stride 8 block1's output, 16 block2's, 32 block4's.
    stage_channels = {4: width, 8: 4 * width, 16: 8 * width, 32: 32 * width}
    k, classes = kernel_size, NUM_CLASSES
    for stride, channels in stage_channels.items():
        kernels = {name: conv["kernel"].shape for name, conv in params[f"gcn{stride}"].items()}
        assert kernels == {"left_k_by_1": (k, 1, channels, classes),
                           "left_1_by_k": (1, k, classes, classes),
                           "right_1_by_k": (1, k, channels, classes),
                           "right_k_by_1": (k, 1, classes, classes)}, stride


def test_a_gcn_module_connects_a_k_by_k_window_and_nothing_beyond():
    """Sec. 3.1: the two separable branches together reach the whole k x k square."""
    k = 7
    module = gcn.GlobalConvolution(num_classes=3, kernel_size=k)
    impulse = jnp.zeros((1, 15, 15, 2)).at[0, 7, 7, 0].set(1.0)
    variables = _numpy_draw(jax.eval_shape(module.init, jax.random.key(0), impulse))
    response = np.asarray(module.apply(variables, impulse) - module.apply(
        variables, jnp.zeros_like(impulse)))
    reached = np.any(response[0] != 0, axis=-1)
    expected = np.zeros((15, 15), bool)
    expected[7 - k // 2:8 + k // 2, 7 - k // 2:8 + k // 2] = True
    np.testing.assert_array_equal(reached, expected)


def test_the_deconvolution_starts_as_aligned_corners_bilinear_upsampling():
    x = jax.random.normal(jax.random.key(0), (1, 5, 7, NUM_CLASSES))
    kernel = gcn.bilinear_upsampling_kernel(None, (3, 3, NUM_CLASSES, NUM_CLASSES))
    up = jax.lax.conv_transpose(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert up.shape == (1, 9, 13, NUM_CLASSES)
    np.testing.assert_allclose(up, resize.resize_bilinear(x, (9, 13)), atol=1e-6)


@pytest.mark.slow  # compiles the model twice: about 50 s on 2 busy cores
def test_at_initialisation_deconvolution_and_bilinear_models_agree():
    """At 32k+1 sizes, where no resize follows the deconvolutions."""
    images = _images((65, 97), batch=1)
    deconv_model = _model()
    variables = jax.jit(lambda x: deconv_model.init(jax.random.key(0), x, train=False))(images)
    without = {"params": {k: v for k, v in variables["params"].items() if k in TOP_LEVEL},
               "batch_stats": variables["batch_stats"]}
    bilinear_model = _model(upsampling="bilinear")
    np.testing.assert_allclose(
        jax.jit(lambda v, x: deconv_model.apply(v, x, train=False))(variables, images),
        jax.jit(lambda v, x: bilinear_model.apply(v, x, train=False))(without, images),
        rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 13-23 s on 2 busy cores; tests/test_heads.py's check covers it too
def test_every_parameter_gets_a_finite_nonzero_gradient_of_the_cross_entropy():
    model = _model()
    images = _images((33, 33))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, NUM_CLASSES, (2, 33, 33)))
    variables = _numpy_variables(model, (33, 33))

    def loss_fn(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
    assert np.isfinite(float(loss))
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == len(jax.tree.leaves(variables["params"]))
    bad = [jax.tree_util.keystr(path) for path, grad in leaves
           if not np.all(np.isfinite(np.asarray(grad))) or not np.any(np.asarray(grad))]
    assert not bad, f"non-finite or zero gradients: {bad}"


@pytest.mark.parametrize("field,value,message", [
    ("kernel_size", 14, r"config.model.gcn.kernel_size=14 must be an odd integer >= 1.*"
                        r"--config.model.gcn.kernel_size=15"),
    ("kernel_size", 0, r"config.model.gcn.kernel_size=0 must be an odd integer >= 1"),
    ("kernel_size", -3, r"config.model.gcn.kernel_size=-3 must be an odd integer >= 1"),
    ("upsampling", "nearest", r"config.model.gcn.upsampling='nearest' is not one of "
                              r"\('deconv', 'bilinear'\); set 'deconv'"),
])
def test_resolve_rejects_bad_block_values_naming_the_fix(field, value, message):
    config = tiny.get_config()
    config.model.gcn = gcn.default_config()
    config.model.gcn[field] = value
    config.model.output_stride = 32
    with pytest.raises(ConfigError, match=message):
        gcn.resolve(config, 32)


def test_resolve_rejects_a_kernel_size_of_the_wrong_type():
    config = tiny.get_config()
    config.model.gcn = dict(kernel_size=7.0, upsampling="deconv")  # a dict bypasses the type
    config.model.output_stride = 32
    with pytest.raises(ConfigError, match=r"kernel_size=7.0 must be an odd integer"):
        gcn.resolve(config, 32)


@pytest.mark.parametrize("train_stride,eval_stride,name", [(16, 32, "model"),
                                                           (32, 8, "eval")])
def test_resolve_rejects_a_dilated_backbone(train_stride, eval_stride, name):
    config = tiny.get_config()
    config.model.gcn = gcn.default_config()
    config.model.output_stride = train_stride
    with pytest.raises(ConfigError, match=rf"config.{name}.output_stride=\d+: GCN .* needs "
                                          rf"output stride 32. Set --config.{name}"):
        gcn.resolve(config, eval_stride)


def test_the_contract_of_a_model_file():
    assert gcn.OUTPUT_STRIDES == (32,)
    assert gcn.AUX_LOSS_WEIGHT == 0.0
    assert dict(gcn.default_config()) == {"kernel_size": 15, "upsampling": "deconv"}
