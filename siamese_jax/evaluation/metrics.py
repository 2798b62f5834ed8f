"""Metrics of scores: binomial intervals, ROC AUC, and thresholds for same/different decisions."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = correct / total
    center = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, center - half), min(1.0, center + half))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties half)."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC AUC needs both positive and negative pairs")
    scores = np.asarray(scores)
    if np.isnan(scores).any():
        return math.nan  # As scipy.stats.rankdata's ranks give: no order, no area.
    # 1-based ranks, tied scores sharing the mean of their positions (scipy.stats.rankdata's default, without
    # importing scipy.stats, about a second of every process that evaluates).
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[group]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold t maximising the accuracy of 'same when score > t' on these pairs (a midpoint between scores)."""
    order = np.argsort(scores, kind="stable")
    s, y = np.asarray(scores, np.float64)[order], np.asarray(same, bool)[order]
    # Cutting before sorted position k calls positions >= k 'same': correct = negatives below + positives above.
    correct = np.concatenate([[0], np.cumsum(~y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    cut_allowed = np.concatenate([[True], s[1:] > s[:-1], [True]])  # Never split tied scores.
    k = int(np.argmax(np.where(cut_allowed, correct, -1)))
    if k == 0:
        return float(s[0] - 1.0)
    if k == len(s):
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Accuracy of 'same when score > threshold'."""
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(same, bool)))


def cross_validate(scores: np.ndarray, same: np.ndarray, fold: np.ndarray, thresholds=None) -> dict:
    """View 2 from pair scores [M, P]: M = 1 model for every fold, or M = 10 with row k trained without fold k.

    For each fold the threshold is chosen on the other folds' pairs only, with that fold's model,
    unless `thresholds` gives one per row of `scores` (chosen elsewhere, never on the test fold).
    Reports the mean accuracy with its standard error (sample standard deviation / sqrt(folds)),
    and the mean of the per-fold ROC AUCs.
    """
    scores = np.atleast_2d(scores)
    folds = np.unique(fold)
    if scores.shape[0] not in (1, len(folds)):
        raise ValueError(f"scores has {scores.shape[0]} rows; expected 1 or one per fold ({len(folds)})")
    if thresholds is not None and len(thresholds) != scores.shape[0]:
        raise ValueError(f"{len(thresholds)} thresholds for {scores.shape[0]} rows of scores")
    per_fold = []
    for k in folds:
        row_index = k if scores.shape[0] > 1 else 0
        row = scores[row_index]
        test, train = fold == k, fold != k
        threshold = best_threshold(row[train], same[train]) if thresholds is None else float(thresholds[row_index])
        per_fold.append({
            "fold": int(k),
            "pairs": int(test.sum()),
            "threshold": threshold,
            "accuracy": accuracy_at(row[test], same[test], threshold),
            "auc": roc_auc(row[test], same[test]),
        })
    accuracies = np.array([f["accuracy"] for f in per_fold])
    return {
        "pairs": int(len(same)),
        "accuracy": float(accuracies.mean()),
        "std_error": float(accuracies.std(ddof=1) / math.sqrt(len(folds))) if len(folds) > 1 else None,
        "auc": float(np.mean([f["auc"] for f in per_fold])),
        "per_fold": per_fold,
    }
