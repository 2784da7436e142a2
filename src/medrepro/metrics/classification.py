"""Classification metrics of the three papers: mAP, mAUC, mS2, macro-F1, accuracy (numpy, sklearn-equivalent).

Conventions:
- Scores are probabilities: softmax for multi-class, per-label sigmoid for multi-label.
- mAP and mAUC are macro means over classes (one-vs-rest); a class with no positive or no negative in ``y`` has an
  undefined AP/AUC and is left out of the mean (``nanmean``), as the EI authors' evaluation does.
- Threshold rule for sensitivity, specificity and S2 (EI Sec. 4.1; the paper does not state it): multi-class →
  the predicted class is the argmax; multi-label → a label is positive when its probability > 0.5 (the authors'
  code). S2 per class = harmonic mean of sensitivity and specificity; mS2 = its macro mean.
"""

from __future__ import annotations

import numpy as np

#: the headline metrics of every result table (``classification_metrics`` keys)
METRICS = ("mAP", "mAUC", "mS2", "macro_f1", "accuracy")


def _binary_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision = Σ (R_n − R_{n−1}) P_n over distinct score thresholds (sklearn's definition)."""
    pos = y.sum()
    if pos == 0 or pos == len(y):
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end index of each block of tied scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision, recall = tp / (tp + fp), tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank statistic with average ranks for ties (Mann–Whitney U / (n⁺ n⁻))."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # imported where used: scipy.stats costs ~1 s at start-up

    ranks = rankdata(s, method="average")  # tied scores share their average rank
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def one_hot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k), dtype=np.int64)
    out[np.arange(len(y)), y] = 1
    return out


def predictions(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    """Binary (N, K) predictions by the documented threshold rule."""
    if multilabel:
        return (scores > 0.5).astype(np.int64)
    return one_hot(scores.argmax(1), scores.shape[1])


def per_class(y: np.ndarray, scores: np.ndarray, multilabel: bool = False) -> dict[str, np.ndarray]:
    """Per-class AP, AUC, sensitivity, specificity, S2 and F1 (arrays of length K)."""
    k = scores.shape[1]
    target = y.astype(np.int64) if multilabel else one_hot(y.astype(np.int64), k)
    sens, spec, s2, f1 = _threshold_metrics(target, predictions(scores, multilabel))
    return {
        "AP": np.array([_binary_ap(target[:, c], scores[:, c]) for c in range(k)]),
        "AUC": np.array([_binary_auc(target[:, c], scores[:, c]) for c in range(k)]),
        "sensitivity": sens,
        "specificity": spec,
        "S2": s2,
        "F1": f1,
    }


def _threshold_metrics(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class sensitivity, specificity, S2 (their harmonic mean) and F1 of binary (N, K) predictions."""
    return threshold_rates((pred & target).sum(0), (pred & (1 - target)).sum(0), ((1 - pred) & target).sum(0),
                           ((1 - pred) & (1 - target)).sum(0))


def threshold_rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sensitivity, specificity, S2 and F1 from confusion counts (any shape, per class in the last axis; counts may
    be resample-weighted)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        s2 = np.where(sens + spec > 0, 2 * sens * spec / (sens + spec), 0.0)
        s2 = np.where(np.isnan(sens) | np.isnan(spec), np.nan, s2)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return sens, spec, s2, f1


def classification_metrics(y: np.ndarray, scores: np.ndarray, multilabel: bool = False) -> dict[str, float]:
    """Headline metrics: mAP, mAUC, mS2, macro_f1, accuracy (subset accuracy for multi-label)."""
    pc = per_class(y, scores, multilabel)
    pred = predictions(scores, multilabel)
    acc = (pred == y).all(1).mean() if multilabel else (scores.argmax(1) == y).mean()
    with np.errstate(invalid="ignore"):
        return {
            "mAP": float(np.nanmean(pc["AP"])) if not np.isnan(pc["AP"]).all() else float("nan"),
            "mAUC": float(np.nanmean(pc["AUC"])) if not np.isnan(pc["AUC"]).all() else float("nan"),
            "mS2": float(np.nanmean(pc["S2"])) if not np.isnan(pc["S2"]).all() else float("nan"),
            "macro_f1": float(np.mean(pc["F1"])),
            "accuracy": float(acc),
        }


def _mean_defined(values: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")


def metric_value(y: np.ndarray, scores: np.ndarray, name: str, multilabel: bool = False) -> float:
    """``classification_metrics(y, scores, multilabel)[name]``, computing only that metric (bootstrap loops)."""
    k = scores.shape[1]
    if name == "accuracy":
        return float((predictions(scores, True) == y).all(1).mean() if multilabel else (scores.argmax(1) == y).mean())
    if name in ("mAUC", "mAP"):
        target = y.astype(np.int64) if multilabel else one_hot(y.astype(np.int64), k)
        if name == "mAUC":  # _binary_auc for every class at once
            pos = target.sum(0)
            neg = len(target) - pos
            from scipy.stats import rankdata

            rank_sum = (rankdata(scores, method="average", axis=0) * target).sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = np.where((pos > 0) & (neg > 0), (rank_sum - pos * (pos + 1) / 2) / (pos * neg), np.nan)
            return _mean_defined(auc)
        return _mean_defined(np.array([_binary_ap(target[:, c], scores[:, c]) for c in range(k)]))
    if name in ("mS2", "macro_f1"):
        target = y.astype(np.int64) if multilabel else one_hot(y.astype(np.int64), k)
        _, _, s2, f1 = _threshold_metrics(target, predictions(scores, multilabel))
        return _mean_defined(s2) if name == "mS2" else float(np.mean(f1))
    return classification_metrics(y, scores, multilabel)[name]
