"""Gateway configs for the budget and rate-limit tests: prices large enough to count in micros.

Prices (USD per million tokens, so µUSD per token): small 10 in / 100 out, large 50 / 1000.
The mock upstream answers ``"echo: " + text``: its completion tokens are the words of that, and
its prompt tokens the words of the messages + 3 per message. A request for ``"hello there
friend"`` with ``max_tokens: 4`` therefore costs 6 × 10 + 4 × 100 = 460 µUSD on the small tier,
and reserves a little more (tiktoken counts the prompt a little higher than the mock).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

REDIS_URL = "redis://127.0.0.1:6379/15"

HELLO = "hello there friend"
HELLO_COST_MICROS = 6 * 10 + 4 * 100

BASE = """
upstreams:
  mock:
    base_url: ${MOCK_BASE_URL}
    api_key_env: MOCK_UPSTREAM_KEY
    connect_timeout_s: 2
    read_timeout_s: 10
tiers:
  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 10, output_usd_per_mtok: 100 }
    max_output_tokens: 64
  large:
    upstream: mock
    model: gpt-4o
    price: { input_usd_per_mtok: 50, output_usd_per_mtok: 1000 }
    max_output_tokens: 64
models:
  auto: { route: auto }
  gpt-4o: { route: large }
router:
  default: small
  fallbacks: {}
  health: { failures: 100000 }
  rules:
    - name: sensitive
      when: { keywords_any: [refund] }
      route: large
embeddings:
  upstream: mock
  model: text-embedding-3-small
  price: { input_usd_per_mtok: 100, output_usd_per_mtok: 0 }
server:
  watch_config: false
"""


def budget_config(tenants: str, *, extra: str = "") -> str:
    """The base config with ``tenants:`` (YAML, indented by two) and extra top-level YAML."""
    return f"{BASE}{extra}\ntenants:\n{tenants}"


def redis_state(prefix: str, url: str = REDIS_URL) -> str:
    return f'state: redis\nredis:\n  url: {url}\n  key_prefix: "{prefix}"\n'


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own for one test; every key under it is deleted afterwards."""
    prefix = f"switchboard-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
