"""gateway serve's collector settings: start-up objects frozen, fewer generation-0 runs."""

from __future__ import annotations

import gc

from gateway.serving_gc import GEN0_THRESHOLD, tune_gc_for_serving


def test_tuning_freezes_what_exists_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        alive = [object() for _ in range(10)]
        tune_gc_for_serving()
        assert gc.get_threshold()[0] == GEN0_THRESHOLD > before[0]
        assert gc.get_freeze_count() >= len(alive)
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
        gc.set_threshold(*before)
