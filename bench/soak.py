"""Soak: minutes of mixed traffic at a steady rate through a real ``gateway serve``, then checks.

    .venv/bin/python bench/soak.py                      # 10 minutes at 20 requests/s
    .venv/bin/python bench/soak.py --minutes 1 --rate 10 --state redis

Three processes on 127.0.0.1: the instant mock upstream (``bench/mock_upstream.py``, with
``--delay-ms`` of think time so requests overlap), ``gateway serve`` on a fresh data directory
with the config below (tenant ``soak``: a daily budget and rate limits, so every request
reserves, settles and counts; the exact cache on), and this script as the client (the official
``openai.AsyncOpenAI``, no retries). Every request is one of these kinds, drawn with fixed
weights from a seeded generator:

    cache    one of 20 repeated questions: exact-cache hits after the first of each
    small    a unique question: the small tier (mock model)
    large    a unique question with "refund": a routing rule sends it to the large tier
    stream   a unique question, streamed (with include_usage)
    404      an unknown model name                    -> 404 model_not_found   (recorded)
    400      max_tokens: -1                           -> 400 invalid request   (recorded)
    503      an embeddings request; its upstream's port is closed -> 503     (recorded)
    401      a wrong API key                          -> 401, nobody to bill (not recorded)
    limited  a unique question from tenant ``limited``, whose per-tenant rate limit
             (``--limited-rpm``, default 120 per minute) is below what this kind offers
             (about 156 per minute at the defaults) -> 200, or 429 with retry-after

Requests start on a fixed schedule (``--rate`` per second) whatever the answers' latency, up
to ``--max-in-flight`` at once. The gateway's RSS is sampled every 5 s. At the end the gateway
gets SIGTERM (it drains and flushes the ledger), then the script checks and prints:

- zero unexpected errors: every request got exactly the status of its kind, no exception;
- memory flat: the median RSS of the last fifth of the run within 10 % of the median of the
  second fifth (the first fifth is warm-up: caches, tokenizers and pools fill);
- the ledger holds exactly one record per answered authenticated request (ids compared);
- the budget counters' settled total equals the ledger's cost sum for the tenant;
- the rate limit held: in every fixed minute window (the gateway's windows are aligned to the
  epoch) the ledger holds at most ``--limited-rpm`` answered requests of tenant ``limited``, and
  the limit was reached (some 429s), so the check was not vacuous.

Exit status 0 when all hold, 1 otherwise. A JSON summary goes to
``bench/results/soak-<timestamp>.json``. Everything started is stopped again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-soak-0123456789abcdef"
LIMITED_KEY = "sk-soak-limited-0123456789"
WRONG_KEY = "sk-soak-wrong-0123456789"
PREFIX = f"soak-{os.getpid()}:"

CONFIG = """
state: {state}
redis:
  url: {redis_url}
  key_prefix: "{prefix}"
upstreams:
  mock:
    base_url: {mock}/v1
    api_key_env: SOAK_UPSTREAM_KEY
    connect_timeout_s: 2
    read_timeout_s: 30
  dead:
    base_url: http://127.0.0.1:{dead_port}/v1
    api_key_env: SOAK_UPSTREAM_KEY
    connect_timeout_s: 1
    read_timeout_s: 5
tiers:
  small:
    upstream: mock
    model: bench-small
    price: {{ input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60 }}
    max_output_tokens: 64
  large:
    upstream: mock
    model: bench-large
    price: {{ input_usd_per_mtok: 2.50, output_usd_per_mtok: 10.00 }}
    max_output_tokens: 64
models:
  auto: {{ route: auto }}
embeddings:
  upstream: dead
  model: text-embedding-3-small
router:
  default: small
  fallbacks: {{}}
  health: {{ failures: 1000000000 }}
  rules:
    - name: refunds
      when: {{ keywords_any: [refund] }}
      route: large
tenants:
  soak:
    keys: [{{ env: SOAK_KEY }}]
    timezone: UTC
    budget: {{ daily_limit: 1000000 }}
    rate_limits: {{ per_tenant: {{ requests_per_minute: 1000000 }} }}
  limited:
    keys: [{{ env: SOAK_LIMITED_KEY }}]
    timezone: UTC
    rate_limits: {{ per_tenant: {{ requests_per_minute: {limited_rpm} }} }}
cache:
  enabled: true
  admit_after: 1
server:
  watch_config: false
