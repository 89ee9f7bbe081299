"""The benchmarks' one way to take percentiles (numpy's linear interpolation between closest ranks)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> list[float]:
    """The `qs` percentiles (0..100) of `values`; NaN each with fewer than two values."""
    data = numpy.asarray(list(values) if not isinstance(values, (list, numpy.ndarray)) else values, dtype=float)
    if len(data) < 2:
        return [float("nan")] * len(qs)
    return [float(v) for v in numpy.percentile(data, qs)]


def percentile(values: Iterable[float], q: float) -> float:
    """The `q` percentile (0..100) of `values`, NaN with fewer than two."""
    return percentiles(values, (q,))[0]


def median(values: Iterable[float]) -> float:
    """The median of `values` without their NaNs (a run that gave no figure); NaN if none is left."""
    kept = [v for v in values if v == v]
    return float(numpy.median(kept)) if kept else float("nan")
