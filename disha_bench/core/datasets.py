"""Where task data comes from: local files (by path or under a data directory) or the hub.

Every task config has `source` ('auto' | 'hub' | 'local') and `data_files` ({split: path}); see
`disha_bench.config.suite.TaskConfig`. For one split, `load_split` does:

    data_files[split] given     -> that file (it must exist)
    source local / auto         -> the first candidate path that exists under the data directory
    source hub, or auto without a local file -> `datasets.load_dataset(hub id)`

The data directory is `--data-dir` or the environment variable `DISHA_BENCH_DATA`
(`resolve_data_dir`). Readers turn GLUE `.tsv` (csv.QUOTE_NONE, BOM stripped), `.jsonl`,
`.jsonl.gz` and `.json` (an array, as MetaMathQA ships) into lists of records; every problem in a
file becomes a `UserError` naming the file and, where there is one, the line.

    DISHA_BENCH_DATA=../shared/data HF_HUB_OFFLINE=1 python -m pytest tests/test_data.py
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from disha_bench.core.errors import UserError

ENV_VAR = "DISHA_BENCH_DATA"
SPLITS = ("train", "eval")

# GLUE sentences never exceed this, but csv's default limit (128 KiB) is below some QQP/MNLI
# parse-tree fields on other platforms; raise it once instead of failing on a real file.
csv.field_size_limit(2**24)


_PROBING = contextvars.ContextVar("disha_bench_data_probing", default=False)


@contextlib.contextmanager
def probing():
    """Within this block `load_split` only checks that a split is available (a local file exists,
    or the hub - offline: its cache - serves it) and returns no records: `disha_bench.running.preflight`
    runs each task's real `load` this way before any run starts."""
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)


def resolve_data_dir(cli_value: str | None) -> str | None:
    """The data directory: `--data-dir` when given, else $DISHA_BENCH_DATA, else None (hub only)."""
    value = cli_value or os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(f"data directory '{value}' does not exist", key="--data-dir" if cli_value else ENV_VAR)
    return str(path.resolve())


@dataclass(frozen=True)
class HubSpec:
    """A hub dataset split: `datasets.load_dataset(path, name, split=split)`."""

    path: str
    name: str | None
    split: str

    def __str__(self) -> str:
        return f"{self.path}" + (f" ({self.name})" if self.name else "") + f", split {self.split}"


def load_split(
    config: dict[str, Any],
    data_dir: str | None,
    split: str,
    *,
    local: Sequence[str],
    read_local: Callable[[Path], list[dict]],
    hub: HubSpec | None,
    from_hub: Callable[[dict], dict] = lambda row: row,
    what: str | None = None,
) -> list[dict]:
    """Records of one split, from a local file or the hub (see the module docstring).

    `local` are paths relative to the data directory, tried in order; `read_local` parses one
    file; `from_hub` converts a hub row into the same record shape as `read_local` returns.
    """
    what = what or config.get("name", "task")
    source = config.get("source", "auto")
    files = config.get("data_files") or {}
    unknown = sorted(set(files) - set(SPLITS))
    if unknown:  # e.g. `validation:` or `test:` would otherwise be ignored without a word
        raise UserError(f"unknown split '{unknown[0]}'; expected one of {list(SPLITS)}", key=f"data_files.{unknown[0]}")
    explicit = files.get(split)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"{what}: data file for split '{split}' not found", file=str(path), key=f"data_files.{split}")
        return [] if _PROBING.get() else read_local(path)
    if source in ("local", "auto"):
        found = find_local(data_dir, local)
        if found is not None:
            return [] if _PROBING.get() else read_local(found)
        if source == "local" or hub is None:
            raise UserError(f"{what}: no local data for split '{split}'; {_where_hint(data_dir, local, split)}", key="source")
    if hub is None:  # source: hub for a task that has no hub dataset
        raise UserError(f"{what}: no hub dataset for split '{split}'; use source local or auto, {_where_hint(data_dir, local, split)}", key="source")
    return load_hub(hub, from_hub, what=what, hint=_where_hint(data_dir, local, split))


def find_local(data_dir: str | None, candidates: Sequence[str]) -> Path | None:
    if not data_dir:
        return None
    for relative in candidates:
        path = Path(data_dir) / relative
        if path.is_file():
            return path
    return None


