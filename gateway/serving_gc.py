"""Garbage-collector settings for a serving process (``gateway serve``, each ``--workers`` child).

Every request allocates a few thousand short-lived objects (the parsed body, the context, the
ledger record, Litestar's and aiohttp's own), so CPython's default generation-0 threshold (700
allocations) runs a collection every request or so, and every few hundred requests a full one
walks everything the app built at start-up (config, classifier, tokenizer tables, Litestar's
routes). Those full collections were the p99 at 50 connections (docs/benchmarks.md).

So, once the app is built: ``gc.freeze()`` moves everything alive at start-up out of the
collector's sight (it lives as long as the process anyway), and generation 0 runs every 20,000
allocations instead of 700. Cycles are still collected; reference counting frees the rest at
once, as before. Not applied by ``create_app`` itself: tests build many apps in one process,
and freezing each would keep them all.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "tune_gc_for_serving"]

# Allocations between generation-0 collections (CPython's default: 700). Measured on the
# benchmark config at 50 connections: 700 -> p99 92 ms; 20,000 with freeze -> p99 36 ms.
GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 50


def tune_gc_for_serving() -> None:
    """Freeze what start-up built and raise the collection thresholds (call once, after the
    app is built and before it serves)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
