"""Data sources: readers, local/hub lookup, errors, and the real files in the shared data folder.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_data.py

Tests that read real data find it through $DISHA_BENCH_DATA or `../shared/data` beside the repo
and are skipped (with the reason) when neither exists. The hub is never contacted: every hub test
replaces `datasets.load_dataset`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from disha_bench import tasks
from disha_bench.core import datasets as data
from disha_bench.core.errors import UserError

DATA = Path(os.environ.get("DISHA_BENCH_DATA", "."))  # conftest.py: $DISHA_BENCH_DATA or ../shared/data
needs_data = pytest.mark.needs_data("glue")


def config(name: str, **extra) -> dict:
    task = tasks.get(name)
    return {**task.options, "name": name, "train_limit": None, "eval_limit": None, "sample_seed": 0,
            "source": "auto", "data_files": None, **extra}


@pytest.fixture
def no_hub(monkeypatch):
    """Any hub call fails the test: local data must be enough."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"hub contacted: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


# --- data directory -------------------------------------------------------------------------


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DISHA_BENCH_DATA", raising=False)
    assert data.resolve_data_dir(None) is None
    assert data.resolve_data_dir(str(tmp_path)) == str(tmp_path.resolve())
    monkeypatch.setenv("DISHA_BENCH_DATA", str(tmp_path))
    assert data.resolve_data_dir(None) == str(tmp_path.resolve())
    with pytest.raises(UserError, match="--data-dir: data directory '/nonexistent' does not exist"):
        data.resolve_data_dir("/nonexistent")
    monkeypatch.setenv("DISHA_BENCH_DATA", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="DISHA_BENCH_DATA"):
        data.resolve_data_dir(None)


# --- readers -------------------------------------------------------------------------------------


def test_tsv_quotes_are_text_and_bom_is_dropped(tmp_path):
    path = tmp_path / "x.tsv"
    # An unbalanced quote would make csv's default dialect swallow the next line into one field.
    path.write_bytes('\ufeffQuality\ta\tb\n1\t"He said\tit\n0\tx\ty "z"\n'.encode("utf-8"))
    head, rows = data.read_tsv(path, header=True)
    assert head == ["Quality", "a", "b"]
    assert rows == [(2, ["1", '"He said', "it"]), (3, ["0", "x", 'y "z"'])]


def test_tsv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("a\tb\tc\n1\t2\t3\n1\t2\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: line 3: 2 tab-separated fields, expected 3"):
        data.read_tsv(path, header=True)
    path.write_bytes(b"a\tb\n1\t\xff\n")
    with pytest.raises(UserError, match="line 2: not UTF-8"):
        data.read_tsv(path, header=True)
    with pytest.raises(UserError, match="data file not found"):
        data.read_tsv(tmp_path / "none.tsv", header=True)


def test_jsonl_plain_gzip_and_json_array(tmp_path):
    rows = [{"question": "q1", "answer": "#### 1"}, {"question": "q2", "answer": "#### 2"}]
    plain = tmp_path / "a.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows))
    for path in (plain, packed):
        assert [{k: r[k] for k in ("question", "answer")} for r in data.read_jsonl(path)] == rows
        assert [r["_line"] for r in data.read_jsonl(path)] == [1, 2]
    assert data.read_jsonl(array) == rows


def test_jsonl_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n{"question": \n')
    with pytest.raises(UserError, match=rf"{re.escape(str(bad))}: line 2: not valid JSON"):
        data.read_jsonl(bad)
    bad.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2: expected a JSON object"):
        data.read_jsonl(bad)
    corrupt = tmp_path / "c.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(UserError, match="corrupt gzip"):
        data.read_jsonl(corrupt)
    record = data.read_jsonl(_write(tmp_path / "f.jsonl", '{"question": 3}\n'))[0]
    with pytest.raises(UserError, match="line 1: field 'question' is a int"):
        data.require_fields(record, ["question"], "f.jsonl")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- lookup: explicit files, data dir, hub --------------------------------------------------------


def test_explicit_data_file_missing_names_it(tmp_path):
    cfg = config("gsm8k", data_files={"train": str(tmp_path / "nope.jsonl")})
    with pytest.raises(UserError, match=r"nope\.jsonl: data_files\.train: gsm8k: data file for split 'train' not found"):
        tasks.get("gsm8k").load(cfg, None)


def test_unknown_data_files_split_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"data_files\.validation: unknown split 'validation'; expected one of \['train', 'eval'\]"):
        tasks.get("rte").load(config("rte", data_files={"validation": str(tmp_path / "dev.tsv")}), None)


def test_local_source_without_files_says_where(tmp_path):
    with pytest.raises(UserError, match=r"set --data-dir or DISHA_BENCH_DATA to a directory holding glue/RTE/train\.tsv"):
        tasks.get("rte").load(config("rte", source="local"), None)
    with pytest.raises(UserError, match=rf"expected glue/RTE/train\.tsv under the data directory {re.escape(str(tmp_path))}"):
        tasks.get("rte").load(config("rte", source="local"), str(tmp_path))


