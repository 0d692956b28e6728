"""Multi-label classification metrics of the auxiliary entity head (EGMT Table V): HL, RL, mAP, AUC, JI, F1.

Averaging, chosen to match what Table V implies and documented per key in :func:`multilabel_scores`:
JI and F1 are **micro**-averaged over all (sample, class) cells. Evidence: Table V's F1 equals
``2 JI / (1 + JI)`` in all three rows (0.554 -> 0.713, 0.480 -> 0.649, 0.432 -> 0.603), an identity that
holds for micro-averaged Jaccard and F1 and not for sample- or class-averaged ones in general.
mAP and AUC are **macro**-averaged over classes (the usual multi-label mAP).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

#: Default decision threshold on the scores for the set-based metrics (HL, JI, F1): predicted iff score >= 0.5.
DEFAULT_THRESHOLD = 0.5


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: y_true N x C of 0/1 (int), y_score N x C finite floats."""
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim != 2 or s.ndim != 2 or t.shape != s.shape or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"y_true and y_score must both be N x C (N, C >= 1); got {t.shape} and {s.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("y_score has NaN or infinite values")
    return t.astype(np.int64), s


def multilabel_scores(y_true: np.ndarray, y_score: np.ndarray,
                      threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """HL, RL, mAP, AUC, JI, F1 of multi-label predictions.

    Args:
        y_true: N x C array of 0/1 ground-truth labels.
        y_score: N x C scores (probabilities; only their order matters for RL, mAP, AUC).
        threshold: predicted label = ``y_score >= threshold`` for HL, JI and F1.

    Returns a dict with:
        - ``HL`` hamming loss (lower is better): fraction of the N*C cells predicted wrongly (sklearn
          ``hamming_loss``). Range 0..1.
        - ``RL`` ranking loss (lower is better): per sample, the fraction of (relevant, irrelevant) label pairs
          ordered wrongly by score (ties count as wrong), averaged over samples; samples whose labels are all 0
          or all 1 contribute 0 (sklearn ``label_ranking_loss``). Range 0..1.
        - ``mAP`` mean average precision (higher is better): per class, the average precision of the ranking of
          the N samples by score (sklearn ``average_precision_score``), macro mean over the classes that have at
          least one positive; classes with no positive are skipped (their AP is undefined).
        - ``AUC`` ROC AUC (higher is better): per class (sklearn ``roc_auc_score``), macro mean over the classes
          with at least one positive and one negative sample; other classes are skipped.
        - ``JI`` Jaccard index (higher is better), micro: ``TP / (TP + FP + FN)`` over all cells.
        - ``F1`` (higher is better), micro: ``2 TP / (2 TP + FP + FN)`` over all cells (= 2 JI / (1 + JI)).

    mAP / AUC are NaN when no class qualifies (e.g. all labels 0); JI / F1 are 1.0 when there is no positive
    label and no positive prediction at all (nothing to get wrong). Nothing raises for empty classes.
    """
    t, s = _check(y_true, y_score)
    pred = (s >= threshold).astype(np.int64)
    pos = t.sum(axis=0)
    has_pos = pos > 0
    has_both = has_pos & (pos < t.shape[0])
    ap = [skm.average_precision_score(t[:, c], s[:, c]) for c in np.flatnonzero(has_pos)]
    auc = [skm.roc_auc_score(t[:, c], s[:, c]) for c in np.flatnonzero(has_both)]
    return {
        "HL": float(skm.hamming_loss(t, pred)),
        "RL": float(skm.label_ranking_loss(t, s)),
        "mAP": float(np.mean(ap)) if ap else math.nan,
        "AUC": float(np.mean(auc)) if auc else math.nan,
        "JI": float(skm.jaccard_score(t, pred, average="micro", zero_division=1.0)),
        "F1": float(skm.f1_score(t, pred, average="micro", zero_division=1.0)),
    }
