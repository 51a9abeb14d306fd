"""Training in stages (deeplab_jax/training/freeze.py, config.init_from_fresh): frozen
parameters and their BN statistics bit-identical after training, no optimizer state for
them, a stage started from the previous stage's weights by name."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import tiny
from deeplab_jax import config_lib, errors, models, train
from deeplab_jax.data import datasets
from deeplab_jax.training import checkpoint, freeze
from deeplab_jax.training import step as step_lib

FRONT_END = ("backbone/*", "aspp/*", "logits/*")  # DeepLabv3's names inside the context model


def _flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_patterns_name_parameters_by_glob_and_a_typo_is_refused():
    params = {"backbone": {"block1": {"conv": {"kernel": np.zeros((3, 3))}}},
              "context": {"layer1": {"kernel": np.zeros(2), "bias": np.zeros(2)}}}
    mask = _flat(freeze.frozen_mask(params, ("backbone/*",)))
    assert mask == {"backbone/block1/conv/kernel": True, "context/layer1/kernel": False,
                    "context/layer1/bias": False}
    assert freeze.check_patterns(params, ("backbone/*", "context/*/bias")) == 9 + 2
    with pytest.raises(errors.ConfigError, match=r"'backbnoe/\*' names no parameter.*"
                                                 r"backbone/\.\.\., context/\.\.\."):
        freeze.check_patterns(params, ("backbnoe/*",))


class _TwoNorms(nn.Module):
    """BatchNorm both ways the models use it: `use_running_average` given at construction
    (the heads) and at the call (the ResNet's units), one inside a submodule."""

    @nn.compact
    def __call__(self, x, train):
        x = nn.BatchNorm(use_running_average=not train, name="head_norm")(nn.Dense(4)(x))
        unit = nn.Sequential([nn.Dense(4)], name="unit")
        return nn.BatchNorm(name="unit_norm")(unit(x), use_running_average=not train)


def test_a_frozen_batch_norm_runs_as_in_evaluation():
    """Every BatchNorm frozen: training mode is evaluation mode, and no statistic moves."""
    model = _TwoNorms()
    x = jax.random.normal(jax.random.key(0), (6, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    # Statistics away from their initial 0/1, so that using them is visible.
    variables["batch_stats"] = jax.tree.map(lambda v: v + 0.3, variables["batch_stats"])
    with freeze.frozen_batch_norm(("*_norm/*",)):
        trained, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(np.asarray(trained),
                                  np.asarray(model.apply(variables, x, train=False)))
    assert _flat(updates["batch_stats"]).keys() == _flat(variables["batch_stats"]).keys()
    for path, value in _flat(updates["batch_stats"]).items():
        np.testing.assert_array_equal(value, _flat(variables["batch_stats"])[path], path)
    with freeze.frozen_batch_norm(("unit_norm/*",)):  # only that one: the other learns
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    moved = {path for path, value in _flat(updates["batch_stats"]).items()
             if not np.array_equal(value, _flat(variables["batch_stats"])[path])}
    assert moved == {"head_norm/mean", "head_norm/var"}


def _run(workdir, architecture="deeplabv3", steps=2, **fields):
    config = tiny.get_config()
    config.model.architecture = architecture
    if architecture == "context_module":
        config.model.context_module.update(front_end="deeplabv3", atrous_rates=(2, 4, 6),
                                           aspp_channels=16)
    config.update(num_train_steps=steps, eval_every_steps=steps,
                  checkpoint_every_steps=steps, log_every_steps=steps)
    for key, value in fields.items():
        if key == "frozen":
            config.optim.frozen = value
        else:
            config[key] = value
    train.train_and_evaluate(config, str(workdir))
    resolved = config_lib.resolve_config(config)
    model = models.get_model(resolved.model,
                             num_classes=datasets.dataset_info(resolved.data)["num_classes"])
    manager = checkpoint.create_manager(str(workdir))
    abstract = step_lib.abstract_train_state(resolved, model,
                                             jax.sharding.SingleDeviceSharding(
                                                 jax.devices()[0]))
    state, step, _ = checkpoint.restore(manager, abstract)
    manager.close()
    assert step == steps
    return state


def test_a_train_step_leaves_frozen_parameters_and_statistics_bit_identical():
    """Two SGD steps of a tiny DeepLabv3 with its backbone frozen: the backbone and its BN
    statistics are bit-identical, the head moved, and momentum exists for the head only."""
    config = tiny.get_config()
    config.optim.frozen = ("backbone/*",)
    config = config_lib.resolve_config(config)
    model = models.get_model(config.model, num_classes=5)
    optimizer = step_lib.create_optimizer(config.optim, config.num_train_steps)
    state = step_lib.create_train_state(jax.random.key(0), model, optimizer, (33, 33))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (2, 33, 33, 3)), jnp.uint8),
             "label": jnp.asarray(rng.integers(0, 5, (2, 33, 33)), jnp.uint8),
             "size": jnp.full((2, 2), 33, jnp.int32)}
    train_step = jax.jit(functools.partial(
        step_lib.train_step, learning_rate_fn=lambda step: 0.1, weight_decay=1e-4,
        freeze_bn=False, ignore_label=255,
        augment_kwargs=step_lib.augment_config_kwargs(config.data),
        frozen=tuple(config.optim.frozen)))
    new = state
    for index in range(2):
        new, metrics = train_step(new, batch, jax.random.key(index))
    before, after = _flat(state.params), _flat(new.params)
    for path, value in before.items():
        if path.startswith("backbone/"):
            np.testing.assert_array_equal(after[path], value, path)
    assert all(not np.array_equal(after[path], before[path])
               for path in before if path.startswith(("aspp/", "logits/")))
    for path, value in _flat(state.batch_stats).items():
        if path.startswith("backbone/"):
            np.testing.assert_array_equal(_flat(new.batch_stats)[path], value, path)
        else:  # the head's BatchNorms still learn their statistics
            assert not np.array_equal(_flat(new.batch_stats)[path], value), path
    momentum = sum(leaf.size for leaf in jax.tree.leaves(new.opt_state)
                   if jnp.issubdtype(leaf.dtype, jnp.floating))
    assert momentum == sum(value.size for path, value in before.items()
                           if not path.startswith("backbone/"))
    assert np.isfinite(float(metrics["grad_norm"]))