"""

KINDS: dict[str, tuple[int, int]] = {  # kind: (weight, expected status)
    "cache": (30, 200),
    "small": (25, 200),
    "large": (10, 200),
    "stream": (20, 200),
    "404": (4, 404),
    "400": (4, 400),
    "503": (4, 503),
    "401": (3, 401),
    "limited": (15, 200),  # or 429: see ``one``
}
REPEATED = [f"How do I track order number batch {i}?" for i in range(20)]


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    answered_ids: list[str] = field(default_factory=list)  # authenticated and complete
    limited_ids: list[str] = field(default_factory=list)  # tenant `limited`: 200s and 429s
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    late_starts: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(
    url: str,
    what: str,
    process: subprocess.Popen[bytes],
    seconds: float = 60,
    log: Path | None = None,
) -> None:
    def detail() -> str:
        return f":\n{log.read_text('utf-8', 'replace')}" if log is not None else ""

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"soak: {what} exited with {process.returncode}{detail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"soak: {what} did not answer {url} within {seconds:.0f} s")


async def one(
    kind: str,
    n: int,
    client: openai.AsyncOpenAI,
    wrong: openai.AsyncOpenAI,
    limited: openai.AsyncOpenAI,
    tally: Tally,
) -> None:
    expected = KINDS[kind][1]
    model = "auto"
    extra: dict[str, Any] = {}
    use = limited if kind == "limited" else client
    if kind == "cache":
        text = REPEATED[n % len(REPEATED)]
    elif kind == "large":
        text = f"I want a refund for order {n}, it never arrived"
    else:
        text = f"Question {n}: where is my parcel?"
    if kind == "404":
        model = "no-such-model"
    elif kind == "400":
        extra["max_tokens"] = -1
    elif kind == "401":
        use = wrong
    messages: Any = [{"role": "user", "content": text}]
    started = time.perf_counter()
    status = 0
    request_id: str | None = None
    try:
        if kind == "503":
            raw_embedding = await use.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=text
            )
            raw_embedding.parse()
            status = raw_embedding.status_code
            request_id = raw_embedding.headers["x-switchboard-request-id"]
        elif kind == "stream":
            async with use.chat.completions.with_streaming_response.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            ) as response:
                got_usage = False
                async for chunk in await response.parse():
                    got_usage = got_usage or chunk.usage is not None
                if not got_usage:
                    raise RuntimeError("stream ended without its usage chunk")
                status, request_id = 200, response.headers["x-switchboard-request-id"]
        else:
            raw = await use.chat.completions.with_raw_response.create(
                model=model, messages=messages, **extra
            )
            raw.parse()
            status, request_id = raw.status_code, raw.headers["x-switchboard-request-id"]
    except openai.APIStatusError as exc:
        status = exc.status_code
        request_id = exc.response.headers.get("x-switchboard-request-id")
        if kind == "limited" and status == 429:
            if "retry-after" not in exc.response.headers:
                tally.unexpected.append(f"limited #{n}: 429 without retry-after")
                return
            expected = 429
    except Exception as exc:  # noqa: BLE001 - every failure is a finding, counted and named
        tally.unexpected.append(f"{kind} #{n}: {type(exc).__name__}: {exc}")
        return
    tally.latencies[kind].append(time.perf_counter() - started)
    tally.statuses[(kind, status)] += 1
    if status != expected:
        tally.unexpected.append(f"{kind} #{n}: status {status}, expected {expected}")
        return
    if kind != "401":
        if request_id is None:
            tally.unexpected.append(f"{kind} #{n}: no x-switchboard-request-id")
            return
        (tally.limited_ids if kind == "limited" else tally.answered_ids).append(request_id)


async def drive(
    base_url: str, seconds: float, rate: float, max_in_flight: int, seed: int, pid: int
) -> tuple[Tally, list[tuple[float, int]], float]:
    tally = Tally()
    rng = random.Random(seed)
    kinds = list(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key=KEY,
        max_retries=0,
        timeout=60,
        http_client=httpx.AsyncClient(limits=limits),
    )
    wrong = openai.AsyncOpenAI(base_url=base_url, api_key=WRONG_KEY, max_retries=0, timeout=60)
    limited = openai.AsyncOpenAI(base_url=base_url, api_key=LIMITED_KEY, max_retries=0, timeout=60)
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    samples: list[tuple[float, int]] = []
    cpu_start = cpu_s(pid)
    start = time.monotonic()
    next_sample = start

    async def run(kind: str, n: int) -> None:
        try:
            await one(kind, n, client, wrong, limited, tally)
        finally:
            gate.release()

    total = int(seconds * rate)
    for n in range(total):
        target = start + n / rate
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_kib(pid)))
            next_sample += 5.0
        if target > now:
            await asyncio.sleep(target - now)
        elif now - target > 1.0:
            tally.late_starts += 1
        await gate.acquire()
        task = asyncio.create_task(run(rng.choices(kinds, weights)[0], n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    samples.append((time.monotonic() - start, rss_kib(pid)))
    cpu_used = cpu_s(pid) - cpu_start
    await client.close()
    await wrong.close()
    await limited.close()
    return tally, samples, cpu_used


def ledger_rows(data_dir: Path) -> list[tuple[str, str, int, int, int]]:
    """(request_id, tenant, cost_micros, ts_us, status) of every record."""
    conn = sqlite3.connect(data_dir / "ledger.sqlite3")
    try:
        return conn.execute(
            "SELECT request_id, tenant, cost_micros, ts_us, status FROM requests"
        ).fetchall()
    finally:
        conn.close()


def answered_per_minute(rows: list[tuple[str, str, int, int, int]], tenant: str) -> list[int]:
    """Answered (200) records of ``tenant`` per epoch-aligned minute, the busiest first."""
    per_minute = Counter(r[3] // 60_000_000 for r in rows if r[1] == tenant and r[4] == 200)
    return sorted(per_minute.values(), reverse=True)


def settled_total(state: str, data_dir: Path, redis_url: str) -> tuple[int, int]:
    """(settled, reserved) over the tenant's day counters (all days the run touched)."""
    if state == "redis":
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            settled = reserved = 0
            for key in client.scan_iter(f"{PREFIX}budget:c:t/soak/day/*"):
                values = client.hmget(key, ["settled", "reserved"])
                settled += int(values[0] or 0)
                reserved += int(values[1] or 0)
            for key in client.scan_iter(f"{PREFIX}*"):
                client.delete(key)
            return settled, reserved
        finally:
            client.close()
    conn = sqlite3.connect(data_dir / "budget.sqlite3")
    try:
        row = conn.execute(
            "SELECT COALESCE(SUM(settled), 0), COALESCE(SUM(reserved), 0) FROM budget_counters "
            "WHERE key LIKE 't/soak/day/%'"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0]), int(row[1])


