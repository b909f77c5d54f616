from __future__ import annotations

from gateway.routing.health import TierHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tier_is_skipped_after_the_configured_failures_in_a_row() -> None:
    clock = Clock()
    health = TierHealth(failures=3, cooldown_s=30, clock=clock)
    health.record_failure("large")
    health.record_failure("large")
    assert health.unhealthy() == frozenset()
    health.record_failure("large")
    assert health.unhealthy() == {"large"}
    assert health.snapshot()["large"]["retry_in_s"] == 30.0


def test_a_success_resets_the_count() -> None:
    health = TierHealth(failures=2, cooldown_s=30, clock=Clock())
    health.record_failure("small")
    health.record_success("small")
    health.record_failure("small")
    assert health.unhealthy() == frozenset()


def test_after_the_cooldown_exactly_one_trial_goes_through() -> None:
    clock = Clock()
    health = TierHealth(failures=1, cooldown_s=10, clock=clock)
    health.record_failure("large")
    clock.now += 10
    assert health.unhealthy() == frozenset(), "the first caller after the cooldown is the trial"
    assert health.unhealthy() == {"large"}, "others skip while the trial is out"
    health.record_success("large")
    assert health.unhealthy() == frozenset()


def test_a_failed_trial_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    health = TierHealth(failures=1, cooldown_s=10, clock=clock)
    health.record_failure("large")
    clock.now += 10
    assert health.unhealthy() == frozenset()
    health.record_failure("large")
    clock.now += 5
    assert health.unhealthy() == {"large"}


def test_a_trial_that_never_reports_expires() -> None:
    clock = Clock()
    health = TierHealth(failures=1, cooldown_s=10, clock=clock)
    health.record_failure("large")
    clock.now += 10
    assert health.unhealthy() == frozenset()  # trial taken, never reported (e.g. cache hit)
    clock.now += 10
    assert health.unhealthy() == frozenset(), "a new trial is allowed after another cooldown"


def test_unhealthy_now_does_not_take_the_trial() -> None:
    clock = Clock()
    health = TierHealth(failures=1, cooldown_s=10, clock=clock)
    health.record_failure("large")
    clock.now += 10
    assert health.unhealthy_now() == frozenset()
    assert health.unhealthy() == frozenset(), "explain did not use up the trial"
