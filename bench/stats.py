"""Small statistics for benchmark figures."""

from __future__ import annotations

from collections.abc import Sequence


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(ours: float | None, theirs: float | None, *, higher_is_better: bool = False) -> str:
    """How many times better Chorus is than the peer (``2.0x``); '-' when either figure is missing."""
    if ours is None or theirs is None or ours != ours or theirs != theirs or min(ours, theirs) <= 0:
        return "-"
    value = ours / theirs if higher_is_better else theirs / ours
    return f"{value:.1f}x"
