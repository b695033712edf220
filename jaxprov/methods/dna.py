"""Model DNA (Mu et al., "Model DNA: ..." ECAI 2024) as a signature method: a trained detector's
embedding of a model's DNA on shared probes.

With a detector (`jaxprov.dna`: encoder g, output view, embedding h), a model M's signature on
probes x_1..x_n is its stacked unit embeddings

    e_i = h(g(x_i) + view(M(x_i))),        signature = [e_1, ..., e_n] / sqrt(n),

so the cosine of two signatures is the mean over probes of cos(e_i^A, e_i^B): the similarity that
the detector's stage-2 head turns into P(derived) (`DNA.probability`). g(x) depends on the probes
only, so it is computed once when the probes are built (and recorded in them with the detector's
digest); `rows` runs the model and h. A detector answers only for the input space it was trained on:
building probes for a reference from another input space is refused with one line.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from jaxprov.dna import detector as detector_lib
from jaxprov.methods.base import Method, unbatched
from jaxprov.model import ModelFns, as_inputs

DEFAULT_DETECTOR = "mnist"  # shipped in jaxprov/data/dna/mnist


@dataclasses.dataclass(frozen=True)
class DNA(Method):
    """A trained DNA detector's signature.

    Attributes:
      n_seeds: probes drawn by callers (the signature is n_seeds x the detector's embedding width).
      detector: a detector folder, or the name of one shipped with jaxprov ("mnist": MNIST-shaped
        28x28x1 images, trained on the reuse benchmark's cpu protocol from lineages of its own).
    """

    name = "dna"

    n_seeds: int = 300
    detector: str = DEFAULT_DETECTOR

    def load(self) -> detector_lib.Detector:
        """The detector (read and checked once per process)."""
        return detector_lib.cached(str(self.detector))

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """The seeds and g(seeds), after checking the reference's input space against the detector's."""
        from jaxprov.probes import Probes

        det = self.load()
        if reference is not None:
            det.check_input(reference.input_spec, f"model {reference.name!r}")
        x = as_inputs(seeds.inputs)  # on the host; text: g encodes the token ids themselves
        meta = {**seeds.meta, "method": self.name, "config": self.config(),
                "detector": {"name": det.name, "digest": det.digest}}
        return Probes(inputs={"x": x, "g": np.asarray(det.encode(x))}, meta=meta)

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """Each probe's unit embedding h(g(x) + view(M(x))): [chunk, E]."""
        det = self.load()
        return det.embed(det.dna(probes["g"], fns.apply(params, probes["x"])))

    def probability(self, similarity):
        """P(derived) of a pair from its DNA similarity, by the detector's stage-2 head."""
        return self.load().probability(similarity)
