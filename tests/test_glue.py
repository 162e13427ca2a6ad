"""GLUE: metrics on hand-computed cases, label checks, and predict + score on the tiny BERT.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_glue.py
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from disha_bench import tasks
from disha_bench.core.errors import UserError
from disha_bench.tasks import metrics_glue
from disha_bench.tasks.base import EvalSettings, collate
from disha_bench.tasks.glue import SPECS

DATA = Path(os.environ.get("DISHA_BENCH_DATA", "."))  # conftest.py: $DISHA_BENCH_DATA or ../shared/data
needs_data = pytest.mark.needs_data("glue")


def config(name: str, **extra) -> dict:
    return {"name": name, "train_limit": None, "eval_limit": None, "sample_seed": 0, "source": "auto", "data_files": None, **extra}


# --- metrics: hand-computed values -----------------------------------------------------------------

LABELS = [1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 0, 0, 0, 1]  # TP 2, FN 1, TN 2, FP 1


def test_binary_metrics_by_hand():
    assert metrics_glue.accuracy(LABELS, PREDS) == pytest.approx(4 / 6)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(81) = 1/3
    assert metrics_glue.mcc(LABELS, PREDS) == pytest.approx(1 / 3)
    # precision 2/3, recall 2/3 -> F1 2/3
    assert metrics_glue.f1(LABELS, PREDS) == pytest.approx(2 / 3)
    assert metrics_glue.f1([1, 0, 1, 1], [1, 0, 0, 0]) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert metrics_glue.mcc([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert metrics_glue.mcc([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert metrics_glue.mcc([1, 0, 1], [1, 1, 1]) == 0.0  # undefined: one predicted class
    assert metrics_glue.f1([1, 0], [0, 0]) == 0.0


def test_correlations_by_hand():
    assert metrics_glue.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): covariance 4, variances 5 -> 0.8
    assert metrics_glue.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics_glue.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # monotone but not linear: Spearman 1, Pearson 149 / sqrt(5 * 7205)
    assert metrics_glue.spearman([1, 2, 3, 4], [1, 2, 3, 100]) == pytest.approx(1.0)
    assert metrics_glue.pearson([1, 2, 3, 4], [1, 2, 3, 100]) == pytest.approx(149 / math.sqrt(5 * 7205))
    assert metrics_glue.pearson([1, 2, 3], [2.5, 2.5, 2.5]) == 0.0  # constant prediction: undefined -> 0


def test_task_scores_and_primary_metrics():
    expected = {"cola": "mcc", "sst2": "accuracy", "mrpc": "accuracy", "stsb": "pearson", "qqp": "accuracy",
                "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}
    for name, primary in expected.items():
        task = tasks.get(name)
        assert task.primary_metric == primary and task.head == "sequence_classification"
        assert task.num_labels == {"stsb": 1, "mnli": 3}.get(name, 2)
    mrpc = tasks.get("mrpc").score([{"label": a, "prediction": b} for a, b in zip(LABELS, PREDS)])
    assert mrpc == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "accuracy_f1_mean": 2 / 3})
    cola = tasks.get("cola").score([{"label": a, "prediction": b} for a, b in zip(LABELS, PREDS)])
    assert cola["mcc"] == pytest.approx(1 / 3)
    stsb = tasks.get("stsb").score([{"label": a, "prediction": b} for a, b in zip([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])])
    assert stsb == pytest.approx({"pearson": 0.8, "spearman": 0.8, "pearson_spearman_mean": 0.8})


# --- label checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,header,row,bad", [
    ("rte", "index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailed", "label 'entailed'"),
    ("sst2", "sentence\tlabel", "nice film\t2", "label '2'"),
    ("cola", None, "gj04\tx\t\tSome sentence.", "label 'x'"),
    ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
     "0\tg\tf\ty\to\tn\tn\ta\tb\t5.5", "score '5.5'"),
])
def test_unexpected_label_names_file_and_line(tmp_path, name, header, row, bad):
    path = tmp_path / "train.tsv"
    good = {"rte": "1\tc\td\tnot_entailment", "sst2": "bad film\t0", "cola": "gj04\t1\t\tA sentence.",
            "stsb": "1\tg\tf\ty\to\tn\tn\tc\td\t3.2"}[name]
    path.write_text("\n".join(filter(None, [header, good, row])) + "\n")
    line = 3 if header else 2
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: line {line}: unexpected {re.escape(bad)}"):
        tasks.get(name).load(config(name, data_files={"train": str(path), "eval": str(path)}), None)


def test_missing_header_column_is_reported(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n")
    with pytest.raises(UserError, match=r"line 1: header lacks column\(s\) \['label'\]"):
        tasks.get("rte").load(config("rte", data_files={"train": str(path), "eval": str(path)}), None)


def test_qqp_skips_rows_with_a_missing_question(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\ta?\tb?\t1\n2\t3\t4\tbroken?\n")
    train, _ = tasks.get("qqp").load(config("qqp", data_files={"train": str(path), "eval": str(path)}), None)
    assert train == [{"text": ["a?", "b?"], "label": 1, "line": 2}]


def test_mnli_local_layout(tmp_path):
    folder = tmp_path / "glue" / "MNLI"
    folder.mkdir(parents=True)
    head = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    (folder / "train.tsv").write_text(f"{head}\n0\t1\t1e\tg\t(\t(\t(\t(\tA man.\tA person.\tentailment\tentailment\n")
    (folder / "dev_matched.tsv").write_text(f"{head}\n0\t1\t1c\tg\t(\t(\t(\t(\tA man.\tNobody.\tcontradiction\tcontradiction\n")
    train, dev = tasks.get("mnli").load(config("mnli", source="local"), str(tmp_path))
    assert train[0]["label"] == 0 and dev[0] == {"text": ["A man.", "Nobody."], "label": 2, "line": 2}


# --- predict + score on the tiny BERT ---------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"])
def test_predict_and_score_on_tiny_bert(name, tiny_bert_tokenizer):
    from disha_bench import models

    task = tasks.get(name)
    train, evaluation = task.load(config(name, train_limit=4, eval_limit=12), str(DATA))
    model = models.load_model("tiny-bert", task.head, task.num_labels)
    batch = collate([task.encode(r, tiny_bert_tokenizer, 64) for r in train], tiny_bert_tokenizer.pad_token_id)
    assert batch["labels"].dtype.is_floating_point == (name == "stsb")
    assert model(**batch).loss is not None  # the features fit the head (regression or classes)
    predictions = task.predict(model, tiny_bert_tokenizer, evaluation, EvalSettings(batch_size=8))
    assert len(predictions) == 12
    metrics = task.score(predictions)
    assert task.primary_metric in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_every_spec_is_registered():
    assert {s.name for s in SPECS} <= set(dict(tasks.REGISTRY.items()))
