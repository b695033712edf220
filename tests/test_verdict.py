"""The default verdict: evidence against a null, the logistic combination, its file."""

import json
import math

import numpy as np
import pytest

from jaxprov import verdict
from jaxprov.errors import JaxprovError


def test_evidence_is_zero_without_comparison_and_grows_with_distance_above_the_null():
    null = [0.30, 0.32, 0.35, 0.31]
    assert verdict.evidence(float("nan"), null) == 0.0
    assert verdict.evidence(0.9, [0.3]) == 0.0  # one null score has no spread
    assert verdict.evidence(0.9, [0.3, float("nan")]) == 0.0
    at_median = verdict.evidence(float(np.median(null)), null)
    assert at_median == pytest.approx(0.0, abs=1e-12)
    ladder = [verdict.evidence(s, null) for s in (0.2, 0.4, 0.6, 0.9)]
    assert ladder == sorted(ladder) and ladder[0] < 0 < ladder[1]
    # The log compresses: 10x further above the null is far less than 10x the evidence.
    assert verdict.evidence(0.3 + 10 * 0.1, null) < 3 * verdict.evidence(0.3 + 0.1, null)


def test_a_spread_floor_keeps_a_tight_small_null_from_inflating_evidence():
    tight = [0.500, 0.501, 0.502]  # three null models that happen to agree to 0.001
    typical = [[0.4, 0.5, 0.6], [0.1, 0.2, 0.35, 0.3], [0.7, 0.72]]
    floors = verdict.spread_floors({"m": typical, "dead": [[0.1]]})
    spreads = [verdict.null_spread(n) for n in typical]
    assert floors["m"] == pytest.approx(float(np.median(spreads)))
    assert floors["dead"] == verdict.SPREAD_FLOOR  # no usable null: the global floor
    assert math.isnan(verdict.null_spread([0.3, float("nan")]))
    # Without the method's floor 0.56 is 6 (global-floor) spreads above the null; with it, under one.
    assert verdict.evidence(0.56, tight) > 1.5
    floored = verdict.evidence(0.56, tight, floors["m"])
    assert 0 < floored < 0.6
    # A wide null keeps its own spread: the floor only ever widens.
    wide = [0.0, 0.5, 1.0]
    assert verdict.evidence(1.2, wide, floors["m"]) == pytest.approx(verdict.evidence(1.2, wide))
    # The verdict carries its floors through its file, and applies them.
    v = verdict.Verdict(("m",), {}, (1.0,), 0.0, floors=floors)
    again = verdict.Verdict.from_json(json.loads(json.dumps(v.to_json())))
    assert again.floor("m") == pytest.approx(floors["m"]) and again.floor("other") == verdict.SPREAD_FLOOR
    assert again.evidence("m", 0.56, tight) == pytest.approx(floored)


def test_null_columns_prefer_the_suspects_architecture_family():
    archs = ["mlp", "lenet", "mlp", "lenet", "lenet[num_classes=2]"]
    assert verdict.null_columns("lenet[num_classes=10]", archs) == [1, 3, 4]
    assert verdict.null_columns("mlp", archs) == [0, 2]
    assert verdict.null_columns("cifar_resnet20", archs) == [0, 1, 2, 3, 4]  # none of its kind: all


def test_fit_learns_the_informative_method_and_separates_held_out_pairs():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        informative = np.where(y == 1, rng.normal(2.5, 0.5, n), rng.normal(0.0, 0.5, n))
        noise = rng.normal(0.0, 1.0, n)
        return np.stack([informative, noise], 1), y

    x, y = sample(400)
    v = verdict.fit(x, y, ["good", "noise"], {"good": {"k": 1}})
    assert v.weights[0] > 1.0 and abs(v.weights[1]) < 0.5 * v.weights[0]
    x_test, y_test = sample(400)
    p = v.probabilities(x_test)
    assert np.all((p >= 0) & (p <= 1))
    assert np.mean((p >= v.threshold) == (y_test == 1)) > 0.95
    assert v.probability({"good": 3.0}) > 0.9 > 0.1 > v.probability({"good": -1.0})


