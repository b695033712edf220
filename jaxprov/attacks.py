"""L-inf projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018) and the valid input box it stays in: one implementation for every
attack in jaxprov (DDV's twins, adversarial extraction in `jaxprov.training`).

One step from the current point x_a around the start x:

    x_a <- clip(clip(x_a + step_size * sign(grad L(x_a)), x - eps, x + eps), lo, hi)

that is, a signed-gradient ascent step projected onto the eps-ball around x, then onto the box
[lo, hi] (scalars, or per-channel values shaped to broadcast over the last axis).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.model import InputSpec


def project(x_adv: jax.Array, x: jax.Array, eps: float, lo, hi) -> jax.Array:
    """`x_adv` projected onto the L-inf ball of radius `eps` around `x`, then onto the box [lo, hi]."""
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), lo, hi)


def linf_pgd(loss_of_x: Callable[[jax.Array], jax.Array], x: jax.Array, eps: float, steps: int,
             step_size: float, lo, hi, start: jax.Array | None = None) -> jax.Array:
    """`steps` L-inf PGD steps up `loss_of_x` (a scalar function of the whole batch), as one fori_loop.

    Args:
      loss_of_x: the objective to ascend; each example's gradient should depend on its own term only.
      x: the clean batch: the centre of every eps-ball.
      eps, step_size: ball radius and signed-gradient step, in the input space's units.
      steps: PGD iterations.
      lo, hi: the valid box (see `valid_box`), or the +-inf of an unbounded input.
      start: where to start (e.g. x plus uniform noise in the ball; projected first); default x itself.

    Returns:
      The perturbed batch (not detached: callers that train on it stop its gradient).
    """
    grad_x = jax.grad(loss_of_x)

    def step(_, x_adv):
        return project(x_adv + step_size * jnp.sign(grad_x(x_adv)), x, eps, lo, hi)

    init = x if start is None else project(start, x, eps, lo, hi)
    return jax.lax.fori_loop(0, steps, step, init)


def valid_box(spec: InputSpec, ndim: int) -> tuple[jax.Array, jax.Array]:
    """The valid inputs of `spec` (`InputSpec.bounds`, in the normalised space) as (lo, hi) that
    broadcast over a batch of rank `ndim`: scalars, or per-channel [1, ..., 1, C]; +-inf if unbounded."""
    bounds = spec.bounds()
    if bounds is None:
        return jnp.float32(-jnp.inf), jnp.float32(jnp.inf)
    shape = (1,) * (ndim - 1) + (-1,)
    return tuple(jnp.asarray(b, jnp.float32).reshape(shape) if np.ndim(b) else jnp.float32(b) for b in bounds)