def median_between(samples: list[tuple[float, int]], lo: float, hi: float) -> float:
    values = [rss for t, rss in samples if lo <= t <= hi]
    if not values:
        raise SystemExit("soak: too short to sample memory; run at least a minute")
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length (default: 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (20)")
    parser.add_argument("--max-in-flight", type=int, default=64, help="concurrent requests")
    parser.add_argument("--state", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="mock think time (20)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--limited-rpm", type=int, default=120, help="tenant `limited`'s requests per minute"
    )
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    seconds = args.minutes * 60
    processes: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.TemporaryDirectory(prefix="switchboard-soak-")
    data_dir = Path(tmp.name) / "data"
    try:
        mock_port, gw_port = free_port(), free_port()
        mock = subprocess.Popen(
            [args.python, str(REPO / "bench" / "mock_upstream.py"), "--port", str(mock_port)]
            + ["--delay-ms", str(args.delay_ms)],
            stdout=subprocess.DEVNULL,
        )
        processes.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_http(f"{mock_url}/healthz", "the mock upstream", mock)
        config = Path(tmp.name) / "soak.yaml"
        config.write_text(
            CONFIG.format(
                state=args.state,
                redis_url=args.redis_url,
                prefix=PREFIX,
                mock=mock_url,
                dead_port=free_port(),
                limited_rpm=args.limited_rpm,
            ),
            "utf-8",
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
            "SOAK_KEY": KEY,
            "SOAK_LIMITED_KEY": LIMITED_KEY,
            "SOAK_UPSTREAM_KEY": "sk-upstream",
        }
        log_path = Path(tmp.name) / "gateway.log"
        log = log_path.open("wb")
        gateway = subprocess.Popen(
            [args.python, "-m", "gateway", "serve", "--config", str(config)]
            + ["--port", str(gw_port), "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        processes.append(gateway)
        gw_url = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{gw_url}/readyz", "gateway serve", gateway, log=log_path)
        load = os.getloadavg()
        print(
            f"soak: {args.minutes:g} min at {args.rate:g} req/s ({args.state}), gateway pid "
            f"{gateway.pid}, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True,
        )
        started_at = datetime.now(UTC)
        tally, samples, cpu_used = asyncio.run(
            drive(f"{gw_url}/v1", seconds, args.rate, args.max_in_flight, args.seed, gateway.pid)
        )
        load_after = os.getloadavg()
        gateway.send_signal(signal.SIGTERM)
        exit_status = gateway.wait(timeout=60)
        log.close()
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    rows = ledger_rows(data_dir)
    ledger_ids = [r[0] for r in rows if r[1] == "soak"]
    ledger_cost = sum(r[2] for r in rows if r[1] == "soak")
    limited_ledger_ids = [r[0] for r in rows if r[1] == "limited"]
    limited_minutes = answered_per_minute(rows, "limited")
    refused_429 = sum(c for (k, s), c in tally.statuses.items() if k == "limited" and s == 429)
    settled, reserved = settled_total(args.state, data_dir, args.redis_url)
    early = median_between(samples, seconds * 0.2, seconds * 0.4)
    late = median_between(samples, seconds * 0.8, seconds * 1.01)
    growth = late / early - 1
    sent = sum(tally.statuses.values()) + len([u for u in tally.unexpected if "status" not in u])
    checks = {
        "zero unexpected errors": not tally.unexpected,
        "RSS flat within 10%": abs(growth) <= 0.10,
        "ledger records == answered requests": sorted(ledger_ids) == sorted(tally.answered_ids),
        "budget settled == ledger cost sum": settled == ledger_cost,
        "no reservation left open": reserved == 0,
        "gateway exited cleanly on SIGTERM": exit_status in (0, -signal.SIGTERM),
        "limited tenant: ledger records == its 200s and 429s": sorted(limited_ledger_ids)
        == sorted(tally.limited_ids),
        f"rate limit held: at most {args.limited_rpm} answered in every minute window": all(
            n <= args.limited_rpm for n in limited_minutes
        ),
        "rate limit was reached (some 429s)": refused_429 > 0,
    }
    by_kind = {
        kind: {
            "requests": len(times),
            "p50_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(sorted(times)[int(len(times) * 0.99) - 1] * 1000, 1)
            if len(times) >= 100
            else None,
        }
        for kind, times in sorted(tally.latencies.items())
    }
    summary = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "state": args.state,
        "requests": sent,
        "late_starts": tally.late_starts,
        "statuses": {f"{k} {s}": c for (k, s), c in sorted(tally.statuses.items())},
        "unexpected": tally.unexpected[:20],
        "unexpected_count": len(tally.unexpected),
        "answered_authenticated": len(tally.answered_ids),
        "ledger_records": len(ledger_ids),
        "ledger_cost_micros": ledger_cost,
        "budget_settled_micros": settled,
        "budget_reserved_micros": reserved,
        "limited_rpm": args.limited_rpm,
        "limited_answered_per_minute": limited_minutes,
        "limited_refused_429": refused_429,
        "rss_kib_second_fifth_median": early,
        "rss_kib_last_fifth_median": late,
        "rss_growth": round(growth, 4),
        "rss_samples_kib": [s[1] for s in samples],
        "gateway_cpu_ms_per_request": round(cpu_used * 1000 / max(sent, 1), 3),
        "latency_by_kind": by_kind,
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "checks": checks,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(f"requests {sent} ({tally.late_starts} started over 1 s late), by kind and status:")
    for (kind, status), count in sorted(tally.statuses.items()):
        print(f"  {kind:>6} {status}: {count}")
    for line in tally.unexpected[:20]:
        print(f"  UNEXPECTED {line}")
    print(
        f"ledger records {len(ledger_ids)} / answered {len(tally.answered_ids)}; "
        f"budget settled {settled} / ledger cost {ledger_cost} µUSD (reserved {reserved})"
    )
    print(
        f"rate limit {args.limited_rpm}/min: answered per minute window {limited_minutes} "
        f"(busiest first), {refused_429} refused with 429"
    )
    print(
        f"RSS {early / 1024:.1f} MiB (2nd fifth) -> {late / 1024:.1f} MiB (last fifth): "
        f"{growth:+.1%}; gateway CPU {summary['gateway_cpu_ms_per_request']} ms/request"
    )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"written: {path}")
    tmp.cleanup()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
