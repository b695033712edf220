"""Label agreement, the signature IPGuard and `mistakes` share: a model's one-hot predicted label
at each probe, / sqrt(n), so the dot product of two signatures is the fraction of probes where
they predict the same label:

    signature = vec(onehot(argmax f(x_i))) / sqrt(n),     a . b = fraction of labels that agree

Labels index a label space, so only models with equal output sizes compare (comparable =
"output_size"); the engine zero-pads the others and the comparison layer masks them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.methods.base import Method
from jaxprov.model import ModelFns


def predicted_labels(static, fns: ModelFns, params, x: jax.Array, shared) -> jax.Array:
    """argmax of each input's output: [n] (a `batched` function for probe builders)."""
    out = fns.apply(params, x)
    return jnp.argmax(out.reshape(out.shape[0], -1), axis=1)


def label_rows(labels, width: int) -> jax.Array:
    """`LabelAgreement.rows` from labels already predicted: one-hot [n, width] float32 (0 and 1 are
    exact, so these equal the rows of a forward pass that predicts the same labels)."""
    return jax.nn.one_hot(jnp.asarray(labels), width, dtype=jnp.float32)


def output_width(model, x) -> int:
    """The size of one input's flattened output (the label space of `predicted_labels`), from
    shapes alone (no computation)."""
    item = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), np.asarray(x[:1]).dtype)
    out = jax.eval_shape(model.fns.apply, model.params, item)
    return int(np.prod(out.shape[1:]))


@dataclasses.dataclass(frozen=True)
class LabelAgreement(Method):
    """Base of the label-agreement methods: their probes differ, their signature is this one."""

    comparable = "output_size"

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """One-hot predicted label of each probe: [chunk, C]."""
        out = fns.apply(params, probes["x"])
        out = out.reshape(out.shape[0], -1)
        return label_rows(jnp.argmax(out, axis=1), out.shape[1])

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Flattened one-hots / sqrt(n): the dot product of two signatures is their label agreement."""
        return rows.reshape(-1) / np.sqrt(rows.shape[0])
