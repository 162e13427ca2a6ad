"""GLUE's official metrics, computed with scikit-learn and scipy (no hub metric scripts offline).

    python -m pytest tests/test_glue.py -k metrics

CoLA: Matthews correlation; STS-B: Pearson and Spearman; MRPC and QQP: F1 (of class 1) and
accuracy; every other task: accuracy. All values are plain Python floats in [−1, 1] or [0, 1].
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

from disha_bench.contracts.metrics import Metric, bounded_score, share_of_examples

ACCURACY = share_of_examples("accuracy", "share of evaluation examples classified correctly")
F1 = bounded_score("f1", "F1 of the positive class (1), over the whole evaluation set")
MCC = bounded_score("mcc", "Matthews correlation of predicted and true classes", lower=-1.0)
PEARSON = bounded_score("pearson", "Pearson correlation of predicted and true scores", lower=-1.0)
SPEARMAN = bounded_score("spearman", "Spearman rank correlation of predicted and true scores", lower=-1.0)
DECLARED: dict[str, tuple[Metric, ...]] = {
    "mcc": (MCC, ACCURACY),
    "correlation": (PEARSON, SPEARMAN, bounded_score("pearson_spearman_mean", "mean of Pearson and Spearman", lower=-1.0)),
    "f1": (ACCURACY, F1, bounded_score("accuracy_f1_mean", "mean of accuracy and F1")),
    "accuracy": (ACCURACY,),
}
"""The declarations of what `glue_metrics` reports, by kind."""


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    if not labels:
        return 0.0
    return sum(int(a == b) for a, b in zip(labels, predictions)) / len(labels)


def f1(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Binary F1 of the positive class 1, as GLUE reports for MRPC and QQP."""
    from sklearn.metrics import f1_score

    # zero_division=0: a model that never predicts 1 scores 0, without sklearn's warning.
    return float(f1_score(list(labels), list(predictions), pos_label=1, average="binary", zero_division=0))


def mcc(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Matthews correlation (CoLA); 0 when it is undefined (one class only), as sklearn does."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(list(labels), list(predictions)))


def pearson(labels: Sequence[float], predictions: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, labels, predictions)


def spearman(labels: Sequence[float], predictions: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, labels, predictions)


def _correlation(fn, labels, predictions) -> float:
    # A constant prediction (an untrained regression head can give one) has no defined
    # correlation; scipy warns and returns nan. Report 0 ("no linear/rank agreement") so results
    # stay finite numbers in JSON and leaderboards.
    if len(labels) < 2 or len(set(predictions)) < 2 or len(set(labels)) < 2:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(list(labels), list(predictions))[0])
    return 0.0 if math.isnan(value) else value


def glue_metrics(kind: str, labels: Sequence, predictions: Sequence) -> dict[str, float]:
    """The metric set of one GLUE task kind: 'mcc', 'correlation', 'f1' or 'accuracy'."""
    if kind == "mcc":
        return {"mcc": mcc(labels, predictions), "accuracy": accuracy(labels, predictions)}
    if kind == "correlation":
        p, s = pearson(labels, predictions), spearman(labels, predictions)
        return {"pearson": p, "spearman": s, "pearson_spearman_mean": (p + s) / 2}
    if kind == "f1":
        a, f = accuracy(labels, predictions), f1(labels, predictions)
        return {"accuracy": a, "f1": f, "accuracy_f1_mean": (a + f) / 2}
    if kind == "accuracy":
        return {"accuracy": accuracy(labels, predictions)}
    raise ValueError(f"unknown GLUE metric kind {kind!r}")
