"""Config hot reload of a real ``gateway serve`` process: SIGHUP, file change, and a bad file."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.cli.test_cli import clean_env
from tests.support.gateway_server import ACME_KEY, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import Served, serving

CONFIG = """
upstreams:
  mock: { base_url: "${MOCK_BASE_URL}", api_key_env: MOCK_UPSTREAM_KEY }
tiers:
  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
  large: { upstream: mock, model: gpt-4o }
router:
  default: DEFAULT
tenants:
  acme: { keys: [{ env: ACME_KEY }] }
cache: { enabled: false }
server: { watch_config: WATCH, watch_interval_s: 0.2 }
"""


def write(path: Path, default: str, *, watch: bool) -> None:
    path.write_text(CONFIG.replace("DEFAULT", default).replace("WATCH", str(watch).lower()))


def route_of(served: Served) -> str:
    response = httpx.post(
        f"{served.url}/v1/route/explain",
        headers={"Authorization": f"Bearer {ACME_KEY}"},
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    route: str = response.json()["route"]
    return route


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_sighup_reloads_and_a_bad_file_keeps_the_old_config(
    tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    config = tmp_path / "gateway.yaml"
    write(config, "small", watch=False)
    env = clean_env(**gateway_env(mock_upstream.base_url))
    with serving(tmp_path / "data", tmp_path / "serve.log", env, config) as served:
        assert route_of(served) == "small"

        write(config, "large", watch=False)
        served.process.send_signal(signal.SIGHUP)
        eventually(lambda: route_of(served) == "large", "the new default after SIGHUP")
        assert "config reloaded" in served.stderr()

        config.write_text("router: [this is not a config\n")
        served.process.send_signal(signal.SIGHUP)
        eventually(lambda: "rejected" in served.stderr(), "the rejection in the log")
        assert "the old config keeps serving" in served.stderr()
        assert str(config) in served.stderr(), "the log names the file"
        assert route_of(served) == "large", "the old config still serves"

        write(config, "small", watch=False)
        served.process.send_signal(signal.SIGHUP)
        eventually(lambda: route_of(served) == "small", "a good file after a bad one")


def test_a_changed_file_is_reloaded_without_a_signal(
    tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    config = tmp_path / "gateway.yaml"
    write(config, "small", watch=True)
    env = clean_env(**gateway_env(mock_upstream.base_url))
    with serving(tmp_path / "data", tmp_path / "serve.log", env, config) as served:
        assert route_of(served) == "small"
        write(config, "large", watch=True)
        eventually(lambda: route_of(served) == "large", "the new default after a file change")
        # A broken save (an editor's half-written file) is rejected; the last good one serves.
        config.write_text(CONFIG.replace("DEFAULT", "lagre").replace("WATCH", "true"))
        eventually(lambda: "unknown tier 'lagre'" in served.stderr(), "the rejection")
        assert route_of(served) == "large"
