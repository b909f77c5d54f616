"""A small closed-loop HTTP load generator for chat completions, in its own process.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8080 --connections 1 \
        --duration 10 --warmup 2 [--stream] [--api-key sk-bench]

N keep-alive connections each send ``POST /v1/chat/completions`` back to back for ``--duration``
seconds after ``--warmup`` seconds whose results are thrown away. Every request carries a unique
prompt (process id + connection + counter), so no cache could ever answer it. Per request it
records the total latency and the time to the first body byte (for a stream: the first SSE event,
which the gateway sends only once the upstream's first chunk has arrived).

Prints one JSON object on stdout: requests, errors, non_2xx, rps and latency / ttfb percentiles in
milliseconds. ``bench/overhead.py`` uses it for the streaming time-to-first-byte run, and for every
run when ``wrk`` is not installed. Raw asyncio + httptools (no aiohttp client) to keep the client's
own cost per request small and identical for both targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

import httptools

PATH = "/v1/chat/completions"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class _Response:
    """httptools callbacks for one response on a keep-alive connection."""

    def __init__(self) -> None:
        self.first_body_at: float | None = None
        self.done = asyncio.get_running_loop().create_future()

    def on_body(self, body: bytes) -> None:
        if self.first_body_at is None:
            self.first_body_at = time.perf_counter()

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.current: _Response | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if self.current is not None and not self.current.done.done():
                    self.current.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current is not None and not self.current.done.done():
            self.current.done.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)


def _request_bytes(host: str, key: str, prompt: str, stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        body["stream"] = True
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n"
    ).encode()
    return head + raw


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfbs: list[float] = []
        self.errors = 0
        self.non_2xx = 0


async def _worker(
    wid: int,
    host: str,
    port: int,
    key: str,
    stream: bool,
    measure_from: float,
    stop_at: float,
    stats: _Stats,
    timeout: float,
    same: str = "",
) -> None:
    loop = asyncio.get_running_loop()
    prefix = f"{os.getpid()}-{wid}"
    counter = 0
    client: _Client | None = None
    while time.perf_counter() < stop_at:
        if client is None or client.transport is None or client.lost.done():
            _, client = await loop.create_connection(_Client, host, port)
        counter += 1
        prompt = same or f"Where is my parcel? Order {prefix}-{counter}, please check."
        payload = _request_bytes(f"{host}:{port}", key, prompt, stream)
        response = _Response()
        client.current = response
        parser = client.parser = httptools.HttpResponseParser(response)
        t0 = time.perf_counter()
        assert client.transport is not None
        client.transport.write(payload)
        try:
            await asyncio.wait_for(asyncio.shield(response.done), timeout)
        except (ConnectionError, httptools.HttpParserError, TimeoutError):
            if t0 >= measure_from:
                stats.errors += 1
            if client.transport is not None:
                client.transport.close()
            client = None
            continue
        t1 = time.perf_counter()
        status = parser.get_status_code()
        keep_alive = parser.should_keep_alive()
        if t0 >= measure_from and t1 <= stop_at:
            if 200 <= status < 300:
                stats.latencies.append(t1 - t0)
                if response.first_body_at is not None:
                    stats.ttfbs.append(response.first_body_at - t0)
            else:
                stats.non_2xx += 1
        if not keep_alive:
            assert client.transport is not None
            client.transport.close()
            client = None
    if client is not None and client.transport is not None:
        client.transport.close()


async def run(
    url: str,
    connections: int,
    duration: float,
    warmup: float,
    stream: bool,
    key: str,
    timeout: float,
    same: str = "",
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats = _Stats()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    await asyncio.gather(
        *(
            _worker(i, host, port, key, stream, measure_from, stop_at, stats, timeout, same)
            for i in range(connections)
        )
    )
    lat = sorted(x * 1000 for x in stats.latencies)
    ttfb = sorted(x * 1000 for x in stats.ttfbs)
    return {
        "loadgen": "python",
        "connections": connections,
        "duration_s": duration,
        "stream": stream,
        "requests": len(lat),
        "errors": stats.errors,
        "non_2xx": stats.non_2xx,
        "rps": len(lat) / duration,
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "mean": sum(lat) / len(lat) if lat else float("nan"),
            "max": lat[-1] if lat else float("nan"),
        },
        "ttfb_ms": {
            "p50": percentile(ttfb, 50),
            "p90": percentile(ttfb, 90),
            "p99": percentile(ttfb, 99),
            "mean": sum(ttfb) / len(ttfb) if ttfb else float("nan"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--stream", action="store_true", help='send "stream": true')
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument(
        "--same-prompt",
        default="",
        metavar="TEXT",
        help="send this prompt on every request (exact-cache-hit and approved-answer runs)",
    )
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("this load generator only targets 127.0.0.1")
    coro = run(
        args.url,
        args.connections,
        args.duration,
        args.warmup,
        args.stream,
        args.api_key,
        args.timeout,
        args.same_prompt,
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
