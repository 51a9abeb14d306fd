"""The train state, the optimizer and the pure, jit-compiled training step.

One step: augment the batch on device (random scale, crop, flip), apply the model with batch
statistics, masked softmax cross-entropy (plus the auxiliary head's, weighted, for models
trained with one) plus L2 weight decay on conv kernels, SGD with momentum (or Adam) on the poly
schedule. Under `jax.jit` with a batch-sharded input, BatchNorm's mean
and variance cover the global batch (see `deeplab_jax/parallel.py`). A step whose loss, gradients or new
BN statistics are not all finite is skipped inside the step: it changes nothing but the step
counter, and reports itself in `metrics["skipped_steps"]`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from deeplab_jax.errors import ConfigError
from deeplab_jax.training import freeze, losses
from deeplab_jax.data import augment
from deeplab_jax.models.segmenter import AUX_COLLECTION, AUX_LOGITS, MEAN_PIXEL

PyTree = Any
DROPOUT_STREAM = 1  # the dropout key is the step's key folded with this (augmentation: the key)


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state) plus BatchNorm's running statistics."""

    batch_stats: PyTree


def create_learning_rate_schedule(optim_config: ml_collections.ConfigDict,
                                  num_train_steps: int) -> optax.Schedule:
    """The poly schedule, lr = base * (1 - step / total) ** power (DeepLabv3 Sec. 4.1)."""
    return optax.polynomial_schedule(
        init_value=optim_config.base_learning_rate, end_value=0.0,
        power=optim_config.poly_power, transition_steps=num_train_steps)


OPTIMIZERS = ("sgd", "adam")


