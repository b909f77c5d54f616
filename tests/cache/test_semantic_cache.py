"""The semantic cache over every store backend: hits, every refusal, limits, feedback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from gateway.cache.semantic import (
    DiskSemanticStore,
    MemorySemanticStore,
    RedisSemanticStore,
    SemanticCache,
    SemanticPolicy,
    SemanticStore,
)
from gateway.cache.semantic.index import VectorIndex
from gateway.embedder import default_embedder

SECRET = b"test-secret-of-32-bytes-exactly!"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_store() -> Iterator[SemanticStore]:
    """A Redis store under a key prefix of its own, deleted afterwards; skipped without Redis."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        pytest.skip("no Redis on 127.0.0.1:6379 (start redis-server to test the Redis backend)")
    prefix = f"switchboard-test-{uuid.uuid4().hex}:"
    backend = RedisSemanticStore(REDIS_URL, prefix)
    yield backend
    backend.close()
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "diskcache", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SemanticStore]:
    """The same tests against every backend."""
    if request.param == "redis":
        yield from redis_store()
        return
    backend: SemanticStore = (
        MemorySemanticStore() if request.param == "memory" else DiskSemanticStore(tmp_path / "sc")
    )
    yield backend
    backend.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(store: SemanticStore, clock: Clock, **policy: object) -> SemanticCache:
    return SemanticCache(
        store,
        secret=SECRET,
        embedder=default_embedder(),
        default=SemanticPolicy(**policy),  # type: ignore[arg-type]
        clock=clock,
    )


def test_the_same_question_reworded_gets_the_stored_answer(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock)
    assert cache.lookup("shop", "where is my order?").reason == "empty"
    entry = cache.store("shop", "Where is my order?", b"answer-1")
    found = cache.lookup("shop", "where is my order")
    assert found.hit is not None and found.hit.answer == b"answer-1"
    assert found.hit.entry_id == entry and found.reason == "hit"


def test_never_across_tenants(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock)
    cache.store("shop-a", "where is my order?", b"a's answer")
    assert cache.lookup("shop-b", "where is my order?").hit is None
    assert cache.lookup("shop-a", "where is my order?").hit is not None


def test_an_unrelated_question_is_below_the_threshold(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock)
    cache.store("shop", "where is my order?", b"x")
    found = cache.lookup("shop", "do you sell gift cards")
    assert found.hit is None and found.reason.startswith("below threshold")


@pytest.mark.parametrize(
    ("stored", "asked", "reason"),
    [
        ("I want a refund", "I don't want a refund", "guard: negation"),
        ("how do I add a card", "how do I remove a card", "guard: direction"),
        ("如何开通自动续费", "如何关闭自动续费", "guard: direction"),
        (
            "Can I return shoes after 30 days?",
            "Can I return shoes after 60 days?",
            "guard: entities",
        ),
    ],
)
def test_guards_refuse_near_misses(
    store: SemanticStore, clock: Clock, stored: str, asked: str, reason: str
) -> None:
    cache = make(store, clock, threshold=0.5)
    cache.store("shop", stored, b"x")
    found = cache.lookup("shop", asked)
    assert found.hit is None and found.reason == reason


def test_personalised_text_is_neither_stored_nor_served_by_default(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock)
    assert cache.store("shop", "cancel order 12345678", b"x") is None
    assert cache.lookup("shop", "cancel order 12345678").reason == "personalised"


def test_personalised_when_configured_matches_only_the_same_entities(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock, personalised=True)
    cache.store("shop", "please cancel order 12345678", b"cancelled 12345678")
    assert cache.lookup("shop", "please cancel order 12345678").hit is not None
    assert cache.lookup("shop", "please cancel order 87654321").reason == "guard: entities"


