"""The one error type users see: bad input, reported in one line, exit code 2.

Every check that rejects user input raises `UserError` with the file, the key path and what was
expected; the CLI prints `error: <message>` and exits 2 without a traceback.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Iterable


class UserError(Exception):
    """Bad input from the user: a file, a key, a name or a value that cannot be used."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix for the closest choice, or a list of the valid ones."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "expected one of: " + ", ".join(choices)


def ensure_writable(folder: str | Path, what: str) -> None:
    """UserError, before any work, when `folder` could not be created or written (a read-only --out).
    Nothing is left behind: a probe file is made and removed in the nearest existing folder on the way."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot write the {what} here: {existing} is a file", file=str(folder))
    try:
        fd, probe = tempfile.mkstemp(prefix=".disha-bench-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"cannot write the {what} here: {existing}: {err.strerror or err}; choose another folder",
                        file=str(folder)) from None
