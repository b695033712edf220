"""Attacks on a protection: how much unauthorised skill comes back, and at what authorised cost.

The attacker holds the protected model (the masked weights, a normal model: the mask itself is not
recoverable from it beyond "these weights are zero") and:
  finetune_unauthorised  fine-tunes every weight on a share (1 %, 5 %, 10 %) of the unauthorised
                         domain's labelled training split (the zeroed weights are free to grow back);
  finetune_authorised    fine-tunes on labelled authorised data (hoping general features return);
  prune                  magnitude-prunes a further share of the weights (hoping the protection
                         lives in small weights);
  recalibrate_unauthorised  re-estimates the BatchNorm running statistics on a share of the
                         unauthorised inputs, without their labels and without moving a weight
                         (`derive.recalibrate`, AdaBN): a mask learned with the source's stored
                         statistics can rest on their mismatch with the unauthorised domain.
The same fine-tuning of a freshly initialised model of the same arch (`fresh_reference`) measures
what the attacker's labelled share teaches without any of the source's knowledge: a protection that
holds the attack below it must make the model a worse starting point than random weights.
Every attack runs the one training loop (`jaxprov.training.derive`), with its settings recorded.
Fine-tuning gets a fixed number of optimiser steps whatever the share, so 1 % is not also "fewer
steps": epochs = ceil(steps * batch / n).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxprov import models
from jaxprov.model import Model
from jaxprov.training import derive
from jaxprov.training.loop import accuracy


def finetune_unauthorised(protected: Model, x, y, shares, key: jax.Array, evaluate, steps: int = 200,
                          lr: float = 1e-3, batch: int = 64) -> list[dict]:
    """For each share, fine-tune on that share of (x, y) (first of a key-fixed order); `evaluate(model)`
    -> {name: accuracy} after each."""
    order = np.asarray(jax.random.permutation(key, len(y)))
    rows = []
    for share in shares:
        n = max(1, round(share * len(y)))
        idx = order[:n]
        b = min(batch, n)
        epochs = max(1, math.ceil(steps / (n // b)))
        child = derive.finetune(protected, x[idx], y[idx], jax.random.fold_in(key, n), epochs, lr, batch=b,
                                name=f"{protected.name}-ft{round(100 * share)}")
        rows.append({"attack": "finetune_unauthorised", "share": share, "n": n, "epochs": epochs,
                     "steps": epochs * (n // b), **evaluate(child)})
    return rows


def recalibrate_unauthorised(protected: Model, x, shares, key: jax.Array, evaluate) -> list[dict]:
    """For each share, `derive.recalibrate` on that share of the unauthorised inputs `x` (the first of
    the same key-fixed order as finetune_unauthorised's; no labels read) -> rows with `evaluate`'s
    accuracies."""
    order = np.asarray(jax.random.permutation(key, len(x)))
    rows = []
    for share in shares:
        n = max(1, round(share * len(x)))
        child = derive.recalibrate(protected, x[order[:n]], name=f"{protected.name}-recal{round(100 * share)}")
        rows.append({"attack": "recalibrate_unauthorised", "share": share, "n": n, **evaluate(child)})
    return rows


def fresh_reference(protected: Model, x, y, shares, key: jax.Array, evaluate, steps: int = 200,
                    lr: float = 1e-3, batch: int = 64) -> list[dict]:
    """finetune_unauthorised's rows for a freshly initialised model of `protected`'s arch (init from
    `fold_in(key, 1)`, the same data order and steps): attack "finetune_fresh_init"."""
    fresh = models.init(protected.arch, jax.random.fold_in(key, 1), name=f"{protected.arch}-fresh")
    rows = finetune_unauthorised(fresh, x, y, shares, key, evaluate, steps, lr, batch)
    return [{**r, "attack": "finetune_fresh_init"} for r in rows]


def finetune_authorised(protected: Model, x, y, key: jax.Array, evaluate, steps: int = 200, lr: float = 1e-3,
                        batch: int = 64) -> dict:
    b = min(batch, len(y))
    epochs = max(1, math.ceil(steps / (len(y) // b)))
    child = derive.finetune(protected, x, y, key, epochs, lr, batch=b, name=f"{protected.name}-ft-auth")
    return {"attack": "finetune_authorised", "n": int(len(y)), "epochs": epochs, **evaluate(child)}


def prune(protected: Model, fraction: float, x, y, key: jax.Array, evaluate) -> dict:
    child = derive.prune(protected, fraction, x, y, key, 0, scope="layer", name=f"{protected.name}-pruned")
    return {"attack": "prune", "fraction": fraction, **evaluate(child)}


def evaluator(sets: dict):
    """model -> {name: accuracy on (x, y)} for each named set."""
    return lambda model: {name: accuracy(model, x, y) for name, (x, y) in sets.items()}
