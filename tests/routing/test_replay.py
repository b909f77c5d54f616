"""What-if replay of logged and supplied requests under a new config (no model is called)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import LoadedConfig, parse_config
from gateway.ledger import LedgerRecord
from gateway.routing.replay import format_result, replay_records, replay_requests
from gateway.usage import Usage
from tests.routing.configs import priced_classifier_config


def config(threshold: float, **replace: str) -> LoadedConfig:
    text = priced_classifier_config(threshold)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_config(text, source="test", env={})


def record(
    route: str, difficulty: float | None, *, text: str | None = None, **kw: Any
) -> LedgerRecord:
    features: dict[str, Any] = {
        "prompt_tokens": 100,
        "turns": 1,
        "has_tools": False,
        "has_images": False,
    }
    if difficulty is not None:
        features["difficulty"] = difficulty
    old = config(0.5)
    usage = Usage(prompt_tokens=100, completion_tokens=50)
    cost = 0 if route == "cache" else old.prices.cost_micros(old.model_of(route), usage)
    return LedgerRecord(
        request_id=kw.get("request_id", "r"),
        ts=datetime(2026, 11, 1, tzinfo=UTC),
        tenant=kw.get("tenant", "acme"),
        requested_model="auto",
        route=route,
        model=None,
        prompt_tokens=100,
        completion_tokens=50,
        cost_micros=cost,
        large_cost_micros=0,
        latency_ms=1.0,
        status=200,
        stream=False,
        cache_hit=route == "cache",
        features=features,
        request_text=text,
    )


# small: 100 * 1 + 50 * 2 = 200 micro-USD; large: 100 * 10 + 50 * 20 = 2,000 micro-USD.
SMALL, LARGE = 200, 2000


def test_a_lower_threshold_moves_scored_requests_to_large_and_prices_them() -> None:
    records = [
        record("small", 0.3),
        record("small", 0.1),
        record("large", 0.6),
        record("cache", 0.9),
    ]
    result = replay_records(records, config(0.2))
    assert result.replayed == 4
    assert result.after.routes == {"large": 2, "small": 1, "cache": 1}
    assert result.before.routes == {"small": 2, "large": 1, "cache": 1}
    assert result.changed == 1
    assert dict(result.transitions) == {("small", "large"): 1}
    assert result.before.cost_micros == 2 * SMALL + LARGE
    assert result.after.cost_micros == SMALL + 2 * LARGE
    assert result.as_dict()["cost_change_micros"] == LARGE - SMALL


def test_cache_hits_stay_cache_hits_and_cost_nothing() -> None:
    result = replay_records([record("cache", 0.99)], config(0.0))
    assert result.after.routes == {"cache": 1}
    assert result.after.cost_micros == 0


def test_records_that_failed_before_routing_or_of_unknown_tenants_are_counted_as_skipped() -> None:
    failed = record("small", 0.3)
    failed = LedgerRecord(
        **{**{f: getattr(failed, f) for f in failed.__slots__}, "route": "none", "features": {}}
    )
    stranger = record("small", 0.3, tenant="globex")
    result = replay_records([failed, stranger, record("small", 0.1)], config(0.5))
    assert result.replayed == 1
    assert dict(result.skipped) == {
        "failed before routing": 1,
        "tenant 'globex' not in the new config": 1,
    }


def test_a_record_without_a_score_is_scored_from_its_stored_text() -> None:
    hard = (
        "A shop sells boxes of 12 for $4 and of 75 for $20. What is the cheapest way to ship "
        "1,245 items with no box partly empty? Show each step."
    )
    result = replay_records([record("small", None, text=hard)], config(0.0))
    assert result.after.routes == {"large": 1}, "threshold 0 sends any scored request to large"
    assert result.unscored == 0


def test_a_record_with_neither_score_nor_text_passes_the_classifier_step() -> None:
    result = replay_records([record("large", None)], config(0.0))
    assert result.unscored == 1
    assert result.after.routes == {"small": 1}, "no score: the router's default decides"
    assert "1 replayed without a classifier score" in format_result(result)


def test_supplied_requests_are_compared_with_the_current_config(tmp_path: Path) -> None:
    rows = [
        {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]},
        {
            "model": "auto",
            "messages": [{"role": "user", "content": "where is my parcel?"}],
            "completion_tokens": 10,
        },
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    result = replay_requests(path, new=config(0.0), against=config(1.0))
    assert result.replayed == 2
    assert result.before.routes == {"small": 2}
    assert result.after.routes == {"large": 2}
    assert result.changed == 2
    assert result.before_label == "current_config"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "requests.jsonl:1: not JSON"),
        ("[1, 2]", "requests.jsonl:1: a row must be a JSON object"),
        ('{"model": "auto"}', 'requests.jsonl:1: a row needs a non-empty "messages" list'),
    ],
)
def test_a_malformed_row_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        replay_requests(path, new=config(0.5), against=config(0.5))


def test_rows_without_a_tenant_need_one_when_the_config_has_several(tmp_path: Path) -> None:
    two = config(
        0.5,
        **{
            "  acme: { keys: [{ env: K }] }": (
                "  acme: { keys: [{ env: K }] }\n  globex: { keys: [{ env: G }] }"
            )
        },
    )
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match='add "tenant" to the rows or pass --tenant'):
        replay_requests(path, new=two, against=two)
    result = replay_requests(path, new=two, against=two, default_tenant="globex")
    assert result.replayed == 1


def test_format_result_shows_the_mix_cost_and_changes() -> None:
    result = replay_records([record("small", 0.3), record("small", 0.1)], config(0.2))
    text = format_result(result)
    assert "small" in text and "large" in text
    assert "replayed 2, decisions changed 1" in text
    assert "small -> large: 1" in text