def test_the_store_never_holds_raw_entity_values(tmp_path: Path, clock: Clock) -> None:
    store = DiskSemanticStore(tmp_path / "sc")
    cache = make(store, clock, personalised=True)
    cache.store("shop", "refund order 98765432 to ann@example.com", b"ok")
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "sc").rglob("*") if p.is_file())
    assert b"98765432" not in raw and b"ann@example.com" not in raw


def test_multi_turn_is_refused_unless_configured(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock)
    assert cache.store("shop", "and the other one?", b"x", history=["where is order A?"]) is None
    assert cache.lookup("shop", "and the other one?", history=["hi"]).reason == "multi-turn"


def test_multi_turn_when_configured_needs_the_same_earlier_turns(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock, multi_turn=True)
    cache.store("shop", "how long does it take?", b"refunds: 5 days", history=["I want a refund"])
    same = cache.lookup("shop", "how long does it take?", history=["i want a refund"])
    assert same.hit is not None and same.hit.answer == b"refunds: 5 days"
    other = cache.lookup("shop", "how long does it take?", history=["I want a new card"])
    assert other.hit is None and other.reason == "other earlier turns or scope"
    assert cache.lookup("shop", "how long does it take?").hit is None


def test_an_entry_serves_only_requests_of_the_same_scope(
    store: SemanticStore, clock: Clock
) -> None:
    # The pipeline's scope: requested model, system prompt, masked values' keyed hashes.
    cache = make(store, clock)
    scope = ("model: auto", "system: You are Shop's assistant.")
    cache.store("shop", "do you ship to Canada", b"yes", scope=scope)

    same = cache.lookup("shop", "do you ship to Canada", scope=scope)
    other = cache.lookup("shop", "do you ship to Canada", scope=("model: gpt-4o",))
    none = cache.lookup("shop", "do you ship to Canada")

    assert same.hit is not None and same.hit.answer == b"yes"
    assert other.hit is None and other.reason == "other earlier turns or scope"
    assert none.hit is None


def test_entries_expire_after_their_ttl(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock, ttl_s=60)
    cache.store("shop", "what are your opening hours", b"9-5")
    clock.now += 59
    assert cache.lookup("shop", "what are your opening hours").hit is not None
    clock.now += 2
    assert cache.lookup("shop", "what are your opening hours").hit is None
    assert cache.size("shop") == 0


def test_the_oldest_entry_goes_when_a_tenant_is_full(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock, max_entries=2)
    questions = [
        "what are your opening hours",
        "do you ship to canada",
        "how do I reset my password",
    ]
    for i, question in enumerate(questions):
        clock.now += 1
        cache.store("shop", question, str(i).encode())
    assert cache.size("shop") == 2
    assert cache.lookup("shop", questions[0]).hit is None
    assert cache.lookup("shop", questions[2]).hit is not None


def test_thresholds_are_per_tenant(store: SemanticStore, clock: Clock) -> None:
    cache = SemanticCache(
        store,
        secret=SECRET,
        embedder=default_embedder(),
        policies={
            "strict": SemanticPolicy(threshold=0.999),
            "loose": SemanticPolicy(threshold=0.5),
        },
        clock=clock,
    )
    for tenant in ("strict", "loose"):
        cache.store(tenant, "how long does a refund take", b"x")
    assert cache.lookup("loose", "when will I get my refund").hit is not None
    assert cache.lookup("strict", "when will I get my refund").hit is None


def test_a_bad_verdict_invalidates_the_entry_that_request_was_served(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock)
    cache.store("shop", "do you ship to canada", b"yes", request_id="req-1")
    assert cache.lookup("shop", "do you ship to Canada?", request_id="req-2").hit is not None
    assert not cache.invalidate_request("other-tenant", "req-2")
    assert cache.invalidate_request("shop", "req-2")
    assert cache.lookup("shop", "do you ship to canada").hit is None
    assert not cache.invalidate_request("shop", "req-1")  # its entry is gone already
    assert not cache.invalidate_request("shop", "never-seen")


