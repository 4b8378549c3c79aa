"""Summary statistics for latency samples."""

from __future__ import annotations


def percentile(values, q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of `values` (a sequence or a numpy
    array), interpolated linearly between the two nearest ranks as
    numpy.percentile does by default; nan if there are none."""
    xs = sorted(values.tolist() if hasattr(values, "tolist") else values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