def test_hub_offline_failure_says_what_to_set(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        tasks.get("sst2").load(config("sst2"), None)
    message = str(err.value)
    assert "cannot load nyu-mll/glue (sst2), split train from the hub" in message
    assert "--data-dir or DISHA_BENCH_DATA" in message and "glue/SST-2/train.tsv" in message


def test_hub_path_with_mocked_load_dataset(monkeypatch):
    import datasets

    calls = []
    rows = {
        ("nyu-mll/glue", "mnli", "train"): [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}],
        ("nyu-mll/glue", "mnli", "validation_matched"): [{"premise": "p2", "hypothesis": "h2", "label": 1, "idx": 0}],
        ("openai/gsm8k", "main", "train"): [{"question": "q", "answer": "a\n#### 3"}],
        ("openai/gsm8k", "main", "test"): [{"question": "t", "answer": "b\n#### 4"}],
        ("meta-math/MetaMathQA", None, "train"): [{"query": "mq", "response": "so 2+2=4.\nThe answer is: 4", "type": "GSM_Rephrased"}],
    }

    def fake(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return rows[(path, name, split)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    train, evaluation = tasks.get("mnli").load(config("mnli", source="hub"), None)
    assert train == [{"text": ["p", "h"], "label": 2, "line": 0}] and evaluation[0]["text"] == ["p2", "h2"]
    train, evaluation = tasks.get("gsm8k").load(config("gsm8k"), None)
    assert train == [{"question": "q", "answer": "a\n#### 3"}] and evaluation[0]["question"] == "t"
    train, _ = tasks.get("gsm8k").load(config("gsm8k", train_source="metamathqa"), None)
    # The raw response travels too: the paper's prompt (gsm8k `prompt: alpaca`) trains on it as written.
    assert train == [{"question": "mq", "answer": "so 2+2=4.\nThe answer is: 4\n#### 4", "response": "so 2+2=4.\nThe answer is: 4"}]
    assert calls[:2] == [("nyu-mll/glue", "mnli", "train"), ("nyu-mll/glue", "mnli", "validation_matched")]


@needs_data
def test_source_hub_ignores_local_files(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 7}])
    train, _ = tasks.get("wnli").load(config("wnli", source="hub"), str(DATA))
    assert train == [{"text": ["a", "b"], "label": 0, "line": 7}]


def test_source_hub_without_a_hub_dataset_says_so(tmp_path, no_hub):
    # A task that reads only local files (hub=None) asked for the hub: a clear error, not "cannot load None".
    with pytest.raises(UserError, match=r"source: mytask: no hub dataset for split 'train'; use source local or auto"):
        data.load_split({"source": "hub"}, str(tmp_path), "train", local=["mytask/train.jsonl"], read_local=data.read_jsonl,
                        hub=None, what="mytask")


# --- real files -----------------------------------------------------------------------------------


def source_counts() -> dict[tuple[str, str], int]:
    """(directory, split) -> rows, read from the table in glue/SOURCES.md."""
    counts = {}
    for line in (DATA / "glue" / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[1] in ("train", "dev") and cells[2].isdigit():
            counts[(cells[0], cells[1])] = int(cells[2])
    return counts


GLUE_LOCAL = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI"}


@needs_data
@pytest.mark.parametrize("name", sorted(GLUE_LOCAL))
def test_glue_row_counts_match_sources(name, no_hub):
    counts = source_counts()
    assert len(counts) == 12, counts
    train, evaluation = tasks.get(name).load(config(name), str(DATA))
    assert (len(train), len(evaluation)) == (counts[(GLUE_LOCAL[name], "train")], counts[(GLUE_LOCAL[name], "dev")])
    labels = {r["label"] for r in train}
    if name == "stsb":
        assert min(labels) == 0.0 and max(labels) == 5.0
    else:
        assert labels == {0, 1}


@needs_data
def test_glue_label_counts_match_sources(no_hub):
    # SOURCES.md: CoLA dev 721 ones / 322 zeros; MRPC train 2474 / 1194; RTE train 1249 entailment.
    _, cola_dev = tasks.get("cola").load(config("cola"), str(DATA))
    assert sum(r["label"] for r in cola_dev) == 721
    mrpc_train, _ = tasks.get("mrpc").load(config("mrpc"), str(DATA))
    assert sum(r["label"] for r in mrpc_train) == 2474
    rte_train, _ = tasks.get("rte").load(config("rte"), str(DATA))
    assert sum(r["label"] == 0 for r in rte_train) == 1249
    # MRPC is untokenised with its quotes intact (QUOTE_NONE), and the BOM did not hide the header.
    assert any('whom he called "the witness",' in r["text"][0] for r in mrpc_train)


@needs_data
def test_gsm8k_loads_locally(no_hub):
    train, test = tasks.get("gsm8k").load(config("gsm8k"), str(DATA))
    assert (len(train), len(test)) == (7473, 1319)
    assert all("\n#### " in r["answer"] for r in train + test)


@needs_data
def test_limits_are_seeded_subsets(no_hub):
    task = tasks.get("rte")
    a = task.load(config("rte", train_limit=20, eval_limit=5, sample_seed=3), str(DATA))
    b = task.load(config("rte", train_limit=20, eval_limit=5, sample_seed=3), str(DATA))
    c = task.load(config("rte", train_limit=20, eval_limit=5, sample_seed=4), str(DATA))
    assert (len(a[0]), len(a[1])) == (20, 5)
    assert a == b and a[0] != c[0]


@needs_data
def test_data_files_override_the_data_dir(tmp_path, no_hub):
    dev = tmp_path / "dev.tsv"
    dev.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    _, evaluation = tasks.get("rte").load(config("rte", data_files={"eval": str(dev)}), str(DATA))
    assert evaluation == [{"text": ["a", "b"], "label": 0, "line": 2}]
