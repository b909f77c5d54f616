"""``gateway serve`` as a child process that tests may stop, kill, limit and restart.

``tests/support/served.py`` runs the installed ``gateway`` script; these tests also need the
process id (``kill -9``, ``prlimit``), a restart on the same data directory and port, and
stderr collected from a pipe (a file would count against a file-size limit the test imposes).
``python -m gateway`` from the repository root serves the checkout under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.gateway_server import UPSTREAM_KEY
from tests.support.mock_upstream import free_port

REPO = Path(__file__).resolve().parents[2]
CLOSED_KEY = "sk-rel-closed-0123456789"  # tenant "closed": budget fails closed (the default)
OPEN_KEY = "sk-rel-open-0123456789"  # tenant "open": budget fails open
PLAIN_KEY = "sk-rel-plain-0123456789"  # tenant "plain": no budget, no rate limits

CONFIG = """
state: ${STATE:-embedded}
redis:
  url: ${REDIS_URL:-redis://127.0.0.1:6379/0}
  key_prefix: "${KEY_PREFIX:-reliability:}"
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
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
    max_output_tokens: 64
  large:
    upstream: mock
    model: gpt-4o
    max_output_tokens: 64
models:
  auto: { route: auto }
  gpt-4o-mini: { route: auto }
router:
  default: small
  fallbacks: {}
  health: { failures: 1000 }
tenants:
  closed:
    keys: [{ env: CLOSED_KEY }]
    timezone: UTC
    budget: { daily_limit: 100 }
    rate_limits: { per_tenant: { requests_per_minute: 100000 } }
  open:
    keys: [{ env: OPEN_KEY }]
    timezone: UTC
    budget: { daily_limit: 100, on_backend_error: fail_open }
  plain:
    keys: [{ env: PLAIN_KEY }]
cache:
  enabled: ${CACHE:-false}
  admit_after: 1
"""


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit status (uvicorn re-raises it: -SIGTERM is clean)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def gateway_env(mock_base_url: str, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "MOCK_BASE_URL": mock_base_url,
        "MOCK_UPSTREAM_KEY": UPSTREAM_KEY,
        "CLOSED_KEY": CLOSED_KEY,
        "OPEN_KEY": OPEN_KEY,
        "PLAIN_KEY": PLAIN_KEY,
        **extra,
    }


def write_config(path: Path, text: str = CONFIG) -> Path:
    path.write_text(text, "utf-8")
    return path


def start(
    config: Path, data_dir: Path, env: Mapping[str, str], *, port: int | None = None
) -> GatewayProcess:
    """Start ``gateway serve`` and wait until ``/healthz`` answers (15 s at most)."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    gw = GatewayProcess(process, port, data_dir)
    assert process.stderr is not None
    pipe = process.stderr

    def drain() -> None:
        for line in iter(pipe.readline, b""):
            gw.lines.append(line.decode("utf-8", "replace"))

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            time.sleep(0.2)  # let the drain thread read the last lines
            raise AssertionError(f"gateway serve exited with {process.returncode}: {gw.stderr()}")
        try:
            if httpx.get(f"{gw.url}/healthz", timeout=1).status_code == 200:
                return gw
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"gateway serve did not become healthy in 15 s: {gw.stderr()}")
        time.sleep(0.05)


@contextmanager
def running(
    config: Path, data_dir: Path, env: Mapping[str, str], *, port: int | None = None
) -> Iterator[GatewayProcess]:
    gw = start(config, data_dir, env, port=port)
    try:
        yield gw
    finally:
        if gw.process.poll() is None:
            gw.process.kill()
            gw.process.wait(timeout=10)
        if gw.process.stderr is not None:
            gw.process.stderr.close()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` (a bound, not a measured time)
    and adding ``on_timeout()`` (e.g. the gateway's stderr)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out waiting for {what}{extra}")
        time.sleep(0.05)
