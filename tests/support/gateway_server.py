"""The gateway served for real by uvicorn on 127.0.0.1 from a background thread, as httpx does."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from gateway.app import build_switchboard, create_app
from gateway.config import LoadedConfig, parse_config
from gateway.service import Switchboard
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from tests.support.mock_upstream import free_port

ACME_KEY = "sk-test-acme-0123456789"
GLOBEX_KEY = "sk-test-globex-0123456789"
ADMIN_KEY = "sk-test-admin-0123456789"

TEST_CONFIG = """
upstreams:
  mock:
    base_url: ${MOCK_BASE_URL}
    api_key_env: MOCK_UPSTREAM_KEY
    connect_timeout_s: 2
    read_timeout_s: ${MOCK_READ_TIMEOUT:-5}
tiers:
  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
    max_output_tokens: 256
  large:
    upstream: mock
    model: gpt-4o
models:
  auto: { route: auto }
  gpt-4o-mini: { route: auto }
  gpt-4o: { route: large }
  small-only: { route: small }
router:
  default: small
  # No fallbacks here, so each fault shows as itself; tests/api/test_fallbacks.py turns them on.
  fallbacks: {}
  # Nor tier health: injected faults would otherwise mark tiers unhealthy for later tests
  # (tests/api/test_routing_endpoints.py tests health with its own config).
  health: { failures: 1000 }
  rules:
    - name: long-prompt
      when: { prompt_tokens_over: 200 }
      route: large
    - name: sensitive
      when: { keywords_any: [refund, 退款] }
      route: large
tenants:
  acme:
    keys: [{ env: ACME_KEY }]
    store_request_text: true
  globex:
    keys: [{ env: GLOBEX_KEY }]
    models: [auto, gpt-4o]
    allow_pin: false
admin:
  keys: [{ env: ADMIN_KEY }]
# Off here, so repeated requests reach the mock; tests/api/test_cache.py turns it on.
cache:
  enabled: false
embeddings:
  upstream: mock
  model: text-embedding-3-small
server:
  body_limit_bytes: 65536
  cors_origins: ["https://shop.example"]
"""

UPSTREAM_KEY = "sk-upstream-secret"


def gateway_env(mock_base_url: str, **extra: str) -> dict[str, str]:
    return {
        "MOCK_BASE_URL": mock_base_url,
        "MOCK_UPSTREAM_KEY": UPSTREAM_KEY,
        "ACME_KEY": ACME_KEY,
        "GLOBEX_KEY": GLOBEX_KEY,
        "ADMIN_KEY": ADMIN_KEY,
        **extra,
    }


def load_test_config(env: dict[str, str], text: str = TEST_CONFIG) -> LoadedConfig:
    return parse_config(text, source="tests/support/gateway_server.py", env=env)


class GatewayServer:
    """``with GatewayServer(...) as gw: gw.base_url``; stops uvicorn and joins its thread."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        config_text: str = TEST_CONFIG,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.port = free_port()
        self.settings = Settings(
            config_path=Path("<test>"), data_dir=data_dir, host="127.0.0.1", port=self.port
        )
        self.announced: list[str] = []
        self.switchboard: Switchboard = build_switchboard(
            self.settings,
            loaded=load_test_config(env, config_text),
            env=env,
            announce=self.announced.append,
            telemetry=telemetry,
        )
        app = create_app(self.settings, switchboard=self.switchboard)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
