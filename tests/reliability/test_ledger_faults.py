"""The ledger's disk failing under a running gateway: locked by another process, full, read-only.

The rule asserted (docs/reliability.md): no answer ends before its ledger record is committed.
While the ledger cannot commit, answers already computed wait (their records stay queued and
are retried), new requests are refused with 503 ``ledger_unavailable`` and ``/readyz`` says 503;
when the fault ends the waiting answers go out, every one of them in the ledger, and the
gateway serves again without a restart. A data directory that cannot be written at start
stops ``gateway serve`` with exit status 2 and a message naming the ledger file.
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.reliability.gateway_process import (
    PLAIN_KEY,
    REPO,
    GatewayProcess,
    gateway_env,
    running,
    wait_until,
    write_config,
)
from tests.reliability.ledger_reads import ledger_rows
from tests.support.mock_upstream import Delay, MockUpstream


def _client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=PLAIN_KEY, max_retries=0, timeout=60)


def _ask(client: openai.OpenAI, text: str, stream: bool = False) -> tuple[str, str]:
    """(request id, answer text) of one chat request that must succeed."""
    messages: Any = [{"role": "user", "content": text}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="auto", messages=messages, stream=True
        ) as response:
            parts = [
                chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
            ]
            return response.headers["x-switchboard-request-id"], "".join(parts)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    answer = raw.parse().choices[0].message.content or ""
    return raw.headers["x-switchboard-request-id"], answer


def _refused_for_the_ledger(gw: GatewayProcess) -> bool:
    client = openai.OpenAI(base_url=gw.v1, api_key=PLAIN_KEY, max_retries=0, timeout=5)
    try:
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "refused?"}]
        )
    except openai.APIStatusError as exc:
        body: Any = exc.body
        assert exc.status_code == 503 and body["code"] == "ledger_unavailable", body
        assert "data directory" in body["message"]
        assert int(exc.response.headers["retry-after"]) >= 1
        return True
    return False


def _ready_status(gw: GatewayProcess) -> int:
    return httpx.get(f"{gw.url}/readyz", timeout=10).status_code


def _answers_wait_for_the_fault_to_end(
    gw: GatewayProcess,
    upstream: MockUpstream,
    fault: Callable[[], None],
    heal: Callable[[], None],
) -> None:
    """Inject ``fault``, check what waits and what is refused, ``heal``, check nothing is lost."""
    client = _client(gw)
    before_id, _ = _ask(client, "before the fault")
    seen = len(upstream.history)
    # Three requests reach the upstream before the fault and are answered after it began.
    upstream.enqueue(Delay(1.0), Delay(1.0), Delay(1.0))
    pool = concurrent.futures.ThreadPoolExecutor(3)
    pending = [
        pool.submit(_ask, client, "during the fault, plain"),
        pool.submit(_ask, client, "during the fault, streamed", True),
        pool.submit(_ask, client, "during the fault, plain again"),
    ]
    try:
        wait_until(
            lambda: len(upstream.history) == seen + 3,
            "the upstream to answer all three",
            on_timeout=gw.stderr,
        )
        fault()
        # Once a write has failed (the lock waited out, or no space) the ledger retries, and
        # new requests are refused rather than served unrecorded.
        wait_until(
            lambda: "records failed" in gw.stderr(), "a failed ledger write", on_timeout=gw.stderr
        )
        assert _refused_for_the_ledger(gw)
        assert _ready_status(gw) == 503
        # Computed long ago, yet not delivered: their records are not committed.
        assert not any(f.done() for f in pending)
        heal()
        answered = [f.result(timeout=60) for f in pending]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert [text for _, text in answered] == [
        "echo: during the fault, plain",
        "echo: during the fault, streamed",
        "echo: during the fault, plain again",
    ]
    wait_until(lambda: _ready_status(gw) == 200, "readiness after the fault")
    after_id, _ = _ask(client, "after the fault")
    assert gw.terminate() in (0, -signal.SIGTERM)
    ids = [r.request_id for r in ledger_rows(gw.data_dir)]
    for request_id in [before_id, *(rid for rid, _ in answered), after_id]:
        assert ids.count(request_id) == 1, request_id
    # Refused requests never reached a model and are not tenants' spend (nobody was
    # authenticated yet): only the five answers are recorded.
    assert len(ids) == 5


def test_a_ledger_locked_by_another_process_holds_answers_until_released_and_loses_none(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    with running(config, tmp_path / "data", gateway_env(upstream.base_url)) as gw:
        holder = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3", isolation_level=None)
        try:
            _answers_wait_for_the_fault_to_end(
                gw,
                upstream,
                fault=lambda: holder.execute("BEGIN EXCLUSIVE"),
                heal=lambda: holder.execute("COMMIT"),
            )
        finally:
            holder.close()
        assert "database is locked" in gw.stderr()


def test_a_full_data_directory_holds_answers_until_space_returns_and_loses_none(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    # "Full" without root or a tmpfs: the gateway's file-size limit lowered to 1 byte from
    # outside (prlimit), so every write that grows a file fails with EFBIG, as on a full disk.
    config = write_config(tmp_path / "gateway.yaml")
    with running(config, tmp_path / "data", gateway_env(upstream.base_url)) as gw:
        _soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_FSIZE)
        _answers_wait_for_the_fault_to_end(
            gw,
            upstream,
            fault=lambda: resource.prlimit(gw.pid, resource.RLIMIT_FSIZE, (1, hard)),
            heal=lambda: resource.prlimit(gw.pid, resource.RLIMIT_FSIZE, (hard, hard)),
        )
        # EFBIG reaches SQLite as "database or disk is full" or "disk I/O error".
        assert "records failed" in gw.stderr()


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """No new file may be created in ``directory``: chmod for a user, chattr +i for root
    (root ignores permissions)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a directory read-only")
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def _serve_once(
    data_dir: Path, config: Path, env: dict[str, str], **popen: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        + ["--port", "1", "--data-dir", str(data_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **popen,
    )


def test_a_read_only_data_directory_stops_serve_at_start_naming_the_ledger(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    data = tmp_path / "data"
    data.mkdir()
    with _read_only(data):
        done = _serve_once(data, config, gateway_env(upstream.base_url))
    assert done.returncode == 2, done.stderr
    assert f"cannot open the ledger at {data / 'ledger.sqlite3'}" in done.stderr


def test_a_data_directory_without_space_stops_serve_at_start_naming_the_ledger(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    data = tmp_path / "data"

    def no_space() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    done = _serve_once(data, config, gateway_env(upstream.base_url), preexec_fn=no_space)
    assert done.returncode == 2, done.stderr
    assert f"the ledger at {data / 'ledger.sqlite3'}" in done.stderr
