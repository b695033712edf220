"""Deprecated: the peers' fingerprints now live one method per module (`jaxprov.methods.sac`,
`ipguard`, `mistakes`, `weights`, `cka`; label agreement in `labels`). This module re-exports
them for one release."""

from jaxprov.methods.cka import CKA
from jaxprov.methods.ipguard import IPGuard
from jaxprov.methods.mistakes import Mistakes
from jaxprov.methods.sac import SAC, cutmix
from jaxprov.methods.similarity import PAIRWISE_CHUNK_ELEMENTS
from jaxprov.methods.weights import WeightCosine

__all__ = ["CKA", "IPGuard", "Mistakes", "PAIRWISE_CHUNK_ELEMENTS", "SAC", "WeightCosine", "cutmix"]
