"""Analysis: result files turned into conclusions.

    python3 -m disha_bench.cli report results/smoke
    python3 -m disha_bench.cli check results/smoke

`results.py` (the result-file schema and atomic writes), `measures.py` (loading checked results, metric
domains), `convergence.py`, `stats.py`, `compare.py` (one task's per-seed figures and paired comparisons
against the reference), `verdicts.py` (margins and the better / worse / matches rule), `findings.py`, `report.py` with `report_format.py` / `report_tables.py`,
`plots.py`, and `check.py` (the convergence regression check).
"""
