"""The training loop that every derivation runs: Adam over `params["params"]`, jitted once per arch.

Deterministic given its PRNG key (same key -> bitwise identical params on one backend). Training
updates `params["params"]` and carries every other collection: BatchNorm runs in train mode
(batch statistics; running statistics updated as torch does, see jaxprov.models.layers.BatchNorm)
while fitting, and in eval mode everywhere else. Two losses: cross-entropy on integer labels, and
Hinton et al.'s soft-target loss T^2 * CE(targets, softmax(z / T)) ("Distilling the Knowledge in a
Neural Network", 2015). With an attack, every batch is first moved by L-inf PGD up the model's own
loss (`jaxprov.attacks`; adversarial training, Madry et al. 2018). A multi-exit model
(`jaxprov.models.multi_exit`) trains every exit: the loss is sum_k w_k loss(exit k), with the final
exit's w = 1 and the internal classifiers' w from `exit_weights` (default: SDN's end-of-schedule
weights, see `sdn_weights`), so fine-tuning, pruning or distilling one keeps its early exits working.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprov.attacks import linf_pgd, valid_box
from jaxprov.errors import JaxprovError
from jaxprov.model import Model, as_inputs, n_items
from jaxprov.models.multi_exit import EXITS, num_exits

EVAL_BATCH = 1000


def fit(model: Model, x, targets, key: jax.Array, epochs: int, lr: float, batch: int, loss: str,
        mask=None, temperature: float = 1.0, train_stats: bool = True, attack: tuple | None = None,
        exit_weights: Callable[[int], Any] | None = None):
    """Adam on `loss` for `epochs` shuffled passes over params["params"]; returns the whole tree.

    Args:
      model: the model to start from.
      x: inputs [n, ...] in the model's input space (a text model: a dict of [n, L] token arrays).
      targets: integer labels [n] (loss "labels") or probabilities [n, classes] (loss "soft").
      key: PRNG key of the shuffles (epoch e shuffles with fold_in(key, e)).
      epochs: passes over the data; each drops the last partial batch, so every step has one shape.
      lr, batch: Adam's learning rate and the examples per step.
      loss: "labels" (cross-entropy) or "soft" (T^2-scaled cross-entropy with soft targets).
      mask: a tree like the model's params; gradients are multiplied by it (1 = trainable).
      temperature: T of the "soft" loss.
      train_stats: BatchNorm in train mode, updating the other collections (batch_stats); else
        BatchNorm runs in eval mode and they stay as they are.
      attack: (eps, steps, step_size): train on L-inf PGD perturbations of each batch, within eps
        and the input spec's valid box, up the model's own loss against the batch's targets.
      exit_weights: multi-exit models only: epoch -> the K per-exit loss weights of that epoch
        (default: `sdn_weights(K, 1, 1)` every epoch). A traced input: a schedule compiles once.
    """
    x = as_inputs(x, jnp)
    n = n_items(x)
    if n != targets.shape[0]:
        raise JaxprovError(f"got {n} inputs but {targets.shape[0]} targets")
    batch = min(batch, n)
    steps = n // batch
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    weights = params["params"]
    state = {k: v for k, v in params.items() if k != "params"}
    mask = tree_mask(weights, lambda path, leaf: True) if mask is None else mask["params"]
    if attack is not None and isinstance(x, dict):
        raise JaxprovError("adversarial training perturbs continuous inputs; token ids are not one")
    lo, hi = valid_box(model.input_spec, 0 if isinstance(x, dict) else x.ndim)
    mutable = tuple(sorted(state)) if train_stats else ()
    step, optimizer = _step_fn(model.module, float(lr), loss, float(temperature), mutable, attack)
    opt_state = optimizer.init(weights)
    k = num_exits(model.module)
    if k and exit_weights is None:
        exit_weights = lambda epoch: sdn_weights(k, 1, 1)  # noqa: E731
    for epoch in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), n)[:steps * batch].reshape(steps, batch)
        xs, ts = jax.tree_util.tree_map(lambda a: a[order], x), targets[order]
        w = jnp.asarray(exit_weights(epoch) if k else np.zeros(0), jnp.float32)
        if w.shape != (k,):
            raise JaxprovError(f"exit_weights gave {w.shape[0]} weights for a model with {k} exits")
        for i in range(steps):
            xb = jax.tree_util.tree_map(lambda a: a[i], xs)
            weights, state, opt_state = step(weights, state, opt_state, mask, xb, ts[i], lo, hi, w)
    return {**params, "params": weights, **state}


def sdn_weights(k: int, epoch: int, epochs: int) -> np.ndarray:
    """Shallow-Deep Networks' loss weights for K exits at `epoch` of `epochs`: internal classifier i
    gets tau_i = min(C_i, 0.01 + epoch * C_i / epochs), the final exit 1. SDN's C for six ICs is
    [.15, .3, .45, .6, .75, .9]; for K - 1 ICs we space it the same way, C_i = 0.9 (i + 1) / (K - 1)."""
    c = 0.9 * np.arange(1, k, dtype=np.float64) / (k - 1)
    return np.append(np.minimum(c, 0.01 + epoch * c / max(epochs, 1)), 1.0).astype(np.float32)


def predict(model: Model, x) -> jax.Array:
    """The model's outputs on `x`, evaluated in fixed-size batches."""
    apply = _jitted_apply(model.apply)
    x = as_inputs(x, jnp)
    return jnp.concatenate([apply(model.params, jax.tree_util.tree_map(lambda a: a[i:i + EVAL_BATCH], x))
                            for i in range(0, n_items(x), EVAL_BATCH)])


