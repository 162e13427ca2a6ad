"""Atomic writes: a reader sees a file's old content or the complete new one, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: the permissions a plain open() would give a new file


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit fsync it and rename it onto
    `path`, so a reader sees either the old content or the complete new one, never half a file.
    On an error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide reports and results from the group
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that `path` holds either its old content or the complete new one."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and tensors sneak into metrics; store them as plain numbers.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
