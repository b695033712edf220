"""What a learned MAP mask is compared with.

  random     a uniformly random mask keeping, in every masked kernel, as many weights as the learned
             mask keeps there (same per-layer sparsity, chosen by a PRNG key);
  magnitude  magnitude pruning at the same per-layer sparsity: the largest |w| of each kernel kept;
  ntl        an NTL-style protected model trained from scratch (Wang et al., "Non-Transferable
             Learning", ICLR 2022), simplified: cross-entropy on labelled authorised data plus alpha
             times MAP's unauthorised loss (losses.unauthorised) on unauthorised data (NTL's MMD-weighted KL divergence term
             replaced by the same to-uniform term MAP's mask uses), so only where both data sets
             are given (source-available).
The unprotected source itself is the "no protection" row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprov import models
from jaxprov.model import Model
from jaxprov.protect import losses, masks as masks_lib
from jaxprov.training.derive import _keep_largest


def random_masks(learned: dict, key: jax.Array) -> dict:
    """Per kernel, a random mask keeping as many entries as `learned` keeps there."""
    out = {}
    for i, (k, m) in enumerate(sorted(learned.items())):
        m = np.asarray(m, bool)
        keep = np.zeros(m.size, bool)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
        keep[order[:int(m.sum())]] = True
        out[k] = keep.reshape(m.shape)
    return out


def magnitude_masks(learned: dict, params, granularity: str) -> dict:
    """Per kernel, keep the largest |w| (per weight) or the channels of largest L1 norm (per channel),
    as many as `learned` keeps there."""
    kernels = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(leaf)
               for p, leaf in jax.tree_util.tree_flatten_with_path(params["params"])[0]}
    out = {}
    for k, m in learned.items():
        m = np.asarray(m, bool)
        w = kernels[k]
        values = np.abs(w).reshape(-1, w.shape[-1]).sum(axis=0) if granularity == "channel" else np.abs(w).ravel()
        out[k] = _keep_largest(values, 1.0 - m.sum() / m.size).reshape(m.shape)
    return out


def ntl(arch: str, xa, ya, xu, key: jax.Array, epochs: int, alpha: float = 1.0, lr: float = 1e-3,
        batch: int = 128) -> Model:
    """An NTL-style model of `arch` trained from scratch (see the module docstring)."""
    init_key, key = jax.random.split(key)
    model = models.init(arch, init_key)
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    weights, state = params["params"], {k: v for k, v in params.items() if k != "params"}
    xa, xu, ya = jnp.asarray(xa), jnp.asarray(xu), jnp.asarray(ya, jnp.int32)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(weights)
    module, mutable = model.module, sorted(state)

    def loss_fn(weights, state, xb, yb, ub):
        both = jnp.concatenate([xb, ub])  # one batch: BatchNorm sees both domains, as the model will
        (out, _), updates = module.apply({"params": weights, **state}, both, mutable=mutable)
        za, zu = out[:xb.shape[0]], out[xb.shape[0]:]
        loss = optax.softmax_cross_entropy_with_integer_labels(za, yb).mean() + alpha * losses.unauthorised(zu)
        return loss, {**state, **updates}

    @jax.jit
    def step(weights, state, opt_state, xb, yb, ub):
        grads, state = jax.grad(loss_fn, has_aux=True)(weights, state, xb, yb, ub)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), state, opt_state

    steps = xa.shape[0] // min(batch, xa.shape[0])
    for e in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key, e), xa.shape[0])
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            iu = jax.random.randint(jax.random.fold_in(key, e * steps + i + 1_000_000), (idx.shape[0],), 0, xu.shape[0])
            weights, state, opt_state = step(weights, state, opt_state, xa[idx], ya[idx], xu[iu])
    return model.replace(params={**params, "params": weights, **state}, name=f"ntl-{arch}",
                         meta={"lineage": {"parent": None, "derivation": "ntl", "epochs": epochs, "alpha": alpha}})


def apply_baseline(model: Model, masks: dict, name: str) -> Model:
    """`model` with `masks` applied to its kernels (numpy, a normal model)."""
    params = jax.tree_util.tree_map(np.asarray, masks_lib.apply(model.params, masks))
    return model.replace(params=params, name=name)
