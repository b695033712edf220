"""The default verdict: one calibrated probability of derivation from every method's evidence.

No single published method is right on every kind of reuse (ModelDiff misses cross-architecture
theft, IPGuard misses extraction, weight-space cosine cannot compare across architectures), so
jaxprov combines them. Each method's raw similarity s is first turned into *evidence* against a
null of models known to be independent of the reference — the same null the empirical p-values of
`jaxprov.compare` use:

    z = (s - median(null)) / max(1.4826 * MAD(null), floor)     evidence = sign(z) log(1 + |z|)

Raw similarities are not comparable across methods, architectures or domains (two independent MLPs
score 0.69 under gradient fields; two independent LeNets far less), but "how far above the null"
is. The log keeps one method's enormous z (weight cosine of a fine-tuned copy) from drowning the
others. `floor` is the method's typical null spread, measured on the fitting zoo (`spread_floors`,
stored in the verdict; never below SPREAD_FLOOR): a null of a handful of models can look far
tighter than it is, and dividing by that chance spread turned small differences into large
evidence (on the cpu benchmark, floors lifted the held-out AUC from 0.90 to 0.91, and the
extraction rows most). A method that cannot compare a pair (NaN) gives evidence 0: exactly as informative as a
typical independent model.

A method that is itself trained to give P(derived) (`dna`: a detector fitted on lineages of its
own, `Method.probability`) is *calibrated*: its evidence is the logit of its own probability,
clipped to +-LOGIT_CLIP, not a z against the null (`method_evidence` chooses between the two, for
one pair, a zoo's matrix and the benchmark alike). On the cpu benchmark DNA's null-based evidence
ranked held-out pairs worse than its raw similarity (AUC 0.86 against 0.91, as the verdict's only
feature), and the val fit gave it weight 0; as the logit of its P(derived) it gets the largest
weight and lifts the held-out verdict (docs/results.md, "Model DNA").

The combination is a logistic model, P(derived) = sigmoid(w . evidence + b), fitted by
L2-regularised, class-balanced maximum likelihood on the validation split of the reuse benchmark
(`jaxprov bench reuse`) and scored on a held-out split built from other base models. The fitted
model ships with the package (`jaxprov/data/verdict.json`), recording the methods, their settings,
the preset and the figures it was fitted on; `load_default()` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from jaxprov.atomic import atomic_write
from jaxprov.errors import JaxprovError
from jaxprov.methods import canonical_config

SPREAD_FLOOR = 0.01  # similarities are cosines in [-1, 1]: a null spread below this is noise
MIN_NULL = 2  # a spread needs two null scores
DEFAULT_FILE = "verdict.json"
FALLBACK_SEEDS = "mnist"  # a verdict file that does not record its seeds
L2 = 1e-2
LOGIT_CLIP = 10.0  # a calibrated method's evidence: its P(derived)'s logit, at most this far from 0


def evidence(score: float, null: Sequence[float], floor: float = SPREAD_FLOOR) -> float:
    """Signed log of how many null spreads `score` lies above the null's median (the spread is at
    least `floor`); 0 when the method could not compare the pair (NaN) or the null has fewer than
    MIN_NULL comparable scores."""
    null = _comparable(null)
    if math.isnan(score) or null.size < MIN_NULL:
        return 0.0
    centre = float(np.median(null))
    return float(_log_z(score, centre, float(np.median(np.abs(null - centre))), floor))


def calibrated_evidence(probability: Callable, score):
    """The logit of a calibrated method's own P(derived) for a pair's similarity (clipped to
    +-LOGIT_CLIP); 0 where the method could not compare the pair (NaN). `score` may be an array
    (`probability` then maps the array at once)."""
    score = np.asarray(score, np.float64)
    p = np.clip(np.asarray(probability(np.nan_to_num(score)), np.float64), 1e-12, 1 - 1e-12)
    e = np.where(np.isnan(score), 0.0, np.clip(np.log(p / (1.0 - p)), -LOGIT_CLIP, LOGIT_CLIP))
    return float(e) if e.ndim == 0 else e


def method_evidence(score, floor: float = SPREAD_FLOOR, probability: Callable | None = None, *,
                    null: Sequence[float] = (), archs: Sequence[str] | None = None,
                    is_null: Sequence[bool] | None = None):
    """A method's evidence: the logit of its own P(derived) (`calibrated_evidence`) for a calibrated
    method (`probability`: its P(derived) of a similarity), else how far above its null the score
    lies with the method's spread `floor`. For one pair `score` is its similarity and `null` its
    null's (`evidence`); for a zoo `score` is the similarity matrix, the null is the zoo's
    (`evidence_matrix` with `archs` and `is_null`) and a model's pair with itself has evidence 0."""
    if archs is None:
        return evidence(score, null, floor) if probability is None else calibrated_evidence(probability, score)
    e = (evidence_matrix(score, archs, floor, is_null) if probability is None
         else calibrated_evidence(probability, score))
    np.fill_diagonal(e, 0.0)
    return e


