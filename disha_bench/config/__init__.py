"""Configuration: the typed config system (`schema.py`) and the suite file built on it (`suite.py`).

    python3 -m disha_bench.cli validate suites/smoke.yaml

`schema.py` holds the strict typed models, one-line errors and YAML 1.2 numbers; `suite.py` the suite
keys, `--set` overrides and the expansion of a suite into runs and run ids.
"""
