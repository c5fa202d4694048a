"""Benchmark suite definitions and the dataset grouping table, shipped as ``bcos_clip.eval_suites``
(read through ``bcos_clip.evaluation.suite_files`` with importlib.resources)."""
