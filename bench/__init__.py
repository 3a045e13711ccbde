"""Benchmarks, run by ``make bench`` (never in CI).

Each benchmark module of this package has ``run(scale: Scale) -> list[Result]``. Every result that
an issue sets a target for is printed beside its baseline measured in the same run, as a ratio,
because the machines are shared and noisy: absolute numbers drift, ratios much less.
"""
