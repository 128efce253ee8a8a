"""Timing helpers shared by the benchmarks: interleaved samples and Markdown tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def interleaved(contenders: list[tuple[str, Callable[[], None]]],
                samples: int) -> list[tuple[str, list[float]]]:
    """Time each contender `samples` times, taking turns: a noisy spell of the machine then
    slows every contender alike instead of one of them, so the ratios hold."""
    for _, fn in contenders:
        fn()  # warm up caches and lazy paths; not counted
    times: list[list[float]] = [[] for _ in contenders]
    for _ in range(samples):
        for (_, fn), out in zip(contenders, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [(name, out) for (name, _), out in zip(contenders, times, strict=True)]


def report_times(title: str, rows: list[tuple[str, list[float]]], baseline: str) -> None:
    base = statistics.median(dict(rows)[baseline])
    print(f"\n### {title}\n")
    print(f"| what | p50 ms | p90 ms | p50 / {baseline} |")
    print("|---|---:|---:|---:|")
    for name, values in rows:
        p50 = statistics.median(values)
        print(f"| {name} | {p50 * 1000:.1f} | {percentile(values, 0.9) * 1000:.1f} | "
              f"{p50 / base:.2f} |")
