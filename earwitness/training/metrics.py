"""ROC AUC in numpy: `earwitness eval` runs from a plain install, where scikit-learn is not installed."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """The area under the ROC curve (Mann-Whitney U with tied scores at their mean rank, as
    scikit-learn's `roc_auc_score`); None when one class is missing and the area is undefined."""
    positive = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mean_rank = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((mean_rank[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
