"""ST-D: one number for how well a protection balances authorised retention against unauthorised loss.

MAP calls its metric ST-D (a balance of source and target degradation) without publishing the
formula. Ours, with c the chance accuracy (1 / classes), "before" the unprotected source model and
"after" the protected one:

  retained = clip((auth_after - c) / (auth_before - c), 0, 1)     authorised skill above chance kept
  removed  = clip((unauth_before - unauth_after) / (unauth_before - c), 0, 1)
                                                                unauthorised skill above chance removed
  ST-D     = 2 * retained * removed / (retained + removed)        (0 when either is 0)

Why: both parts are measured above chance, so a model that outputs noise everywhere "removes" all
unauthorised skill but retains nothing, and scores 0; the harmonic mean is high only when both are
(a protection that keeps everything and removes nothing, the unprotected model, also scores 0); and
dividing by the skill there was makes domain pairs comparable whatever the source's accuracy.
When the source had no unauthorised skill above chance to remove, `removed` is 1 if the protected
model has none either. ST-D is always reported beside the four raw accuracies it is made from.
"""

from __future__ import annotations

import jax

from jaxprov.training.loop import accuracy


def st_d(auth_before: float, auth_after: float, unauth_before: float, unauth_after: float,
         chance: float) -> dict:
    """{"retained", "removed", "st_d"}, each in [0, 1] (see the module docstring)."""
    retained = _clip((auth_after - chance) / (auth_before - chance)) if auth_before > chance else 0.0
    if unauth_before > chance:
        removed = _clip((unauth_before - unauth_after) / (unauth_before - chance))
    else:
        removed = 1.0 if unauth_after <= chance else 0.0
    score = 0.0 if retained + removed == 0 else 2 * retained * removed / (retained + removed)
    return {"retained": retained, "removed": removed, "st_d": score}


def _clip(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def evaluate(source, protected, authorised: tuple, unauthorised: tuple, classes: int | None = None) -> dict:
    """Raw accuracies of `source` (before) and `protected` (after) on authorised and unauthorised
    (x, y), and ST-D with chance 1 / classes (default: the source's output width)."""
    if classes is None:
        classes = int(jax.eval_shape(source.apply, source.params, authorised[0][:1]).shape[-1])
    acc = {"authorised_before": accuracy(source, *authorised), "authorised_after": accuracy(protected, *authorised),
           "unauthorised_before": accuracy(source, *unauthorised),
           "unauthorised_after": accuracy(protected, *unauthorised)}
    chance = 1.0 / classes
    return {**acc, "chance": chance, **st_d(acc["authorised_before"], acc["authorised_after"],
                                            acc["unauthorised_before"], acc["unauthorised_after"], chance)}