def null_spread(null: Sequence[float]) -> float:
    """1.4826 MAD of a null's comparable scores (NaN below MIN_NULL of them)."""
    null = _comparable(null)
    if null.size < MIN_NULL:
        return math.nan
    return float(1.4826 * np.median(np.abs(null - np.median(null))))


def spread_floors(nulls: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, float]:
    """Per method, the median spread of its nulls (one null per reference and suspect kind of the
    fitting zoo), never below SPREAD_FLOOR: the floor `evidence` divides by at least."""
    floors = {}
    for method, lists in nulls.items():
        spreads = [v for v in (null_spread(n) for n in lists) if not math.isnan(v)]
        floors[method] = max(float(np.median(spreads)) if spreads else SPREAD_FLOOR, SPREAD_FLOOR)
    return floors


def _comparable(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in np.asarray(values, np.float64).ravel() if not math.isnan(v)], np.float64)


def _log_z(score, centre, mad, floor=SPREAD_FLOOR):
    """sign(z) log(1 + |z|) with z = (score - centre) / max(1.4826 MAD, floor); broadcasts."""
    z = (score - centre) / np.maximum(1.4826 * mad, max(floor, SPREAD_FLOOR))
    return np.sign(z) * np.log1p(np.abs(z))


def family(arch: str) -> str:
    """The architecture without its settings: "lenet[num_classes=2]" -> "lenet"."""
    return arch.split("[", 1)[0]


def null_columns(suspect_arch: str, null_archs: Sequence[str]) -> list[int]:
    """Which nulls calibrate a suspect: those of the suspect's architecture family when there are at
    least MIN_NULL of them (an independent model of the suspect's kind is the right comparison), else all."""
    same = [i for i, a in enumerate(null_archs) if family(a) == family(suspect_arch)]
    return same if len(same) >= MIN_NULL else list(range(len(null_archs)))


