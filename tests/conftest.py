"""Shared test fixtures: the offline environment, the shared data lookup, the packaged tiny models.

    python -m pytest -m "not slow"

- Offline: the hub is never contacted (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE), set before any test
  module imports transformers or datasets; `offline_env` is that environment for a subprocess,
  with an empty hub cache of its own.
- Shared data (GLUE, GSM8K, evaluate's GLUE metric): `$DISHA_BENCH_DATA`, else `../shared/data`
  beside the repository. `@pytest.mark.needs_data("glue")` skips a test with a reason that names
  the missing folder; the `shared_data` fixture gives the folder (or skips the same way).
- Tiny models: `tiny_llama` (random 2-layer Llama with SmolLM2's tokenizer) and
  `tiny_bert_tokenizer`, loaded once per session from the packaged models.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
for _name, _value in OFFLINE.items():
    os.environ.setdefault(_name, _value)
if not os.environ.get("DISHA_BENCH_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["DISHA_BENCH_DATA"] = str(REPO.parent / "shared" / "data")


def shared_data_dir() -> Path:
    """Where the shared data is looked for (it may not exist)."""
    return Path(os.environ.get("DISHA_BENCH_DATA") or REPO.parent / "shared" / "data")


def missing_data_reason(subdir: str = "") -> str | None:
    """None when `<shared data>/<subdir>` exists, else why a test that needs it is skipped."""
    path = shared_data_dir() / subdir
    if path.is_dir():
        return None
    return f"needs the shared data folder {path} (set DISHA_BENCH_DATA or put it at ../shared/data)"


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(subdir): skip, naming the folder, when the shared data lacks it")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs_data"):
        reason = missing_data_reason(*marker.args)
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    reason = missing_data_reason()
    if reason:
        pytest.skip(reason)
    return shared_data_dir()


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, this checkout first on the path, an empty hub cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HF_HUB_CACHE", "HF_DATASETS_CACHE"))}
    env.update(OFFLINE, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               HF_HOME=str(tmp_path / "hf-home"), DS_ACCELERATOR="cpu")
    return env


@pytest.fixture(scope="session")
def tiny_llama():
    """(model, tokenizer) of the packaged random 2-layer Llama, causal-LM head."""
    from disha_bench import models

    return models.load_model("tiny-llama", "causal_lm"), models.load_tokenizer("tiny-llama")


@pytest.fixture(scope="session")
def tiny_bert_tokenizer():
    from disha_bench import models

    return models.load_tokenizer("tiny-bert")
