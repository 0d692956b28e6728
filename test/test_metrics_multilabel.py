"""Multi-label metrics of the entity head (EGMT Table V): hand-computed tiny case, scikit-learn agreement,
empty classes, threshold, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from egmt_ros.metrics import multilabel_scores

Y_TRUE = np.array([[1, 0, 1],
                   [0, 1, 0],
                   [1, 1, 0]])
Y_SCORE = np.array([[0.8, 0.6, 0.3],
                    [0.4, 0.7, 0.2],
                    [0.6, 0.3, 0.9]])


def test_tiny_case_by_hand() -> None:
    out = multilabel_scores(Y_TRUE, Y_SCORE)
    assert set(out) == {"HL", "RL", "mAP", "AUC", "JI", "F1"}
    # Predictions (>= 0.5): [[1,1,0],[0,1,0],[1,0,1]] -> wrong cells (0,1) (0,2) (2,1) (2,2); TP 3, FP 2, FN 2.
    assert out["HL"] == pytest.approx(4 / 9)
    assert out["JI"] == pytest.approx(3 / 7)
    assert out["F1"] == pytest.approx(6 / 10)
    # Ranking loss per sample: 1 of 2 pairs wrong, 0 of 2, 2 of 2.
    assert out["RL"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    # AP per class: ranks give 1, (1 + 2/3) / 2, 1/2.
    assert out["mAP"] == pytest.approx((1 + 5 / 6 + 1 / 2) / 3)
    # AUC per class: 2/2, 1/2, 1/2 correctly ordered (positive, negative) pairs.
    assert out["AUC"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)


def test_threshold_changes_only_the_set_metrics() -> None:
    base = multilabel_scores(Y_TRUE, Y_SCORE)
    high = multilabel_scores(Y_TRUE, Y_SCORE, threshold=0.65)
    # >= 0.65: [[1,0,0],[0,1,0],[0,0,1]] -> wrong cells (0,2) (2,0) (2,1) (2,2); TP 2, FP 1, FN 3.
    assert high["HL"] == pytest.approx(4 / 9)
    assert high["JI"] == pytest.approx(2 / 6)
    assert high["F1"] == pytest.approx(4 / 8)
    for k in ("RL", "mAP", "AUC"):
        assert high[k] == base[k]


def test_agrees_with_scikit_learn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 9)) < 0.35).astype(int)
    y[0], y[1] = 1, 0  # every class has positives and negatives
    score = np.clip(0.5 * y + rng.random(y.shape) * 0.7, 0, 1)
    pred = (score >= 0.5).astype(int)
    out = multilabel_scores(y, score)
    assert out["HL"] == pytest.approx(skm.hamming_loss(y, pred))
    assert out["RL"] == pytest.approx(skm.label_ranking_loss(y, score))
    assert out["mAP"] == pytest.approx(skm.average_precision_score(y, score, average="macro"))
    assert out["AUC"] == pytest.approx(skm.roc_auc_score(y, score, average="macro"))
    assert out["JI"] == pytest.approx(skm.jaccard_score(y, pred, average="micro"))
    assert out["F1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    # Micro averaging ties F1 to JI exactly, as in EGMT Table V (JI 0.554 -> F1 0.713).
    assert out["F1"] == pytest.approx(2 * out["JI"] / (1 + out["JI"]))
    assert 0 < out["HL"] < 0.5 and 0.5 < out["mAP"] <= 1 and 0.5 < out["AUC"] <= 1


def test_classes_without_positives_are_skipped_not_fatal() -> None:
    y = np.concatenate([Y_TRUE, np.zeros((3, 1), int)], axis=1)
    s = np.concatenate([Y_SCORE, np.array([[0.1], [0.9], [0.2]])], axis=1)
    with_empty = multilabel_scores(y, s)
    plain = multilabel_scores(Y_TRUE, Y_SCORE)
    assert with_empty["mAP"] == pytest.approx(plain["mAP"])
    assert with_empty["AUC"] == pytest.approx(plain["AUC"])
    assert with_empty["HL"] == pytest.approx(5 / 12)  # one more wrong cell (the 0.9 false positive)
    # A class that is positive for every sample has an AP but no AUC.
    y_full = np.concatenate([Y_TRUE, np.ones((3, 1), int)], axis=1)
    full = multilabel_scores(y_full, s)
    assert full["AUC"] == pytest.approx(plain["AUC"])
    assert full["mAP"] == pytest.approx((3 * plain["mAP"] + 1.0) / 4)
    # No positive anywhere: ranking metrics undefined (NaN), set metrics perfect if nothing is predicted.
    none = multilabel_scores(np.zeros((2, 3), int), np.full((2, 3), 0.1))
    assert math.isnan(none["mAP"]) and math.isnan(none["AUC"])
    assert none["HL"] == 0.0 and none["RL"] == 0.0 and none["JI"] == 1.0 and none["F1"] == 1.0
    wrong = multilabel_scores(np.zeros((2, 3), int), np.full((2, 3), 0.9))
    assert wrong["HL"] == 1.0 and wrong["JI"] == 0.0 and wrong["F1"] == 0.0


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        multilabel_scores(Y_TRUE * 2, Y_SCORE)
    with pytest.raises(ValueError, match="N x C"):
        multilabel_scores(Y_TRUE, Y_SCORE[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        multilabel_scores(Y_TRUE, np.where(Y_TRUE == 1, np.nan, 0.2))
