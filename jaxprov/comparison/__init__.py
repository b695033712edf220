"""The thin comparison layer: zoos, similarity matrices, neighbours, calibrated verdicts.

One concept per module, re-exported here (the public `jaxprov.comparison`):
  zoo          Zoo, Similarity, ReferenceRows, check_compatible: signatures and matrices of many models
  calibration  empirical_p and the per-method tests against a null of independent models
  results      MethodResult, Answer, Comparison (and their JSON): what a comparison returns
  pair         compare(a, b): one pair, every named answer
"""

from jaxprov.comparison.calibration import DERIVED_ALPHA, INDEPENDENT_P, empirical_p
from jaxprov.comparison.pair import compare
from jaxprov.comparison.results import DEFAULT_VERDICT, METHOD_TESTS, Answer, Comparison, MethodResult, dumps
from jaxprov.comparison.zoo import ReferenceRows, Similarity, Zoo, check_compatible

__all__ = ["DEFAULT_VERDICT", "DERIVED_ALPHA", "INDEPENDENT_P", "METHOD_TESTS", "Answer", "Comparison",
           "MethodResult", "ReferenceRows", "Similarity", "Zoo", "check_compatible", "compare", "dumps",
           "empirical_p"]
