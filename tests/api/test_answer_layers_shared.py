"""The answer layers across processes: two gateways sharing one Redis semantic store (each
re-reads the other's entries on its refresh timer), and a real ``gateway serve`` that purges a
tenant's cached answers when its approved-answers file changes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from gateway.answers.file import load_answers
from gateway.answers.promote import promote_example
from gateway.answers.training import Example, train
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import Served, serving

REDIS_URL = "redis://127.0.0.1:6379/15"
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "answers" / "example.jsonl"


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def chat(url: str, text: str, **headers: str) -> httpx.Response:
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {ACME_KEY}", **headers},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def test_a_gateway_serves_what_another_stored_in_the_shared_redis_store(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prefix = f"switchboard-test-{uuid.uuid4().hex[:8]}:"
    config = TEST_CONFIG.replace(
        "    store_request_text: true\n",
        "    store_request_text: true\n"
        "    semantic_cache: { enabled: true, secret_env: ACME_SEMANTIC_SECRET }\n",
    ).replace(
        "cache:\n  enabled: false\n",
        "cache:\n  enabled: false\nsemantic_cache: { refresh_interval_s: 0.2 }\n"
        f'state: redis\nredis:\n  url: {REDIS_URL}\n  key_prefix: "{prefix}"\n',
    )
    env = gateway_env(mock_upstream.base_url, ACME_SEMANTIC_SECRET="s" * 40)
    product = "Yak"  # a question the example matcher abstains on, whatever the product
    question = f"how do I reset my password for the {product} app"
    paraphrase = f"how can I reset my password for the {product} app"
    try:
        with (
            GatewayServer(tmp_path_factory.mktemp("shared-a"), env, config) as first,
            GatewayServer(tmp_path_factory.mktemp("shared-b"), env, config) as second,
        ):
            # The second gateway's index of acme is read now (empty), before anything is stored;
            # no-store keeps its own answers out, so a hit can only be the first gateway's entry.
            before = chat(second.root_url, paraphrase, **{"x-switchboard-cache": "no-store"})
            stored = chat(first.root_url, question)
            hits: list[httpx.Response] = []

            def served_from_cache() -> bool:
                answer = chat(second.root_url, paraphrase, **{"x-switchboard-cache": "no-store"})
                hits.append(answer)
                return answer.headers.get("x-switchboard-cache-layer") == "semantic"

            eventually(served_from_cache, "the first gateway's entry served by the second")
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        for key in keys:
            client.delete(key)
        client.close()

    assert before.headers["x-switchboard-semantic-cache"] == "miss: empty"
    assert stored.headers["x-switchboard-semantic-cache"] == "miss: empty"
    assert hits[-1].json()["choices"][0]["message"]["content"] == "echo: " + question
    assert keys, "the entries were in Redis, under the configured prefix"


RELOAD_CONFIG = """
upstreams:
  mock: { base_url: "${MOCK_BASE_URL}", api_key_env: MOCK_UPSTREAM_KEY }
tiers:
  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
  large: { upstream: mock, model: gpt-4o }
router:
  default: small
tenants:
  acme:
    keys: [{ env: ACME_KEY }]
    answers: { file: "ANSWERS", model: "MODEL" }
    semantic_cache: { enabled: true }
cache: { enabled: true, admit_after: 1 }
server: { watch_config: true, watch_interval_s: 0.2 }
"""


def layer(served: Served, text: str) -> str | None:
    return chat(served.url, text).headers.get("x-switchboard-cache-layer")


def test_a_changed_answers_file_reloads_and_purges_the_tenants_cached_answers(
    tmp_path: Path, mock_upstream: MockUpstream, upstream: MockUpstream
) -> None:
    pytest.importorskip("sklearn")
    answers = tmp_path / "acme.jsonl"
    answers.write_text(EXAMPLE.read_text("utf-8"), "utf-8")
    model = tmp_path / "acme.npz"
    train([Example(t, i) for t, i in load_answers(answers).examples()]).save(model)
    config = tmp_path / "gateway.yaml"
    config.write_text(RELOAD_CONFIG.replace("ANSWERS", str(answers)).replace("MODEL", str(model)))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **gateway_env(mock_upstream.base_url),
    }
    question = "how do I reset my password for the Gecko app"
    with serving(tmp_path / "data", tmp_path / "serve.log", env, config) as served:
        assert layer(served, question) is None  # a model answered; both caches stored it
        assert layer(served, question) == "exact"
        assert layer(served, question.replace("do I", "can I")) == "semantic"
        calls = len(upstream.history)

        promote_example(answers, "track_order", "where has my parcel got to")
        eventually(lambda: "approved answers of acme changed" in served.stderr(), "the purge")
        after = layer(served, question)
        log = served.stderr()

    assert after is None
    assert len(upstream.history) == calls + 1
    assert "its exact-cache entries and 1 semantic-cache entries purged" in log
