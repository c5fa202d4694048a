"""`bcos-clip bench`: timing rows of plain vs B-cos towers, explanations, zero-shot and distillation
(``run``), the official-style reference formulas, the timer, the report, and the synthetic data writers
the ``benchmarks/`` scripts share."""