def _where_hint(data_dir: str | None, candidates: Sequence[str], split: str) -> str:
    if not candidates:
        return f"give `data_files: {{{split}: <path>}}` in the task config"
    if data_dir:
        return f"expected {candidates[0]} under the data directory {data_dir}, or `data_files: {{{split}: <path>}}`"
    return (f"set --data-dir or {ENV_VAR} to a directory holding {candidates[0]}, "
            f"or give `data_files: {{{split}: <path>}}` in the task config")


def load_hub(spec: HubSpec, convert: Callable[[dict], dict], *, what: str, hint: str) -> list[dict]:
    """Rows of a hub split, converted; any failure (offline, missing id) becomes one UserError."""
    try:
        import datasets

        dataset = datasets.load_dataset(spec.path, spec.name, split=spec.split)
        if _PROBING.get():
            return []
    except Exception as err:  # datasets raises ConnectionError, OSError, ValueError, its own types...
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline else f"{type(err).__name__}: {_first_line(err)}"
        raise UserError(f"{what}: cannot load {spec} from the hub ({why}); to use local files, {hint}", key="source") from None
    return [convert(dict(row)) for row in dataset]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


# ---------------------------------------------------------------------------------------------
# Readers


def read_tsv(path: Path, *, header: bool, columns: int | None = None) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header fields or None, [(line number, fields)]) of a GLUE-style .tsv file.

    GLUE files are not CSV-quoted: a field may start with `"` and hold tabs-free text with
    unbalanced quotes (MRPC, SST-2), so quoting is off (csv.QUOTE_NONE), as in GLUE's own and
    HF's loaders; the default dialect would swallow several lines into one field. `utf-8-sig`
    drops MRPC's BOM. `columns` is the minimum number of fields a data row needs.
    """
    text = _read_text(path, "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    head: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for fields in reader:
        line = reader.line_num
        if not fields or fields == [""]:
            continue  # blank line (a trailing newline pair)
        if header and head is None:
            head = [f.strip() for f in fields]
            continue
        need = columns if columns is not None else (len(head) if head else 1)
        if len(fields) < need:
            raise UserError(f"line {line}: {len(fields)} tab-separated fields, expected {need}", file=str(path))
        rows.append((line, fields))
    if header and head is None:
        raise UserError("empty file: expected a header line", file=str(path))
    return head, rows


def require_columns(head: list[str], names: Sequence[str], path: Path) -> list[int]:
    """Indices of `names` in a header line, or a UserError listing what the header has."""
    missing = [n for n in names if n not in head]
    if missing:
        raise UserError(f"line 1: header lacks column(s) {missing}; it has {head}", file=str(path))
    return [head.index(n) for n in names]


def read_jsonl(path: Path) -> list[dict]:
    """Records of a .jsonl / .jsonl.gz file, or of a .json file holding one array of objects."""
    text = _read_text(path, "utf-8")
    if path.name.endswith(".json") and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"line {err.lineno}: not valid JSON ({err.msg})", file=str(path)) from None
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise UserError(f"item {i}: expected a JSON object, got {type(record).__name__}", file=str(path))
        return records
    return list(_jsonl_records(text, path))


def _jsonl_records(text: str, path: Path) -> Iterator[dict]:
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"line {line_no}: not valid JSON ({err.msg})", file=str(path)) from None
        if not isinstance(record, dict):
            raise UserError(f"line {line_no}: expected a JSON object, got {type(record).__name__}", file=str(path))
        record.setdefault("_line", line_no)
        yield record


def read_records(path: Path, fields: Sequence[str]) -> list[dict]:
    """The records of a JSON Lines file, each with these string fields; an empty file is an error."""
    records = read_jsonl(path)
    for record in records:
        require_fields(record, fields, path)
    if not records:
        raise UserError("no records", file=str(path))
    return records


def require_fields(record: dict, names: Sequence[str], path: Path | str) -> None:
    """Every name must be present and a string; the error names the record's line."""
    for name in names:
        if not isinstance(record.get(name), str):
            where = f"line {record['_line']}: " if "_line" in record else ""
            got = "missing" if name not in record else f"a {type(record[name]).__name__}"
            raise UserError(f"{where}field '{name}' is {got}; expected a string", file=str(path))


def _read_text(path: Path, encoding: str) -> str:
    """The decoded text of a (possibly gzipped) data file; bad bytes are a UserError naming the line."""
    raw = _read_bytes(path)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(f"line {line}: not UTF-8 text ({err.reason})", file=str(path)) from None


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("data file not found", file=str(path)) from None
    except OSError as err:
        raise UserError(f"cannot read ({err.strerror or err})", file=str(path)) from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"corrupt gzip file ({err})", file=str(path)) from None
    return data
