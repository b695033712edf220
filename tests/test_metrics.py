"""Detection metrics: exact AUC, conservative TPR at FPR, ModelDiff correctness, seeded bootstrap."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxprov.errors import JaxprovError
from jaxprov.metrics import (
    allowed_false_positives, bootstrap_ci, correctness, correctness_flags, roc_auc, summarize, tpr_at_fpr)


@pytest.mark.parametrize("n_pos,n_neg,levels", [(1, 1, 2), (7, 3, 3), (40, 55, 6), (200, 150, 20)])
def test_roc_auc_matches_sklearn_with_ties(n_pos, n_neg, levels):
    rng = np.random.default_rng(n_pos * 1000 + n_neg)
    for _ in range(5):
        pos = rng.integers(0, levels, n_pos).astype(float) + 0.5  # few levels -> many ties
        neg = rng.integers(0, levels, n_neg).astype(float)
        neg[: n_neg // 2] += 0.5
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


def test_roc_auc_separated_reversed_and_all_tied():
    assert roc_auc([0.9, 0.8, 0.95], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1, 0.2], [0.9, 0.8, 0.95]) == 0.0
    assert roc_auc([0.5, 0.5], [0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([1.0, 0.0], [0.5]) == 0.5


def test_tpr_at_fpr_hand_cases():
    neg = np.arange(100.0)  # fpr 0.01 allows 1 false positive: threshold just above 98
    assert tpr_at_fpr([98.0, 98.5, 99.0, 100.0], neg, 0.01) == 0.75  # the tie at 98 is not detected
    assert tpr_at_fpr([99.0, 100.0], neg, 0.0) == 0.5  # no false positive: strictly above 99
    assert tpr_at_fpr([-5.0], neg, 1.0) == 1.0
    # 0.29 * 100 = 28.999999999999996 in floating point; 29 false positives are still allowed.
    assert allowed_false_positives(100, 0.29) == 29
    assert tpr_at_fpr([70.5, 69.5], neg, 0.29) == 0.5


def test_tpr_at_fpr_ties_at_threshold():
    # k = floor(0.25 * 4) = 1; the 2nd-largest negative is 3, tied with the largest: any threshold
    # <= 3 flags 2 of 4 negatives, so positives must beat 3 and the realised FPR is 0.
    neg = [1.0, 2.0, 3.0, 3.0]
    assert tpr_at_fpr([3.0, 3.5], neg, 0.25) == 0.5
    assert tpr_at_fpr([2.5], [1.0, 2.0, 3.0, 4.0], 0.25) == 0.0
    assert tpr_at_fpr([3.5], [1.0, 2.0, 3.0, 4.0], 0.25) == 1.0


def test_tpr_at_fpr_few_negatives_allows_no_false_positive():
    neg = np.arange(50.0)
    assert allowed_false_positives(50, 0.01) == 0
    assert tpr_at_fpr([49.0, 49.01, 10.0], neg, 0.01) == pytest.approx(1 / 3)


def test_correctness_hand_example():
    sims = {
        "a": (0.9, [0.1, 0.5]),   # correct
        "b": (0.5, [0.5, 0.2]),   # tie with an unrelated model: a miss
        "c": (0.3, [0.4]),        # unrelated model ranks higher: a miss
        "d": (0.8, (0.79,)),      # correct
    }
    assert correctness_flags(sims).tolist() == [True, False, False, True]
    assert correctness(sims) == 0.5


def test_bootstrap_ci_deterministic_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 60)
    ci = bootstrap_ci(roc_auc, pos, neg, seed=3, n_boot=300)
    assert ci == bootstrap_ci(roc_auc, pos, neg, seed=3, n_boot=300)
    assert ci != bootstrap_ci(roc_auc, pos, neg, seed=4, n_boot=300)
    assert ci[0] <= roc_auc(pos, neg) <= ci[1] and ci[0] < ci[1]

    small, large = rng.normal(0, 1, 30), rng.normal(0, 1, 3000)
    lo_s, hi_s = bootstrap_ci(np.mean, small, seed=1, n_boot=300)
    lo_l, hi_l = bootstrap_ci(np.mean, large, seed=1, n_boot=300)
    assert (hi_l - lo_l) < 0.3 * (hi_s - lo_s)  # width ~ 1/sqrt(n): expect ~0.1


def test_summarize_is_json_safe():
    out = summarize([0.9, 0.8, 0.7, 0.4], np.linspace(0.0, 0.75, 10), seed=0, n_boot=50)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["auc"] == roc_auc([0.9, 0.8, 0.7, 0.4], np.linspace(0.0, 0.75, 10))
    assert out["tpr_at_1pct_fpr"] == 0.5 and out["allowed_false_positives"] == 0
    assert (out["n_pos"], out["n_neg"]) == (4, 10)
    assert out["auc_ci"][0] <= out["auc_ci"][1] and out["tpr_ci"][0] <= out["tpr_ci"][1]


def test_errors_are_clear():
    with pytest.raises(JaxprovError, match="scores_pos: no scores"):
        roc_auc([], [0.1])
    with pytest.raises(JaxprovError, match="scores_neg: no scores"):
        tpr_at_fpr([0.1], [])
    with pytest.raises(JaxprovError, match="scores_neg: 2 of 3 scores are NaN"):
        roc_auc([0.1], [np.nan, 0.2, np.nan])
    with pytest.raises(JaxprovError, match="1-D"):
        roc_auc([[0.1, 0.2]], [0.1])
    with pytest.raises(JaxprovError, match="fpr"):
        tpr_at_fpr([0.1], [0.2], fpr=1.5)
    with pytest.raises(JaxprovError, match="no suspects"):
        correctness({})
    with pytest.raises(JaxprovError, match="no unrelated reference"):
        correctness({"s": (0.9, [])})
    with pytest.raises(JaxprovError, match="2 scores are NaN"):
        correctness({"s": (np.nan, [0.1, np.nan])})
    with pytest.raises(JaxprovError, match="sample 1 is empty"):
        bootstrap_ci(roc_auc, [0.1], [], seed=0)
    with pytest.raises(JaxprovError, match="seed"):
        bootstrap_ci(np.mean, [0.1], seed=-1)
    with pytest.raises(JaxprovError, match="n_boot"):
        bootstrap_ci(np.mean, [0.1], seed=0, n_boot=0)
    with pytest.raises(JaxprovError, match="level"):
        bootstrap_ci(np.mean, [0.1], seed=0, level=1.0)
