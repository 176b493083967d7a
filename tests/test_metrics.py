"""The numpy ROC AUC of `earwitness eval` agrees with scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest

from earwitness.training.metrics import roc_auc


def test_roc_auc_matches_scikit_learn_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (the `train` extra) is the reference")
    rng = np.random.default_rng(0)
    for n in (2, 7, 50, 400):
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        scores = np.round(rng.random(n) + 0.3 * y, 1)  # rounded: many ties
        assert roc_auc(y, scores) == pytest.approx(metrics.roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_is_undefined_without_both_classes() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.2, 0.5]) is None
    assert roc_auc([0, 1], [0.2, 0.5]) == 1.0
    assert roc_auc([1, 0], [0.2, 0.5]) == 0.0