def test_fit_is_class_balanced_and_stays_finite_on_separable_data():
    x = np.asarray([[5.0]] * 3 + [[0.0]] * 97)
    y = np.asarray([1] * 3 + [0] * 97)
    v = verdict.fit(x, y, ["m"])
    assert all(math.isfinite(w) for w in v.weights) and math.isfinite(v.bias)
    # With 3 positives among 100 an unbalanced fit would sit its boundary near the positives;
    # balanced, the midpoint between the classes is near P = 1/2.
    assert v.probability({"m": 2.5}) == pytest.approx(0.5, abs=0.15)
    with pytest.raises(JaxprovError, match="both derived and independent"):
        verdict.fit(x[y == 0], y[y == 0], ["m"])


def test_evidence_matrix_finds_the_pair_that_stands_out():
    rng = np.random.default_rng(1)
    n = 8
    values = 0.3 + 0.02 * rng.standard_normal((n, n))
    values = (values + values.T) / 2
    values[2, 5] = values[5, 2] = 0.9
    archs = ["mlp"] * 4 + ["lenet"] * 4
    e = verdict.evidence_matrix(values, archs)
    assert e[2, 5] > 2.0 and e[5, 2] > 2.0
    others = np.delete(e.ravel(), [2 * n + 5, 5 * n + 2])
    assert np.all(e[2, 5] > others)
    v = verdict.Verdict(("m",), {}, (2.0,), -4.0)
    p = v.matrix({"m": values}, archs)
    assert p[2, 5] > 0.5 and np.all(np.diag(p) == 1.0)
    off = p[~np.eye(n, dtype=bool)]
    assert np.sum(off > 0.5) == 2



def test_method_evidence_is_the_same_choice_for_a_pair_and_a_zoo():
    """Null-based without a calibration: `evidence` for a pair, `evidence_matrix` for a zoo; with
    one, the logit of its P(derived) for both, and 0 on the zoo's diagonal and for NaN."""
    values = np.asarray([[1.0, 0.9, 0.3, 0.2], [0.9, 1.0, 0.25, 0.3], [0.3, 0.25, 1.0, 0.35], [0.2, 0.3, 0.35, 1.0]])
    archs = ["mlp"] * 4
    assert verdict.method_evidence(0.9, 0.05, null=[0.3, 0.2]) == verdict.evidence(0.9, [0.3, 0.2], 0.05)
    np.testing.assert_array_equal(verdict.method_evidence(values, 0.05, archs=archs),
                                  verdict.evidence_matrix(values, archs, 0.05))
    prob = lambda s: np.asarray(s) / 2  # noqa: E731  (a stand-in calibration)
    pair = verdict.method_evidence(0.9, 0.05, prob, null=[0.3, 0.2])
    assert pair == pytest.approx(math.log(0.45 / 0.55))
    assert verdict.method_evidence(math.nan, 0.05, prob, null=[0.3, 0.2]) == 0.0
    zoo = verdict.method_evidence(values, 0.05, prob, archs=archs)
    assert zoo[0, 1] == pytest.approx(pair) and np.all(np.diag(zoo) == 0.0)


def test_verdict_file_round_trip_and_bad_file(tmp_path):
    v = verdict.Verdict(("ddv", "sac"), {"ddv": {"eps": 0.5}}, (1.5, -0.25), 0.1, 0.5, {"fitted_on": "test"})
    v.save(tmp_path / "v.json")
    again = verdict.load(tmp_path / "v.json")
    assert again == v
    (tmp_path / "bad.json").write_text(json.dumps({"methods": ["a", "b"], "weights": [1.0], "bias": 0}))
    with pytest.raises(JaxprovError, match="bad.json: not a jaxprov verdict file"):
        verdict.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(JaxprovError, match="cannot read the verdict file"):
        verdict.load(tmp_path / "junk.json")


def test_fit_keeps_weights_non_negative_when_methods_are_collinear():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    a = np.where(y == 1, 2.0, 0.0) + rng.normal(0, 0.6, 300)
    b = a + rng.normal(0, 0.05, 300)  # a near copy: an unconstrained fit may trade them off
    c = -1.0 * y + rng.normal(0, 0.5, 300)  # lower for derived pairs on this zoo: would get a negative weight
    v = verdict.fit(np.stack([a, b, c], 1), y, ["a", "b", "c"], l2=0.0)
    assert min(v.weights) >= 0.0 and v.weights[2] == 0.0 and v.weights[0] + v.weights[1] > 1.0
