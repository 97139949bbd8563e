"""Speed measurements and evaluations, each run as ``python -m benchmarks.<name>``.

Everything timed goes through ``benchmarks.timing`` (alternated variants, medians, ratios
against a floor measured in the same run, the docs section between markers); the toy
checkpoint in-process is ``benchmarks.toy_inprocess``. Raw results go to
``benchmarks/results/``, tables into ``docs/``.
"""