@pytest.mark.slow  # three tiny trainings: about a minute on 2 cores
def test_a_staged_schedule_front_end_then_module_then_jointly(tmp_path):
    """Yu and Koltun's schedule: DeepLabv3 (the front end), then the context module on its
    frozen output, then both: each stage from the previous one's checkpoint by name."""
    front = _run(tmp_path / "front_end")
    module = _run(tmp_path / "module", "context_module", init_from=str(tmp_path / "front_end"),
                  init_from_fresh=("context/*",), frozen=FRONT_END)
    before, after = _flat(front.params), _flat(module.params)
    frozen = [path for path in after if freeze.matches(path, FRONT_END)]
    assert frozen and set(frozen) == set(before)  # the front end, all of it, by name
    for path in frozen:  # bit-identical after training, with their BN statistics
        np.testing.assert_array_equal(after[path], before[path], path)
    for path, value in _flat(front.batch_stats).items():
        np.testing.assert_array_equal(_flat(module.batch_stats)[path], value, path)
    fresh = [path for path in after if path.startswith("context/")]
    initial = _flat(models.get_model(config_lib.resolve_config(_context_config()).model, 5)
                    .init(jax.random.key(0), jnp.zeros((1, 33, 33, 3)), train=False)["params"])
    assert any(not np.array_equal(after[path], initial[path]) for path in fresh)  # it trained
    # SGD's momentum exists for the module only: the frozen leaves have no optimizer state.
    momentum = sum(leaf.size for leaf in jax.tree.leaves(module.opt_state)
                   if jnp.issubdtype(leaf.dtype, jnp.floating))  # not the schedule's count
    assert momentum == sum(after[path].size for path in fresh)
    # Jointly: every parameter from stage 2, all of them trained.
    joint = _run(tmp_path / "joint", "context_module", init_from=str(tmp_path / "module"))
    assert any(not np.array_equal(_flat(joint.params)[path], after[path]) for path in frozen)


def _context_config():
    config = tiny.get_config()
    config.model.architecture = "context_module"
    config.model.context_module.update(front_end="deeplabv3", atrous_rates=(2, 4, 6),
                                       aspp_channels=16)
    return config


@pytest.mark.slow  # a tiny training first
def test_a_stage_refuses_a_checkpoint_that_lacks_more_than_its_new_part(tmp_path):
    _run(tmp_path / "front_end", steps=1)
    with pytest.raises(errors.CheckpointError, match="context/.*init_from_fresh does not name"):
        _run(tmp_path / "module", "context_module", steps=1,
             init_from=str(tmp_path / "front_end"), init_from_fresh=("context/layer1/*",))
