"""``gateway serve`` in a real subprocess, as an operator runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.mock_upstream import free_port

REPO = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text("utf-8")

    def models_status(self, key: str) -> int:
        response = httpx.get(
            f"{self.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
        return response.status_code


@contextmanager
def serving(
    data_dir: Path,
    log: Path,
    env: Mapping[str, str],
    config: Path | str = "config/gateway.yaml",
    *,
    args: Sequence[str] = (),
    healthy_within_s: float = 15,
) -> Iterator[Served]:
    """``gateway serve [args]`` in a subprocess; stopped with SIGTERM (killed if need be) on
    exit."""
    port = free_port()
    with log.open("wb") as err:
        process = subprocess.Popen(
            [
                str(GATEWAY),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    served = Served(process, port, log)
    try:
        deadline = time.monotonic() + healthy_within_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"gateway serve exited with {process.returncode}: {served.stderr()}")
            try:
                if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"gateway serve did not become healthy in {healthy_within_s:g} s: "
                    f"{served.stderr()}"
                )
            time.sleep(0.05)
        yield served
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: exiting "by SIGTERM" is clean.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM), served.stderr()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
