"""Mistake agreement (SAC-w's probe choice, Guan et al. 2022, with IPGuard's label signature).

Probes are the labelled seeds the REFERENCE model misclassifies; a model's signature is its one-hot
predicted labels there (`jaxprov.methods.labels`), so a . b = how often b makes a's mistakes (the
very wrong label). A copy fitted to the reference's outputs (distillation, extraction by labels or
probabilities) inherits its errors; an independent model, even one trained on the same data, mostly
gets those inputs right or wrong differently. Seeds must carry labels and must not include the data
the suspects were trained on (use a held-out split: "mnist:test").
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.methods.base import continuous_inputs, reference_meta, require_reference, unbatched
from jaxprov.methods.labels import LabelAgreement, label_rows, output_width, predicted_labels


@dataclasses.dataclass(frozen=True)
class Mistakes(LabelAgreement):
    """Agreement on the reference's mistakes: the labelled seeds the reference gets wrong, and
    each model's predicted label there (see the module docstring).

    On the reuse benchmark's CPU zoo (MNIST MLP / LeNet, seeds from the held-out "mnist:test"),
    extracted and distilled copies make 0.2-0.9 of their victim's mistakes; models trained
    independently on the victim's own training data mostly far fewer.

    Attributes:
      n_seeds: how many labelled seeds callers draw; the reference's mistakes among them are the
        probes (a model with 97 % accuracy makes ~30 on 1,000 seeds).
      max_probes: keep at most this many mistakes (the first ones in seed order).
      min_probes: fewer mistakes than this is an error: the agreement would be too coarse to read.
    """

    name = "mistakes"

    n_seeds: int = 1000
    max_probes: int = 500
    min_probes: int = 10

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """The seeds `reference` misclassifies (argmax != label), in seed order.

        Args:
          seeds: labelled Probes (`labels` set: MNIST, digits, a data split, an .npz with "y").
          key: unused: the probes are a function of the seeds and the reference.
          reference: the `jaxprov.Model` whose mistakes are the fingerprint.
          batched: runs the reference's forward pass over the seeds (`Method.make_probes`).
        """
        from jaxprov.probes import Probes

        require_reference(reference, self.name, "whose mistakes are the probes")
        if seeds.labels is None:
            raise JaxprovError(f"mistakes needs labelled seeds (source {seeds.meta.get('source')!r} has no labels); "
                               "use mnist, digits, a split such as mnist:test, or an .npz with a 'y' array")
        x = continuous_inputs(seeds, self.name)
        labels = np.asarray(seeds.labels)

        def enough(predicted) -> bool:  # the first max_probes mistakes are found: the rest cannot count
            predicted = np.asarray(predicted)
            return int(np.count_nonzero(predicted != labels[:predicted.shape[0]])) >= self.max_probes

        predicted = np.asarray(batched(predicted_labels, None, reference, x, until=enough))
        wrong = np.flatnonzero(predicted != labels[:predicted.shape[0]])[:self.max_probes]
        if wrong.size < self.min_probes:
            raise JaxprovError(f"mistakes: reference {reference.name} misclassifies only {wrong.size} of "
                               f"{x.shape[0]} labelled seeds (need {self.min_probes}); draw more seeds "
                               "(n_seeds) or use harder held-out data")
        meta = {**seeds.meta, "method": self.name, "config": self.config(), "n_mistakes": int(wrong.size),
                "reference": reference_meta(reference)}
        # The reference's rows on its mistakes are its predicted labels there, one-hot: handed to the
        # engine (Probes.reference_rows), they save it a second forward pass of the reference.
        width = output_width(reference, x)
        return Probes(inputs={"x": x[wrong]}, meta=meta, reference_rows=label_rows(predicted[wrong], width))