def evidence_matrix(values: np.ndarray, archs: Sequence[str], floor: float = SPREAD_FLOOR,
                    is_null: Sequence[bool] | None = None) -> np.ndarray:
    """Evidence for every pair of a zoo (row = reference, column = suspect).

    With `is_null` (a flag per model: known to be independent of every other model), row i's null
    is row i's similarities to the null models of column j's architecture family (all null models
    when fewer than MIN_NULL are of that family), as in `compare`. Without it, the zoo itself is the
    null: row i's similarities to the zoo's other models of column j's family (all others when too
    few) — right only when most of the zoo is unrelated to model i; when a large share of its peers
    are its relatives, their similarity raises the null and hides them (pass null models then).
    Robust statistics (median, MAD) keep a few relatives from moving the null much."""
    values = np.asarray(values, np.float64)
    n = values.shape[0]
    fams = np.asarray([family(a) for a in archs])
    pool = np.ones(n, bool) if is_null is None else np.asarray(is_null, bool)
    need = MIN_NULL + (1 if is_null is None else 0)  # the zoo as null: the pair itself is one of them
    off = np.where(np.eye(n, dtype=bool), np.nan, values)
    out = np.zeros_like(values)
    for f in np.unique(fams):
        cols = fams == f
        null_cols = pool & cols
        if np.sum(null_cols) < need:  # too few of this kind: every null model
            null_cols = pool
        block = off[:, null_cols]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (incomparable methods)
            centre = np.nanmedian(block, axis=1)
            mad = np.nanmedian(np.abs(block - centre[:, None]), axis=1)
            count = np.sum(np.isfinite(block), axis=1)
            e = _log_z(values[:, cols], centre[:, None], mad[:, None], floor)
        e[~np.isfinite(e) | (count[:, None] < MIN_NULL)] = 0.0
        out[:, cols] = e
    np.fill_diagonal(out, 0.0)
    return out


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A fitted combination: which methods (with which settings) feed it, and its weights.

    `threshold` is the probability at and above which the verdict says "derived"; `floors` holds
    each method's spread floor for `evidence` (SPREAD_FLOOR where absent).
    """

    methods: tuple[str, ...]
    method_config: Mapping[str, Mapping]
    weights: tuple[float, ...]
    bias: float
    threshold: float = 0.5
    provenance: Mapping = dataclasses.field(default_factory=dict)
    floors: Mapping[str, float] = dataclasses.field(default_factory=dict)
    calibrated: tuple[str, ...] = ()  # methods whose evidence is their own P(derived)'s logit

    @property
    def active_methods(self) -> tuple[str, ...]:
        """The methods whose weight is non-zero: all the default verdict needs to compute."""
        return tuple(m for m, w in zip(self.methods, self.weights) if w != 0)

    @property
    def seeds(self) -> str:
        """The seed source the verdict was fitted with (its provenance), "mnist" when unrecorded."""
        return str(self.provenance.get("seeds") or FALLBACK_SEEDS)

    def floor(self, method: str) -> float:
        return float(self.floors.get(method, SPREAD_FLOOR))

    def evidence(self, method: str, score: float, null: Sequence[float]) -> float:
        """`method_evidence` of one pair with this verdict's floor and calibration for `method`."""
        return method_evidence(score, self.floor(method), self._probability(method), null=null)

    def _probability(self, method: str) -> Callable | None:
        """A calibrated method's P(derived) of a similarity; None for the others."""
        if method not in self.calibrated:
            return None
        from jaxprov import methods as methods_lib

        return methods_lib.get(method, **dict(self.method_config.get(method, {}))).probability

    def probability(self, evidence_by_method: Mapping[str, float]) -> float:
        """P(derived) from each method's evidence (a missing method counts as 0 evidence)."""
        x = np.asarray([evidence_by_method.get(m, 0.0) for m in self.methods], np.float64)
        return float(_sigmoid(x @ np.asarray(self.weights) + self.bias))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Rows of evidence in `methods` order [n, len(methods)] -> P(derived) [n]."""
        return _sigmoid(np.asarray(features, np.float64) @ np.asarray(self.weights) + self.bias)

    def matrix(self, similarity: Mapping[str, np.ndarray], archs: Sequence[str],
               is_null: Sequence[bool] | None = None) -> np.ndarray:
        """P(derived) for every ordered pair of a zoo (row = reference, column = suspect) from each
        method's similarity matrix, calibrated by the models flagged `is_null`, or with the zoo
        itself as the null when none are (`evidence_matrix`). The diagonal is 1. Methods missing
        from `similarity` count as 0 evidence; a pair that no method with non-zero weight could
        compare (NaN in every such matrix) is NaN: no evidence gives no probability."""
        n = len(archs)
        logit = np.full((n, n), self.bias)
        comparable = np.zeros((n, n), bool)
        for m, w in zip(self.methods, self.weights):
            if m in similarity and w != 0:
                logit += w * method_evidence(similarity[m], self.floor(m), self._probability(m), archs=archs,
                                             is_null=is_null)
                comparable |= np.isfinite(np.asarray(similarity[m], np.float64))
        p = _sigmoid(logit)
        p[~comparable] = np.nan  # no method could compare the pair: no evidence, no verdict
        np.fill_diagonal(p, 1.0)
        return p

    def to_json(self) -> dict:
        return {"methods": list(self.methods), "method_config": {k: dict(v) for k, v in self.method_config.items()},
                "weights": [float(w) for w in self.weights], "bias": float(self.bias),
                "threshold": float(self.threshold), "provenance": dict(self.provenance),
                "floors": {m: float(v) for m, v in self.floors.items()}, "calibrated": list(self.calibrated),
                "evidence": {"spread_floor": SPREAD_FLOOR, "min_null": MIN_NULL}}

    @classmethod
    def from_json(cls, data: Mapping, source: str = "verdict") -> "Verdict":
        try:
            methods = tuple(data["methods"])
            weights = tuple(float(w) for w in data["weights"])
            if len(methods) != len(weights):
                raise ValueError(f"{len(methods)} methods but {len(weights)} weights")
            floors = {str(k): float(v) for k, v in dict(data.get("floors", {})).items()}
            # Settings under renamed fields (gradient_field's n_anchors) load under their new names.
            config = {str(k): canonical_config(str(k), v) for k, v in dict(data.get("method_config", {})).items()}
            calibrated = tuple(str(m) for m in data.get("calibrated", ()))
            if set(calibrated) - set(methods):
                raise ValueError(f"calibrated methods {sorted(set(calibrated) - set(methods))} are not among its methods")
            return cls(methods, config, weights, float(data["bias"]),
                       float(data.get("threshold", 0.5)), dict(data.get("provenance", {})), floors, calibrated)
        except (KeyError, TypeError, ValueError) as err:
            raise JaxprovError(f"{source}: not a jaxprov verdict file ({err}); "
                               "write one with `jaxprov bench reuse`") from None

    def save(self, path: str | Path) -> None:
        atomic_write(Path(path), (json.dumps(self.to_json(), indent=2) + "\n").encode())


def load(path: str | Path) -> Verdict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise JaxprovError(f"{path}: cannot read the verdict file ({err})") from None
    return Verdict.from_json(data, str(path))


def default_seeds() -> str:
    """The seeds `compare` and `scan` draw by default: those the shipped verdict was fitted with
    (its provenance: "mnist:test", MNIST's held-out split), so the default verdict runs as fitted."""
    default = load_default()
    return default.seeds if default is not None else FALLBACK_SEEDS


def load_default() -> Verdict | None:
    """The verdict fitted by the reuse benchmark and shipped with jaxprov, or None if absent."""
    try:
        text = resources.files("jaxprov").joinpath("data", DEFAULT_FILE).read_text()
    except (FileNotFoundError, OSError):
        return None
    return Verdict.from_json(json.loads(text), f"jaxprov/data/{DEFAULT_FILE}")


def fit(features: np.ndarray, labels: np.ndarray, methods: Sequence[str], method_config: Mapping | None = None,
        l2: float = L2, provenance: Mapping | None = None, floors: Mapping[str, float] | None = None,
        calibrated: Sequence[str] = ()) -> Verdict:
    """Class-balanced, L2-regularised logistic regression with non-negative weights.

    Evidence is monotone by construction (more similar than the null = more likely derived), so a
    negative weight can only be the fit trading one collinear method against another on the
    validation zoo — which does not transfer. Weights are therefore constrained to >= 0 by an
    active set: fit by Newton's method (IRLS), drop the most negative weight's method, refit,
    until none is negative.

    Args:
      features: [n, len(methods)] evidence rows.
      labels: [n] 1 = derived, 0 = independent; both classes must occur.
      methods: the method names, in feature-column order.
      method_config: the method settings the features were computed with (recorded).
      l2: penalty on the weights (not the bias); keeps them finite when the classes separate.
      floors: the spread floors the evidence features were computed with (recorded; see `evidence`).
      calibrated: the methods whose features are `calibrated_evidence` (recorded).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(methods):
        raise JaxprovError(f"verdict fit: features {x.shape} do not match {y.shape[0]} labels and "
                           f"{len(methods)} methods")
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise JaxprovError("verdict fit: needs both derived and independent pairs")
    sample_w = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)  # each class weighs one half
    active = list(range(x.shape[1]))
    while True:
        theta = _irls(x[:, active], y, sample_w, l2)
        if not active or theta[:-1].min() >= 0:
            break
        active.pop(int(np.argmin(theta[:-1])))
    weights = np.zeros(x.shape[1])
    weights[active] = theta[:-1]
    return Verdict(tuple(methods), dict(method_config or {}), tuple(float(w) for w in weights),
                   float(theta[-1]), 0.5, dict(provenance or {}), dict(floors or {}), tuple(calibrated))


def _irls(x: np.ndarray, y: np.ndarray, sample_w: np.ndarray, l2: float) -> np.ndarray:
    """Weighted logistic regression by Newton's method; returns [weights..., bias]."""
    a = np.hstack([x, np.ones((x.shape[0], 1))])
    penalty = np.diag([l2] * x.shape[1] + [0.0])
    theta = np.zeros(a.shape[1])
    for _ in range(100):
        p = _sigmoid(a @ theta)
        grad = a.T @ (sample_w * (p - y)) + penalty @ theta
        hess = (a * (sample_w * p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(a.shape[1])
        delta = np.linalg.solve(hess, grad)
        theta -= delta
        if np.max(np.abs(delta)) < 1e-10:
            break
    return theta


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, np.float64)))