def test_a_bad_verdict_on_the_request_that_produced_an_answer_removes_it(
    store: SemanticStore, clock: Clock
) -> None:
    cache = make(store, clock)
    cache.store("shop", "do you ship to canada", b"yes", request_id="req-1")
    assert cache.invalidate_request("shop", "req-1")
    assert cache.lookup("shop", "do you ship to canada").hit is None


def test_purge_removes_one_tenant_only(store: SemanticStore, clock: Clock) -> None:
    cache = make(store, clock)
    cache.store("a", "do you ship to canada", b"x")
    cache.store("a", "what are your opening hours", b"y")
    cache.store("b", "do you ship to canada", b"z")
    assert cache.purge("a") == 2
    assert cache.lookup("a", "do you ship to canada").hit is None
    assert cache.lookup("b", "do you ship to canada").hit is not None


def test_a_new_process_mirrors_the_store(tmp_path: Path, clock: Clock) -> None:
    first = make(DiskSemanticStore(tmp_path / "sc"), clock)
    first.store("shop", "do you ship to canada", b"yes")
    first.backend.close()
    second = make(DiskSemanticStore(tmp_path / "sc"), clock)
    found = second.lookup("shop", "do you ship to canada?")
    assert found.hit is not None and found.hit.answer == b"yes"


def test_a_short_secret_is_refused(store: SemanticStore) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SemanticCache(store, secret=b"short")


def test_the_index_returns_the_nearest_first_and_survives_removal() -> None:
    index = VectorIndex(dim=2, capacity=1)
    for name, vector in {"x": (1, 0), "y": (0, 1), "xy": (0.6, 0.8)}.items():
        index.add(name, np.array(vector, dtype=np.float32))
    assert [i for i, _ in index.search(np.array([1, 0], dtype=np.float32), 2)] == ["x", "xy"]
    assert index.remove("x") and not index.remove("x")
    assert index.oldest() == "y" and len(index) == 2
    assert index.search(np.array([1, 0], dtype=np.float32), 5)[0][0] == "xy"


def test_only_a_bad_verdict_removes_the_served_entry(store: SemanticStore, clock: Clock) -> None:
    from gateway.cache.semantic.feedback import apply_verdict

    cache = make(store, clock)
    cache.store("shop", "do you ship to canada", b"yes", request_id="req-1")
    assert cache.lookup("shop", "do you ship to canada", request_id="req-2").hit is not None
    assert not apply_verdict(cache, "shop", "req-2", "good")
    assert not apply_verdict(cache, "shop", "req-2", "handoff")
    assert cache.lookup("shop", "do you ship to canada").hit is not None
    assert apply_verdict(cache, "shop", "req-2", "bad")
    assert cache.lookup("shop", "do you ship to canada").hit is None


def test_a_redis_store_is_shared_by_processes_and_keeps_no_raw_values(clock: Clock) -> None:
    for backend in redis_store():
        first = make(backend, clock, personalised=True)
        first.store("shop", "refund order 98765432 to ann@example.com", b"ok")
        second = make(backend, clock, personalised=True)  # another process: its own index
        found = second.lookup("shop", "refund order 98765432 to ann@example.com")
        assert found.hit is not None and found.hit.answer == b"ok"
        assert second.lookup("other", "refund order 98765432 to ann@example.com").hit is None
        client = redis.Redis.from_url(REDIS_URL)
        raw = b"".join(client.dump(k) or b"" for k in client.keys("switchboard-test-*"))
        client.close()
        assert raw
        assert b"98765432" not in raw and b"ann@example.com" not in raw


def test_a_redis_that_is_down_makes_misses_not_errors(clock: Clock) -> None:
    from tests.support.mock_upstream import free_port

    backend = RedisSemanticStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.05)
    cache = make(backend, clock)
    assert cache.store("shop", "do you ship to canada", b"yes") is not None
    assert cache.lookup("shop", "do you ship to canada").hit is None
    assert not cache.invalidate_request("shop", "req")
    assert cache.purge("shop") == 0
    backend.close()