def check_optimizer(name: str) -> str:
    """Returns `name` if it names an optimizer, else raises a ConfigError naming the choices."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"config.optim.optimizer={name!r} is not one of {OPTIMIZERS}; set "
                          "one of them, e.g. --config.optim.optimizer=sgd (the paper's).")
    return name


def create_optimizer(optim_config: ml_collections.ConfigDict,
                     num_train_steps: int) -> optax.GradientTransformation:
    """SGD with momentum (the paper's) or Adam, on the poly schedule.

    Weight decay is a loss term either way (see `losses.l2_weight_decay`), as TF-slim's L2
    regularizer; under Adam its gradient is rescaled like any other, so it is an L2 penalty,
    not AdamW's decoupled decay.
    """
    learning_rate = create_learning_rate_schedule(optim_config, num_train_steps)
    if check_optimizer(optim_config.optimizer) == "sgd":
        optimizer = optax.sgd(learning_rate, momentum=optim_config.momentum)
    else:
        optimizer = optax.adam(learning_rate, b1=optim_config.momentum)
    # Frozen parameters (a stage of a staged schedule) get no update and no state.
    return freeze.optimizer(optimizer, tuple(optim_config.get("frozen") or ()))


def create_train_state(rng: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, int]) -> TrainState:
    """Initialises parameters and BN statistics from `rng` (a pure function: jit it)."""
    variables = model.init(rng, jnp.zeros((1, *image_shape, 3), jnp.float32), train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              # VGG-16 without BatchNorm (DeepLab v1, Dilation) has none
                              batch_stats=variables.get("batch_stats", {}), tx=optimizer)
    # A strong int32 step, as a restored checkpoint's: a fresh and a resumed run then trace
    # the same training step (one compilation, one compilation-cache entry).
    return state.replace(step=jnp.zeros((), jnp.int32))


def abstract_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                         sharding: jax.sharding.Sharding) -> TrainState:
    """`config`'s initial train state as `jax.ShapeDtypeStruct`s on `sharding`: a restore
    target, computed without running anything (`jax.eval_shape`)."""
    optimizer = create_optimizer(config.optim, config.num_train_steps)
    shapes = jax.eval_shape(functools.partial(
        create_train_state, model=model, optimizer=optimizer,
        image_shape=tuple(config.data.crop_size)), jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        shapes)


def model_variables(state: TrainState) -> PyTree:
    """What applying the model needs of a train state: {'params', 'batch_stats'}."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def augment_config_kwargs(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The static arguments of `augment.augment_batch` from `config.data`."""
    return dict(crop_size=tuple(data_config.crop_size), min_scale=data_config.min_scale,
                max_scale=data_config.max_scale, scale_step=data_config.scale_step,
                flip=data_config.flip, pad_pixel=MEAN_PIXEL,
                ignore_label=data_config.ignore_label)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               learning_rate_fn: optax.Schedule, weight_decay: float, freeze_bn: bool,
               ignore_label: int, augment_kwargs: dict[str, Any],
               aux_loss_weight: float = 0.0,
               class_weights: Optional[tuple[float, ...]] = None,
               frozen: tuple[str, ...] = (),
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on a global batch.

    Args:
      state: the replicated train state.
      batch: 'image' uint8 [B, Hc, Wc, 3], 'label' uint8 [B, Hc, Wc], 'size' int32 [B, 2],
        examples padded onto a fixed canvas (see `input_pipeline.py`).
      rng: this step's key, for the augmentation (and, folded, for dropout); the loop
        derives it from the seed and the step, so a resumed run draws the same ones.
      learning_rate_fn: the optimizer's schedule, for logging.
      weight_decay: L2 coefficient on conv kernels.
      freeze_bn: use and keep the running BN statistics (the paper's OS8 fine-tuning stage).
      ignore_label: label value excluded from the loss.
      augment_kwargs: static arguments of `augment.augment_batch`.
      aux_loss_weight: weight of the auxiliary head's cross-entropy (0: the model is applied
        without it; `models/segmenter.py`).
      class_weights: None, or one loss weight per class (`losses.weighted_cross_entropy_sum`).
      frozen: parameter name patterns held fixed, with their BN statistics (`freeze.py`).

    Returns:
      (new state, metrics): sums and counts (loss_sum, aux_loss_sum, valid_pixels,
      correct_pixels, skipped_steps) that add up across steps, plus the step's weight-decay term, learning
      rate and gradient norm. When the loss, a gradient or a new BN statistic is not finite
      the update is skipped (`skipped_steps` = 1): the new state equals `state` but for
      `step`, and the sums are 0.
    """
    images, labels = augment.augment_batch(rng, batch["image"], batch["label"], batch["size"],
                                           **augment_kwargs)

    # Frozen BN: running statistics normalise and nothing updates them (train=False, which
    # also turns dropout off). The auxiliary head runs only where its collection is mutable.
    mutable = ([] if freeze_bn else ["batch_stats"]) + (
        [AUX_COLLECTION] if aux_loss_weight else [])
    rngs = {"dropout": jax.random.fold_in(rng, DROPOUT_STREAM)}

    def loss_fn(params):
        params = freeze.stop_frozen_gradients(params, frozen)
        variables = {"params": params, "batch_stats": state.batch_stats}
        with freeze.frozen_batch_norm(frozen):
            if mutable:
                logits, updates = state.apply_fn(variables, images, train=not freeze_bn,
                                                 mutable=mutable, rngs=rngs)
            else:
                logits, updates = state.apply_fn(variables, images, train=False,
                                                 rngs=rngs), {}
        new_batch_stats = updates.get("batch_stats", state.batch_stats)
        loss_sum, valid_pixels = cross_entropy(logits)
        aux_sum = jnp.zeros((), jnp.float32)
        if aux_loss_weight:
            (aux_logits,) = updates[AUX_COLLECTION][AUX_LOGITS]
            aux_sum, _ = cross_entropy(aux_logits)
        decay = losses.l2_weight_decay(freeze.without_frozen(params, frozen), weight_decay)
        # Mean over the valid pixels of the global batch (slim's SUM_BY_NONZERO_WEIGHTS).
        total = loss_sum + aux_loss_weight * aux_sum if aux_loss_weight else loss_sum
        loss = total / jnp.maximum(valid_pixels, 1.0) + decay
        return loss, (logits, loss_sum, aux_sum, valid_pixels, decay, new_batch_stats)

    def cross_entropy(logits):
        if class_weights is None:
            return losses.softmax_cross_entropy_sum(logits, labels, ignore_label=ignore_label)
        return losses.weighted_cross_entropy_sum(logits, labels, jnp.asarray(class_weights),
                                                 ignore_label=ignore_label)

    grads, (logits, loss_sum, aux_sum, valid_pixels, decay, new_batch_stats) = jax.grad(
        loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=new_batch_stats)

    # A non-finite loss, gradient or BN statistic skips the update: parameters, optimizer
    # state (momentum, schedule count) and BN statistics stay exactly as they were; only the
    # step (the data position and the augmentation RNG) advances. The loop counts skips.
    finite = (jnp.isfinite(loss_sum) & jnp.isfinite(aux_sum) & jnp.isfinite(decay)
              & all_finite(grads) & all_finite(new_batch_stats))
    new_state = new_state.replace(
        params=select_tree(finite, new_state.params, state.params),
        opt_state=select_tree(finite, new_state.opt_state, state.opt_state),
        batch_stats=select_tree(finite, new_state.batch_stats, state.batch_stats))

    valid = labels != ignore_label
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & valid)
    zero_if_skipped = lambda x: jnp.where(finite, x, jnp.zeros_like(x))
    metrics = {
        # Sums over the steps of a logging interval: a skipped step adds nothing.
        "loss_sum": zero_if_skipped(loss_sum),
        "aux_loss_sum": zero_if_skipped(aux_sum),
        "valid_pixels": zero_if_skipped(valid_pixels),
        "correct_pixels": zero_if_skipped(correct.astype(jnp.float32)),
        "skipped_steps": 1.0 - finite.astype(jnp.float32),
        "weight_decay_loss": decay,
        "grad_norm": optax.tree.norm(grads),  # L2 over every leaf (global_norm is deprecated)
        "learning_rate": learning_rate_fn(state.step),
    }
    return new_state, metrics


def all_finite(tree: PyTree) -> jax.Array:
    """bool scalar: every floating-point value of `tree` is finite (True for no leaves).

    One sum over every value times 0, which is 0 for a finite value and NaN for a NaN or an
    infinity (IEEE; XLA keeps x * 0 for floats): one fused reduction per leaf, cheap to
    compile, where an isfinite-and-all per leaf doubled the training step's compile time.
    """
    leaves = [leaf for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.isfinite(sum(jnp.sum(leaf * 0.0, dtype=jnp.float32) for leaf in leaves))


def select_tree(condition: jax.Array, if_true: PyTree, if_false: PyTree) -> PyTree:
    """`if_true` if `condition` (a bool scalar) holds, else `if_false`: two whole trees.

    A `lax.cond` rather than a `jnp.where` per leaf: the same result, and it keeps XLA's
    update fusions intact (the per-leaf selects cost seconds of compilation).
    """
    return jax.lax.cond(condition, lambda: if_true, lambda: if_false)


def jit_train_step(config: ml_collections.ConfigDict, state_sharding: Any,
                   batch_sharding: Any, *, donate_state: bool = True,
                   class_weights: Optional[Sequence[float]] = None) -> Callable:
    """Compiles `train_step` for `config` once, donating the old state's buffers.

    Donation lets XLA write the new parameters, optimizer and BN state over the old ones,
    so one copy of the state lives on the device instead of two; the caller must not touch
    the state it passed in. `donate_state=False` exists to measure that lever
    (experiments/gpu_speed: --no_donate). `class_weights`: the loss's per-class weights
    (`training/class_weights.py` resolves `config.optim.class_weighting` into them).
    """
    class_weights = tuple(float(w) for w in class_weights) if class_weights else None
    step = functools.partial(
        train_step,
        learning_rate_fn=create_learning_rate_schedule(config.optim, config.num_train_steps),
        weight_decay=config.optim.weight_decay, freeze_bn=config.optim.freeze_bn,
        ignore_label=config.data.ignore_label,
        augment_kwargs=augment_config_kwargs(config.data),
        aux_loss_weight=float(config.model.get("aux_loss_weight") or 0.0),
        class_weights=class_weights, frozen=tuple(config.optim.get("frozen") or ()))
    return jax.jit(step, in_shardings=(state_sharding, batch_sharding, None),
                   out_shardings=(state_sharding, None),
                   donate_argnums=0 if donate_state else ())
