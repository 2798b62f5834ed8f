"""Threshold metrics: the best threshold, accuracy at a threshold, View 2 cross-validation, ROC AUC."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_jax.evaluation import metrics


def test_best_threshold_maximises_accuracy_without_splitting_ties():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    same = np.array([0, 0, 1, 0, 1, 1], bool)
    threshold = metrics.best_threshold(scores, same)
    assert metrics.accuracy_at(scores, same, threshold) == pytest.approx(5 / 6)
    assert 0.2 < threshold < 0.3 or 0.6 < threshold < 0.7
    tied = metrics.best_threshold(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1], bool))
    assert metrics.accuracy_at(np.array([0.5] * 4), np.array([0, 1, 0, 1], bool), tied) == 0.5
    assert metrics.best_threshold(np.array([0.1, 0.2]), np.array([1, 1], bool)) < 0.1


def test_view2_threshold_comes_only_from_the_other_folds():
    # Fitted on its own pairs, each fold would score 100%. Fold 0's threshold must come from fold 1
    # (between 0.15 and 0.35), which calls fold 0's 0.3 'same'; fold 1's from fold 0 (between 0.3
    # and 0.8), which calls all of fold 1 'different'.
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.2, 0.3, 0.35, 0.4, 0.1, 0.15])
    result = metrics.cross_validate(scores[None], same, fold)
    assert [f["accuracy"] for f in result["per_fold"]] == [0.75, 0.5]
    assert 0.15 < result["per_fold"][0]["threshold"] < 0.35 and 0.3 < result["per_fold"][1]["threshold"] < 0.8
    # With one model per fold, fold k's threshold and scores come from row k: here model 1 scores
    # fold 0 on fold 1's scale, so its threshold suits its test fold.
    model_1 = np.array([0.4, 0.35, 0.1, 0.15, 0.35, 0.4, 0.1, 0.15])
    strict = metrics.cross_validate(np.stack([scores, model_1]), same, fold)
    assert [f["accuracy"] for f in strict["per_fold"]] == [0.75, 1.0]
    assert strict["accuracy"] == 0.875 and strict["std_error"] == pytest.approx(np.std([0.75, 1], ddof=1) / np.sqrt(2))


def test_view2_with_given_thresholds_uses_them_for_each_row():
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.2, 0.3, 0.35, 0.4, 0.1, 0.15])
    # One model: its one threshold serves every fold. 0.25 calls fold 0's 0.3 'same' and all of fold 1 right.
    result = metrics.cross_validate(scores[None], same, fold, thresholds=[0.25])
    assert [f["accuracy"] for f in result["per_fold"]] == [0.75, 1.0]
    assert [f["threshold"] for f in result["per_fold"]] == [0.25, 0.25]
    # One model per fold: row k's threshold for fold k.
    strict = metrics.cross_validate(np.stack([scores, scores]), same, fold, thresholds=[0.5, 0.05])
    assert [f["accuracy"] for f in strict["per_fold"]] == [1.0, 0.5]
    with pytest.raises(ValueError, match="1 thresholds for 2 rows"):
        metrics.cross_validate(np.stack([scores, scores]), same, fold, thresholds=[0.5])


def test_roc_auc_against_hand_counts():
    scores = np.array([0.9, 0.4, 0.6, 0.4, 0.1])
    positive = np.array([1, 1, 0, 0, 0], bool)
    # Positive 0.9 beats all 3 negatives; 0.4 beats 0.1, ties 0.4 (half), loses to 0.6: (3 + 1.5) / 6.
    assert metrics.roc_auc(scores, positive) == pytest.approx(4.5 / 6)


def test_roc_auc_is_the_share_of_positive_negative_pairs_won_with_ties_half():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 7, size=120).astype(np.float32)  # Many ties.
    positive = rng.random(120) < 0.4
    pos, neg = scores[positive], scores[~positive]
    won = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.roc_auc(scores, positive) == pytest.approx(won / (len(pos) * len(neg)))
    scores[3] = np.nan  # A non-finite score has no rank: the area is NaN, not a number that looks right.
    assert np.isnan(metrics.roc_auc(scores, positive))