def accuracy(model: Model, x, y) -> float:
    """Share of `x` whose argmax output equals the label `y`."""
    return float(np.mean(np.asarray(jnp.argmax(predict(model, x), axis=-1)) == np.asarray(y)))


def key_path(path) -> tuple[str, ...]:
    """A jax.tree_util key path as a tuple of names: ("params", "head", "kernel")."""
    return tuple(str(getattr(k, "key", k)) for k in path)


def tree_mask(params, keep: Callable[[tuple[str, ...], Any], Any]):
    """A float tree like `params`: keep(path, leaf) as 0/1, broadcast to the leaf's shape."""
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.broadcast_to(jnp.asarray(keep(key_path(p), leaf), jnp.float32), jnp.shape(leaf)), params)


# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _step_fn(module, lr: float, loss: str, temperature: float, mutable: tuple[str, ...], attack: tuple | None):
    """One jitted Adam step per (arch, settings), so models of one arch share the compile.

    A Python loop over this step runs ~3x faster on CPU than a lax.scan over the epoch (measured
    on LeNet), whose loop body XLA:CPU compiles less well.
    """
    optimizer = optax.adam(lr)

    multi_exit = num_exits(module) > 0

    def one_loss(logits, tb):
        if loss == "labels":
            return optax.softmax_cross_entropy_with_integer_labels(logits, tb).mean()
        # Hinton et al.: the T^2 factor keeps soft-target gradients on the scale of hard-label ones.
        return temperature ** 2 * optax.softmax_cross_entropy(logits / temperature, tb).mean()

    def loss_fn(weights, state, xb, tb, w):
        # Collections in `mutable` (batch_stats) switch BatchNorm to train mode; see layers.BatchNorm.
        (logits, feats), updates = module.apply({"params": weights, **state}, xb, mutable=list(mutable))
        if multi_exit:
            per_exit = jax.vmap(one_loss, in_axes=(1, None))(feats[EXITS], tb)
            value = jnp.sum(w * per_exit)
        else:
            value = one_loss(logits, tb)
        return value, {**state, **updates}

    @jax.jit
    def step(weights, state, opt_state, mask, xb, tb, lo, hi, w):
        if attack is not None:
            eps, steps, step_size = attack
            xb = jax.lax.stop_gradient(
                linf_pgd(lambda xa: loss_fn(weights, state, xa, tb, w)[0], xb, eps, steps, step_size, lo, hi))
        grads, state = jax.grad(loss_fn, has_aux=True)(weights, state, xb, tb, w)
        grads = jax.tree_util.tree_map(jnp.multiply, grads, mask)
        # optax 0.2.8's Adam bias correction mixes its int32 step count with floats: it needs
        # standard promotion even where callers (the tests) make jaxprov's own code strict.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), state, opt_state

    return step, optimizer


@functools.lru_cache(maxsize=64)
def _jitted_apply(apply: Callable) -> Callable:
    return jax.jit(apply)
