"""Our metrics equal scikit-learn's on random inputs (ties included)."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from medrepro.metrics.classification import classification_metrics, per_class


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k = 60, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).round(1)  # rounding creates ties
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, p)
    onehot = np.eye(k)[y]
    assert m["mAP"] == pytest.approx(np.mean([average_precision_score(onehot[:, c], p[:, c]) for c in range(k)]))
    assert m["mAUC"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (50, 3))
    p = rng.random((50, 3)).round(2)
    m = classification_metrics(y, p, multilabel=True)
    assert m["mAP"] == pytest.approx(average_precision_score(y, p, average="macro"))
    assert m["mAUC"] == pytest.approx(roc_auc_score(y, p, average="macro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p > 0.5, average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5))


def test_s2_is_harmonic_mean_of_sensitivity_and_specificity():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.05
    pc = per_class(y, p)
    # class 0: tp 1, fn 1, fp 1, tn 3 → sens 0.5, spec 0.75
    assert pc["sensitivity"][0] == pytest.approx(0.5)
    assert pc["specificity"][0] == pytest.approx(0.75)
    assert pc["S2"][0] == pytest.approx(2 * 0.5 * 0.75 / 1.25)


def test_class_without_positives_is_left_out_of_the_mean():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    m = classification_metrics(y, p)
    assert m["mAUC"] == pytest.approx(1.0)
    assert m["mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize("multilabel", [False, True])
def test_metric_value_equals_the_full_metrics(multilabel):
    from medrepro.metrics.classification import metric_value

    rng = np.random.default_rng(4)
    for trial in range(10):
        y = rng.integers(0, 2, (120, 4)) if multilabel else rng.integers(0, 4, 120)
        if trial == 0:
            y = np.zeros_like(y) if multilabel else np.ones_like(y)  # classes without positives: NaN AUC/AP
        scores = np.round(rng.random((120, 4)), 2)  # ties
        full = classification_metrics(y, scores, multilabel)
        for name in ("accuracy", "mAUC", "mAP", "mS2", "macro_f1"):
            assert metric_value(y, scores, name, multilabel) == pytest.approx(full[name], abs=1e-12, nan_ok=True)
