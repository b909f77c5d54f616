"""A gateway whose tenants use neither approved answers nor the semantic cache never imports numpy.

numpy (and what imports it: the answers matcher and model, the embedders, the semantic cache)
costs ~15 MiB of resident memory per process; the default configs need none of it. A fresh
interpreter is the only place to check this: the test process has imported everything already.

Likewise a gateway with ``state: embedded`` never imports the redis package (~6 MiB).

A config WITH approved answers is not checked here: it needs a model trained with scikit-learn
(``gateway answers train``); tests/api/test_answer_layers.py covers that path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Modelled on config/examples/openai-compatible.yaml: the classifier on, no `answers:` and no
# tenant with `semantic_cache:` (the top-level section is on by default: tenants opt in).
CONFIG = """\
state: embedded
upstreams:
  upstream:
    base_url: ${UPSTREAM_BASE_URL}
    connect_timeout_s: 5
    read_timeout_s: 60
tiers:
  small:
    upstream: upstream
    model: ${SMALL_MODEL}
    price: { input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6 }
  large:
    upstream: upstream
    model: ${LARGE_MODEL}
    price: { input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }
models:
  auto: { route: auto }
  gpt-4o: { route: large }
router:
  default: small
  order: [rules, classifier]
  classifier: { threshold: 0.25 }
  rules:
    - name: long-prompt
      when: { prompt_tokens_over: 1500 }
      route: large
cache:
  enabled: true
tenants:
  demo:
    keys:
      - env: DEMO_API_KEY
"""

HEAVY = ("numpy", "sklearn", "scipy", "wordllama")
FEATURE_MODULES = (
    "gateway.answers.matcher",
    "gateway.answers.model",
    "gateway.answers.loading",
    "gateway.embedder",
    "gateway.remote_embedder",
    "gateway.cache.semantic",
)


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
        "SMALL_MODEL": "small-model",
        "LARGE_MODEL": "large-model",
        "DEMO_API_KEY": "sk-lazy-imports-test",
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_app_without_answer_layers_imports_no_numpy(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        from gateway.app import create_app
        from gateway.settings import Settings

        settings = Settings.from_env(
            config_path=Path({str(config)!r}), data_dir=Path({str(tmp_path / "data")!r})
        )
        app = create_app(settings)
        runtime = app.state.switchboard.runtime
        assert runtime.answers is None, runtime.answers
        # the difficulty classifier is on in this config: scoring needs no numpy either
        classifier = runtime.routing_state.classifier
        assert classifier is not None
        classifier.score([{{"role": "user", "content": "Prove that sqrt(2) is irrational."}}])
        heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]
        assert not heavy, heavy[:10]
        features = [m for m in sys.modules if m.startswith({FEATURE_MODULES!r})]
        assert not features, features
        """
    )
    result = _run_fresh(code)
    assert result.returncode == 0, result.stderr


# The redis package costs ~6 MiB of resident memory; only state: redis needs it. The tenant has a
# budget and rate limits, so the embedded budget store is built and the budget stage is on too
# (as in bench/configs/gateway.yaml).
BUDGET_TENANT = """\
    budget:
      daily_limit: 1000
      monthly_limit: 10000
    rate_limits:
      per_key: { requests_per_minute: 1000 }
"""
REDIS_MODULES = ("gateway.budget.redis_store", "gateway.cache.redis_store", "gateway.ledger_stream")


def test_embedded_state_imports_no_redis(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG + BUDGET_TENANT)
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        from gateway.app import create_app
        from gateway.budget import SqliteBudgetStore
        from gateway.cache import DiskCacheStore
        from gateway.settings import Settings

        settings = Settings.from_env(
            config_path=Path({str(config)!r}), data_dir=Path({str(tmp_path / "data")!r})
        )
        app = create_app(settings)
        board = app.state.switchboard
        assert isinstance(board.budget_store, SqliteBudgetStore), board.budget_store
        assert isinstance(board.cache_store, DiskCacheStore), board.cache_store
        assert board.ledger_relay is None, board.ledger_relay
        loaded = [m for m in sys.modules if m.split(".")[0] == "redis"]
        assert not loaded, loaded[:10]
        gateway_redis = [m for m in sys.modules if m in {REDIS_MODULES!r}]
        assert not gateway_redis, gateway_redis
        # the lazy re-exports still work, and import redis only then
        from gateway.budget import RedisBudgetStore
        from gateway.cache import RedisStore

        assert RedisBudgetStore.backend_name == "Redis"
        assert RedisStore.__module__ == "gateway.cache.redis_store"
        assert "redis" in sys.modules
        """
    )
    result = _run_fresh(code)
    assert result.returncode == 0, result.stderr
