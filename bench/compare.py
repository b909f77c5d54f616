"""Switchboard side by side with LiteLLM's proxy: one invocation, one machine, the same load.

    python bench/compare.py                      # the full comparison, about 12 minutes
    python bench/compare.py --quick              # every kind of run, short (about 4 minutes)
    python bench/compare.py --no-litellm         # the gateway alone

All on 127.0.0.1, each in its own process, the same instant mock upstream behind every server:

- ``direct``: the load generator against the mock itself (what "added" is measured from);
- ``passthrough``: the bare Litestar + aiohttp forwarder (``bench/passthrough.py``), the floor;
- ``gateway``: ``gateway serve --workers 1`` with ``bench/configs/gateway.yaml`` (the example
  config plus a tenant budget and rate limit, telemetry on without exporter, embedded state);
- ``gateway-2w``: the same with ``--workers 2`` (scaling);
- ``litellm``: LiteLLM's proxy (``litellm --config ... --num_workers 1``) from its own venv,
  ``bench/.venv-litellm`` (created on first use: ``python3 -m venv bench/.venv-litellm &&
  bench/.venv-litellm/bin/pip install 'litellm[proxy]'``), the price map read offline
  (``LITELLM_LOCAL_MODEL_COST_MAP=True``), debug logging off, routing the same model name to the
  same mock.

Runs, in this order (``bench/README.md`` explains each):

1. time from process start to ready (gateway: ``/readyz`` 200, several starts; LiteLLM:
   ``/health/readiness`` 200);
2. resident memory (RSS) after start, after a warm-up and after 10k and 100k requests;
3. fixed connection counts (default 1, 10, 50 and 200): req/s, p50 / p99 and what each server adds over
   direct, CPU per request;
4. streaming time to first byte at 1 connection;
5. the highest req/s with p99 ≤ 50 ms: connections doubled from 1 until p99 passes the limit;
6. exact-cache hit end to end (one prompt repeated), and approved answers and the full pipeline
   (``bench/configs/full-pipeline.yaml``) when the config check accepts those files, else a note.

Writes ``bench/results/compare-<UTC timestamp>.{md,json}``. Bounded by an overall deadline
(``--max-minutes``); every process started is stopped again on success, error or Ctrl-C.
Standard library only; shares its process, load and report helpers with ``bench/overhead.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import overhead as oh

BENCH = oh.BENCH
ROOT = oh.ROOT
LITELLM_VENV = BENCH / ".venv-litellm"
GATEWAY_CONFIG = BENCH / "configs" / "gateway.yaml"
FULL_CONFIG = BENCH / "configs" / "full-pipeline.yaml"
ANSWERS_CONFIG = BENCH / "configs" / "answers.yaml"
P99_LIMIT_MS = 50.0
MASK_SECRET = "bench-mask-secret-0123456789abcdef"
# The exact-cache-hit run's prompt: it names no order (personalised requests bypass the cache).
CACHE_PROMPT = "What are your opening hours on weekends?"
# The approved-answers run's prompt: an example of the return_policy intent of
# config/answers/example.jsonl, which answers without a per-request placeholder.
ANSWER_PROMPT = "how do I return an item"
ANSWERS_FILE = ROOT / "config" / "answers" / "example.jsonl"

# Targets the issue sets (docs/benchmarks.md); reported as met / not met.
TARGETS = {
    "added_p50_ms_at_1": 0.6,
    "rps_one_worker": 2500.0,
    "litellm_ratio": 20.0,
    "cache_hit_p50_ms": 0.5,
    "ttft_added_ms": 1.0,
    # The issue says MB: 150 * 10^6 bytes = 143.1 MiB (the RSS table is in MiB).
    "rss_mb": 150.0,
    "rss_flat_share": 0.10,
    "ready_s": 2.0,
}


@dataclass
class Server:
    name: str
    url: str
    pid: int
    ready_s: float


# --------------------------------------------------------------------------- LiteLLM


def ensure_litellm(python: str) -> Path:
    """The LiteLLM proxy command in ``bench/.venv-litellm``, installing it there on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    sys.stderr.write(f"compare: installing litellm[proxy] into {LITELLM_VENV} (once)\n")
    subprocess.run([python, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
        check=True,
        timeout=900,
    )
    if not exe.exists():
        raise oh.BenchError(f"pip installed litellm but {exe} is missing")
    return exe


def litellm_version() -> str:
    done = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def litellm_config(upstream: str, path: Path) -> Path:
    """The proxy config: the benchmark's model name to the same mock, debug logging off."""
    path.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/bench-small\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  json_logs: false\n"
        "general_settings:\n"
        f"  master_key: {oh.API_KEY}\n"
    )
    return path


def litellm_command(exe: Path, config: Path, workers: int) -> tuple[list[str], dict[str, str], int]:
    port = oh.free_port()
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price map at start
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    return argv, env, port


# --------------------------------------------------------------------------- servers


def gateway_command(
    opts: oh.Options, config: Path, upstream: str, data_dir: Path, workers: int
) -> tuple[list[str], dict[str, str], int]:
    argv, env, port = oh.gateway_command(opts.gateway, config, upstream, data_dir)
    env["BENCH_MASK_SECRET"] = MASK_SECRET  # full-pipeline.yaml's masking key
    env["BENCH_ANSWERS_MODEL"] = str(answers_model_path(data_dir))
    return [*argv, "--workers", str(workers)], env, port


def answers_model_path(data_dir: Path) -> Path:
    """Where train_answers() writes the matcher: beside the gateways' data directories."""
    return data_dir.parent / "answers-model.npz"


def train_answers(opts: oh.Options, tmp: Path) -> str | None:
    """Train the approved-answers matcher on config/answers/example.jsonl; None or the error."""
    done = subprocess.run(
        [
            opts.gateway,
            "answers",
            "train",
            "--data",
            str(ANSWERS_FILE),
            "--out",
            str(tmp / "answers-model.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        return f"`gateway answers train` failed: {(done.stderr or done.stdout)[-300:]}"
    return None


def layer_sample(url: str, prompts: Sequence[str]) -> dict[str, int]:
    """Which layer answered each of a few requests (x-switchboard-cache-layer, else the route)."""
    seen: dict[str, int] = {}
    for text in prompts:
        status, headers, _ = post(
            url, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        )
        lower = {k.lower(): v for k, v in headers.items()}
        layer = (
            lower.get("x-switchboard-cache-layer") or f"route {lower.get('x-switchboard-route')}"
        )
        key = f"{status} {layer}"
        seen[key] = seen.get(key, 0) + 1
    return seen


def answers_run(
    opts: oh.Options, mock: str, tmp: Path, pids: dict[str, int], stack: contextlib.ExitStack
) -> dict[str, Any]:
    """One approved question again and again at 1 connection, the exact cache off."""
    argv, env, port = gateway_command(opts, ANSWERS_CONFIG, mock, tmp / "answers", 1)
    gw = stack.enter_context(started("gateway-answers", argv, env, port, tmp))
    seen = layer_sample(gw.url, [ANSWER_PROMPT] * 3)
    if seen != {"200 answers": 3}:
        return {"skipped": f"{ANSWER_PROMPT!r} was not answered by the answers layer: {seen}"}
    same = replace(opts, same_prompt=ANSWER_PROMPT)
    pids = {**pids, gw.name: gw.pid}
    d = oh.measure(same, "direct", mock, 1, pids, stream=False)
    g = oh.measure(same, gw.name, gw.url, 1, pids, stream=False)
    return {
        "config": str(ANSWERS_CONFIG.relative_to(ROOT)),
        "prompt": ANSWER_PROMPT,
        "p50_ms": g.p50_ms,
        "p99_ms": g.p99_ms,
        "added_p50_ms": g.p50_ms - d.p50_ms,
        "rps": g.rps,
        "cpu_ms_per_request": g.cpu_ms_per_request.get(gw.name),
    }


@contextlib.contextmanager
def started(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    log_dir: Path,
    ready_path: str = "/readyz",
) -> Iterator[Server]:
    timings: dict[str, float] = {}
    with oh.http_server(name, argv, env, port, log_dir, ready_path=ready_path, timings=timings) as (
        url,
        pid,
    ):
        yield Server(name, url, pid, timings["ready_s"])


def gateway_ready_times(
    opts: oh.Options, upstream: str, tmp: Path, starts: int, config: Path
) -> list[float]:
    """Seconds from ``gateway serve`` to ``/readyz`` 200, over several fresh starts."""
    times = []
    for i in range(starts):
        argv, env, port = gateway_command(opts, config, upstream, tmp / f"ready-{i}", 1)
        timings: dict[str, float] = {}
        with oh.http_server(f"gateway-ready-{i}", argv, env, port, tmp, timings=timings):
            pass
        times.append(round(timings["ready_s"], 3))
        sys.stderr.write(f"  gateway start {i + 1}: ready after {times[-1]:.3f} s\n")
    return times


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {oh.API_KEY}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


# --------------------------------------------------------------------------- runs


def rss_run(
    opts: oh.Options,
    server: Server,
    milestones: Sequence[int],
    pids: dict[str, int],
    max_seconds: float,
) -> dict[str, Any]:
    """RSS after start, after the warm-up, then after each total of requests (50 connections);
    after ``max_seconds`` of load it stops where it is, so a slow server cannot eat the run."""
    out: dict[str, Any] = {"after_start_mib": round(oh.tree_rss_mib(server.pid), 1)}
    sys.stderr.write(f"  {server.name}: RSS {out['after_start_mib']} MiB after start\n")
    oh._wrk(opts, server.url, 50, max(2.0, opts.warmup), False)
    out["after_warmup_mib"] = round(oh.tree_rss_mib(server.pid), 1)
    served = 0
    cpu0, t0 = oh.tree_cpu_seconds(server.pid), time.monotonic()
    for goal in milestones:
        if time.monotonic() - t0 > max_seconds:
            out[f"after_{served}_mib"] = round(oh.tree_rss_mib(server.pid), 1)
            out[f"after_{served}_requests"] = served
            out["stopped_early"] = f"{served:,} requests in {max_seconds:g} s, not {goal:,}"
            sys.stderr.write(f"  {server.name}: stopped after {out['stopped_early']}\n")
            break
        while served < goal and time.monotonic() - t0 <= max_seconds:
            # Chunks of at most 20 s, sized from the rate so far, so a slow server stops near goal.
            rate = served / (time.monotonic() - t0) if served else 500.0
            seconds = min(20.0, max(1.0, (goal - served) / max(rate, 1.0)))
            result = oh._wrk(opts, server.url, 50, seconds, False)
            if int(result["errors"]) or int(result["non_2xx"]):
                raise oh.BenchError(f"{server.name}: errors during the RSS run: {result}")
            served += int(result["requests"])
        if served < goal:
            continue  # out of time: recorded at the top of the next turn, or below
        out[f"after_{goal}_mib"] = round(oh.tree_rss_mib(server.pid), 1)
        out[f"after_{goal}_requests"] = served
        sys.stderr.write(
            f"  {server.name}: RSS {out[f'after_{goal}_mib']} MiB after {served:,} requests\n"
        )
    if served < milestones[-1] and "stopped_early" not in out:
        out[f"after_{served}_mib"] = round(oh.tree_rss_mib(server.pid), 1)
        out[f"after_{served}_requests"] = served
        out["stopped_early"] = f"{served:,} requests in {max_seconds:g} s, not {milestones[-1]:,}"
        sys.stderr.write(f"  {server.name}: stopped after {out['stopped_early']}\n")
    elapsed = time.monotonic() - t0
    out["rps"] = round(served / elapsed, 1) if elapsed else math.nan
    if served:
        out["cpu_ms_per_request"] = round(
            (oh.tree_cpu_seconds(server.pid) - cpu0) * 1000 / served, 3
        )
    return out


def sweep(
    opts: oh.Options, server: Server, pids: dict[str, int], max_connections: int
) -> dict[str, Any]:
    """Connections 1, 2, 4, ... until p99 passes the limit: the best req/s within it."""
    steps: list[dict[str, Any]] = []
    c = 1
    while c <= max_connections:
        run = oh.measure(opts, server.name, server.url, c, pids, stream=False)
        steps.append(
            {
                "connections": c,
                "rps": run.rps,
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
                "other_load_cores": run.other_load_cores,
            }
        )
        # Two steps over the limit in a row: past saturation (one may be a noisy moment).
        if len(steps) >= 2 and all(x["p99_ms"] > P99_LIMIT_MS for x in steps[-2:]):
            break
        c *= 2
    within = [s for s in steps if s["p99_ms"] <= P99_LIMIT_MS]
    best = max(within, key=lambda s: s["rps"]) if within else None
    return {"steps": steps, "best": best}


def cache_hit_run(
    opts: oh.Options, server: Server, direct: str, pids: dict[str, int]
) -> dict[str, Any]:
    """One prompt again and again at 1 connection: every answer but the first few is a hit."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": CACHE_PROMPT}],
    }
    seen = [post(server.url, body)[1].get("x-switchboard-cache", "") for _ in range(4)]
    if seen[-1] != "hit":
        return {"skipped": f"the 4th identical request was not a cache hit (headers: {seen})"}
    same = replace(opts, same_prompt=CACHE_PROMPT)
    d = oh.measure(same, "direct", direct, 1, pids, stream=False)
    g = oh.measure(same, server.name, server.url, 1, pids, stream=False)
    return {
        "connections": 1,
        "direct_p50_ms": d.p50_ms,
        "direct_p99_ms": d.p99_ms,
        "p50_ms": g.p50_ms,
        "p99_ms": g.p99_ms,
        "added_p50_ms": g.p50_ms - d.p50_ms,
        "rps": g.rps,
        "cpu_ms_per_request": g.cpu_ms_per_request.get(server.name),
    }


def full_pipeline_run(
    opts: oh.Options, mock: str, tmp: Path, pids: dict[str, int], stack: contextlib.ExitStack
) -> dict[str, Any]:
    """The gateway with bench/configs/full-pipeline.yaml at the fixed connection counts."""
    argv, env, port = gateway_command(opts, FULL_CONFIG, mock, tmp / "full", 1)
    full = stack.enter_context(started("gateway-full", argv, env, port, tmp))
    oh.check_answers(full.url, through_gateway=True)
    pids = {**pids, full.name: full.pid}
    out: dict[str, Any] = {"config": str(FULL_CONFIG.relative_to(ROOT))}
    # What answers the load's unique prompts (they name an order: personalised, and close to the
    # track_order intent), so the reader knows which path these figures are.
    out["answered by (10 sample requests)"] = layer_sample(
        full.url, [f"Where is my parcel? Order s-{i}, please check." for i in range(10)]
    )
    for c in opts.connections:
        d = oh.measure(opts, "direct", mock, c, pids, stream=False)
        g = oh.measure(opts, full.name, full.url, c, pids, stream=False)
        out[f"{c} conn"] = (
            f"{g.rps:,.0f} req/s, p50 {g.p50_ms:.3f} ms (added {g.p50_ms - d.p50_ms:.3f}), "
            f"p99 {g.p99_ms:.3f} ms, {g.cpu_ms_per_request.get(full.name, math.nan):.3f} ms "
            "CPU/request"
        )
    return out


def config_check(opts: oh.Options, config: Path, tmp: Path) -> str | None:
    """None when ``gateway config check`` accepts the file, else its complaint."""
    if not config.exists():
        return f"{config.relative_to(ROOT)} does not exist"
    env = {
        "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
        "SMALL_MODEL": "s",
        "LARGE_MODEL": "l",
        "DEMO_API_KEY": oh.API_KEY,
        "BENCH_MASK_SECRET": MASK_SECRET,
        "BENCH_ANSWERS_MODEL": str(tmp / "answers-model.npz"),
    }
    done = subprocess.run(
        [opts.gateway, "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
        cwd=ROOT,
    )
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip().splitlines()[-1][:300]


# --------------------------------------------------------------------------- report


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    by = {(r["target"], r["connections"]): r for r in report["runs"]}
    conns = sorted({r["connections"] for r in report["runs"]})
    names = [
        n
        for n in ("passthrough", "gateway", "gateway-2w", "litellm")
        if any(r["target"] == n for r in report["runs"])
    ]
    rows = []
    for c in conns:
        d = by.get(("direct", c))
        if d is None:
            continue
        for n in names:
            r = by.get((n, c))
            if r is None:
                continue
            rows.append(
                {
                    "connections": c,
                    "target": n,
                    "rps": r["rps"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "added_p50_ms": r["p50_ms"] - d["p50_ms"],
                    "added_p99_ms": r["p99_ms"] - d["p99_ms"],
                    "cpu_ms_per_request": r["cpu_ms_per_request"].get(n),
                    "other_load_cores": r["other_load_cores"],
                }
            )
    out: dict[str, Any] = {"rows": rows}
    tt = {r["target"]: r.get("ttfb_ms") or {} for r in report["ttfb_runs"]}
    if "direct" in tt:
        out["ttfb"] = {
            n: {q: tt[n].get(q, math.nan) - tt["direct"].get(q, math.nan) for q in ("p50", "p99")}
            | {"abs_p50": tt[n].get("p50")}
            for n in tt
            if n != "direct"
        }
    met: dict[str, Any] = {}
    one = next((r for r in rows if r["target"] == "gateway" and r["connections"] == 1), None)
    if one:
        met["added p50 at 1 connection ≤ 0.6 ms"] = (
            one["added_p50_ms"],
            one["added_p50_ms"] <= TARGETS["added_p50_ms_at_1"],
        )
    fifty = next((r for r in rows if r["target"] == "gateway" and r["connections"] == 50), None)
    if fifty:
        met["p99 ≤ 50 ms at 50 connections"] = (fifty["p99_ms"], fifty["p99_ms"] <= P99_LIMIT_MS)
    sweeps = report.get("sweeps", {})
    gw_best = (sweeps.get("gateway") or {}).get("best")
    if gw_best:
        met["≥ 2,500 req/s with one worker (p99 ≤ 50 ms)"] = (
            gw_best["rps"],
            gw_best["rps"] >= TARGETS["rps_one_worker"],
        )
        ll_best = (sweeps.get("litellm") or {}).get("best")
        if ll_best and ll_best["rps"]:
            ratio = gw_best["rps"] / ll_best["rps"]
            out["litellm_ratio"] = ratio
            met["≥ 20× LiteLLM's req/s (p99 ≤ 50 ms)"] = (ratio, ratio >= TARGETS["litellm_ratio"])
    hit = report.get("cache_hit") or {}
    if "p50_ms" in hit:
        met["exact-cache hit p50 ≤ 0.5 ms end to end"] = (
            hit["p50_ms"],
            hit["p50_ms"] <= TARGETS["cache_hit_p50_ms"],
        )
    if "gateway" in out.get("ttfb", {}):
        v = out["ttfb"]["gateway"]["p50"]
        met["streaming TTFT added ≤ 1 ms"] = (v, v <= TARGETS["ttft_added_ms"])
    rss = (report.get("rss") or {}).get("gateway") or {}
    if "after_warmup_mib" in rss:
        peak_mb = max(v for k, v in rss.items() if k.endswith("_mib")) * 1.048576
        met["RSS ≤ 150 MB (10^6 bytes; the table is in MiB)"] = (
            peak_mb,
            peak_mb <= TARGETS["rss_mb"],
        )
        if "after_10000_mib" in rss and "after_100000_mib" in rss:
            share = rss["after_100000_mib"] / rss["after_10000_mib"] - 1
            met["RSS flat (±10%) from 10k to 100k requests"] = (
                share * 100,
                abs(share) <= TARGETS["rss_flat_share"],
            )
    ready = report.get("ready", {}).get("gateway_s")
    if ready:
        med = statistics.median(ready)
        met["ready ≤ 2 s after start (median)"] = (med, med <= TARGETS["ready_s"])
    out["targets"] = {k: {"measured": v[0], "met": v[1]} for k, v in met.items()}
    return out


def render(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["summary"]
    lines = [
        f"# Switchboard and LiteLLM's proxy, {report['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}. **The load generator (wrk, 1 thread), the mock "
        "upstream and the server under test share these CPUs.**",
        "",
        f"Command: `{report['command']}` (code {report['code']}; LiteLLM "
        f"{report.get('litellm_version', 'not run')}). "
        f"Gateway: `{report.get('gateway_command', 'not started')}`. "
        f"LiteLLM: `{report.get('litellm_command', 'not run')}`. Runs of "
        f"{report['options']['duration']:g} s after {report['options']['warmup']:g} s warm-up; a "
        "unique prompt per request unless said otherwise.",
        "",
        "## Fixed connection counts",
        "",
        "| conns | server | req/s | p50 ms | p99 ms | **added p50 ms** | added p99 ms "
        "| CPU ms/req | other load (cores) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['connections']} | {r['target']} | {r['rps']:,.0f} | {_f(r['p50_ms'])} "
            f"| {_f(r['p99_ms'])} | **{_f(r['added_p50_ms'])}** | {_f(r['added_p99_ms'])} "
            f"| {_f(r['cpu_ms_per_request'])} | {r['other_load_cores']:.2f} |"
        )
    if report.get("sweeps"):
        lines += [
            "",
            f"## Highest req/s with p99 ≤ {P99_LIMIT_MS:g} ms (connections doubled)",
            "",
            "| server | best req/s | at conns | p50 ms | p99 ms | steps (conns: req/s, p99) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, sw in report["sweeps"].items():
            b = sw["best"] or {}
            steps = "; ".join(
                f"{x['connections']}: {x['rps']:,.0f}, {x['p99_ms']:.1f}" for x in sw["steps"]
            )
            lines.append(
                f"| {name} | {_f(b.get('rps'), 0)} | {b.get('connections', 'n/a')} "
                f"| {_f(b.get('p50_ms'))} | {_f(b.get('p99_ms'))} | {steps} |"
            )
        if "litellm_ratio" in s:
            lines += [
                "",
                f"Gateway (1 worker) / LiteLLM (1 worker): **{s['litellm_ratio']:.1f}×**.",
            ]
    if "ttfb" in s:
        lines += [
            "",
            "## Streaming time to first byte, 1 connection (added over direct)",
            "",
            "| server | added p50 ms | added p99 ms |",
            "|---|---:|---:|",
        ]
        for name, v in s["ttfb"].items():
            lines.append(f"| {name} | {_f(v['p50'])} | {_f(v['p99'])} |")
    hit = report.get("cache_hit")
    if hit:
        lines += ["", "## Exact-cache hit (one prompt repeated, 1 connection)", ""]
        if "skipped" in hit:
            lines.append(f"Skipped: {hit['skipped']}")
        else:
            lines.append(
                f"Gateway end to end p50 **{_f(hit['p50_ms'])} ms**, p99 {_f(hit['p99_ms'])} ms "
                f"({hit['rps']:,.0f} req/s, {_f(hit['cpu_ms_per_request'])} ms CPU/request); the "
                f"mock answers the same request in {_f(hit['direct_p50_ms'])} ms p50. LiteLLM: "
                "not measured (its cache is off by default and was left off)."
            )
    for key, title in (("answers", "Approved answers"), ("full_pipeline", "Full pipeline")):
        v = report.get(key)
        if v:
            lines += ["", f"## {title}", ""]
            lines.append(
                f"Skipped: {v['skipped']}"
                if "skipped" in v
                else "\n".join(f"- {k}: {v[k]}" for k in v)
            )
    if report.get("rss"):
        lines += [
            "",
            "## Resident memory (RSS, MiB, the process and its workers)",
            "",
            "| server | after start | after warm-up | later: after N requests |",
            "|---|---:|---:|---|",
        ]
        for name, r in report["rss"].items():
            later = ", ".join(
                f"{r[k]:,.1f} after {r[k.replace('_mib', '_requests')]:,}"
                for k in r
                if k.startswith("after_") and k[6].isdigit() and k.endswith("_mib")
            )
            lines.append(
                f"| {name} | {_f(r.get('after_start_mib'), 1)} "
                f"| {_f(r.get('after_warmup_mib'), 1)} | {later} |"
            )
        end = report.get("rss_at_end_mib") or {}
        if end:
            lines += [
                "",
                "After all the runs above: "
                + ", ".join(f"{name} {mib:,.1f} MiB" for name, mib in end.items())
                + ".",
            ]
    ready = report.get("ready", {})
    if ready:
        lines += ["", "## Start to ready", ""]
        if ready.get("gateway_s"):
            lines.append(
                f"- gateway (`/readyz` 200, {len(ready['gateway_s'])} fresh starts): "
                f"median {statistics.median(ready['gateway_s']):.3f} s "
                f"({', '.join(f'{x:.3f}' for x in ready['gateway_s'])})"
            )
        for name in ("gateway-2w", "litellm"):
            if name in ready:
                lines.append(f"- {name}: {ready[name]:.3f} s")
    if s["targets"]:
        lines += ["", "## Targets (issue 8)", ""]
        for k, v in s["targets"].items():
            lines.append(f"- {k}: {_f(v['measured'])} — **{'met' if v['met'] else 'NOT met'}**")
    other = max((r["other_load_cores"] for r in report["runs"] + report["ttfb_runs"]), default=0)
    lines += [
        "",
        f"Other processes used at most {other:.2f} cores during any fixed run"
        + (
            ": **contaminated by other work; rerun on a quiet machine**."
            if other > oh.OTHER_LOAD_LIMIT_CORES
            else "."
        ),
    ]
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--connections", type=oh._parse_connections, default=[1, 10, 50, 200], metavar="N,N"
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before a run")
    p.add_argument(
        "--sweep-duration",
        type=float,
        default=5.0,
        help="measured seconds per step of the p99 ≤ 50 ms search (default 5)",
    )
    p.add_argument("--sweep-max", type=int, default=256, help="most connections the search tries")
    p.add_argument("--rss-at", default="10000,100000", help="RSS after these totals (gateway)")
    p.add_argument("--litellm-rss-at", default="10000", help="RSS milestones for LiteLLM")
    p.add_argument(
        "--rss-max-s",
        type=float,
        default=180.0,
        help="most seconds of load per server's RSS run; it stops where it is (default 180)",
    )
    p.add_argument("--ready-starts", type=int, default=5, help="fresh gateway starts timed")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run the gateway with this many workers (0 = skip; default 2)",
    )
    p.add_argument("--no-litellm", dest="litellm", action="store_false")
    p.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the bare pass-through"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="wait up to this long for a quiet machine before each group",
    )
    p.add_argument("--retries", type=int, default=1)
    p.add_argument(
        "--quick",
        action="store_true",
        help="short runs for a busy machine: 3 s runs, 1 s warm-up, RSS at 10k only, "
        "2 starts, no waiting",
    )
    p.add_argument("--max-minutes", type=float, default=25.0, help="overall deadline")
    p.add_argument("--config", type=Path, default=GATEWAY_CONFIG)
    venv = ROOT / ".venv" / "bin"
    p.add_argument("--python", default=str(venv / "python"))
    p.add_argument("--gateway", default=str(venv / "gateway"))
    p.add_argument("--out-dir", type=Path, default=BENCH / "results")
    return p


def _milestones(text: str) -> list[int]:
    return sorted(int(x) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 - one straight script
    args = _parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.sweep_duration = 3.0, 1.0, 3.0
        args.rss_at, args.litellm_rss_at, args.ready_starts = "10000", "2000", 2
        args.rss_max_s = 30.0
        args.wait_idle, args.retries = 0.0, 0
    wrk = shutil.which("wrk")
    if not wrk:
        sys.stderr.write("compare.py: needs wrk (apt-get install -y wrk)\n")
        return 2
    if not Path(args.gateway).exists():
        sys.stderr.write(f"compare.py: no gateway command at {args.gateway}: run scripts/install\n")
        return 2
    opts = oh.Options(
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        stream=False,
        ttfb=True,
        ttfb_duration=args.duration,
        delay_ms=0.0,
        loadgen="wrk",
        wrk=wrk,
        wrk_threads=1,
        python=args.python,
        gateway=args.gateway,
        config=args.config.resolve(),
        out_dir=args.out_dir,
        baseline=args.baseline,
        profile=None,
        profile_connections=50,
        profile_duration=10.0,
        wait_idle=args.wait_idle,
        retries=args.retries,
    )
    signal.signal(signal.SIGTERM, oh._on_signal)
    signal.signal(signal.SIGALRM, oh._on_signal)
    signal.alarm(math.ceil(args.max_minutes * 60))
    started_at = datetime.now(UTC)
    out = args.out_dir / f"compare-{started_at.strftime('%Y%m%dT%H%M%SZ')}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    given = list(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "machine": oh.machine(),
        "command": " ".join(["python bench/compare.py", *given]),
        "code": oh.code_version(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
        "ttfb_runs": [],
        "notes": [],
    }
    try:
        exe = ensure_litellm(sys.executable) if args.litellm else None
        if exe is not None:
            report["litellm_version"] = litellm_version()
        with tempfile.TemporaryDirectory(prefix="switchboard-compare-") as tmp_name:
            tmp = Path(tmp_name)
            sys.stderr.write(f"compare: logs in {tmp} while running\n")
            with contextlib.ExitStack() as stack:
                mock, mock_pid = stack.enter_context(oh.mock_upstream(args.python, 0.0, tmp))
                oh.check_answers(mock, through_gateway=False)
                pids = {"mock": mock_pid}
                servers: list[Server] = []

                sys.stderr.write("start to ready:\n")
                if args.wait_idle:
                    oh.wait_until_quiet(args.wait_idle)
                report["ready"] = {
                    "gateway_s": gateway_ready_times(
                        opts, mock, tmp, args.ready_starts, opts.config
                    )
                }

                if args.baseline:
                    port = oh.free_port()
                    argv_pt = [
                        args.python,
                        str(BENCH / "passthrough.py"),
                        "--port",
                        str(port),
                        "--upstream",
                        f"{mock}/v1",
                    ]
                    servers.append(
                        stack.enter_context(started("passthrough", argv_pt, {}, port, tmp))
                    )
                gw_argv, gw_env, port = gateway_command(opts, opts.config, mock, tmp / "gw1", 1)
                report["gateway_command"] = " ".join(
                    [*(f"{k}={v}" for k, v in gw_env.items()), *oh._display_argv(gw_argv)]
                )
                gw = stack.enter_context(started("gateway", gw_argv, gw_env, port, tmp))
                report["gateway_check"] = oh.check_answers(gw.url, through_gateway=True)
                servers.append(gw)
                if args.workers > 1:
                    a2, e2, port = gateway_command(
                        opts, opts.config, mock, tmp / "gw2", args.workers
                    )
                    gw2 = stack.enter_context(started("gateway-2w", a2, e2, port, tmp))
                    oh.check_answers(gw2.url, through_gateway=True)
                    servers.append(gw2)
                    report["ready"]["gateway-2w"] = gw2.ready_s
                if exe is not None:
                    la, le, port = litellm_command(
                        exe, litellm_config(mock, tmp / "litellm.yaml"), 1
                    )
                    report["litellm_command"] = " ".join(
                        [*(f"{k}={v}" for k, v in le.items()), *oh._display_argv(la)]
                    )
                    ll = stack.enter_context(
                        started("litellm", la, le, port, tmp, "/health/readiness")
                    )
                    oh.check_answers(ll.url, through_gateway=False)
                    servers.append(ll)
                    report["ready"]["litellm"] = ll.ready_s
                pids |= {s.name: s.pid for s in servers}
                by_name = {s.name: s for s in servers}

                sys.stderr.write("resident memory:\n")
                report["rss"] = {
                    "gateway": rss_run(opts, gw, _milestones(args.rss_at), pids, args.rss_max_s)
                }
                if "litellm" in by_name:
                    report["rss"]["litellm"] = rss_run(
                        opts,
                        by_name["litellm"],
                        _milestones(args.litellm_rss_at),
                        pids,
                        args.rss_max_s,
                    )

                targets = [("direct", mock), *((s.name, s.url) for s in servers)]
                sys.stderr.write("fixed connection counts:\n")
                for c in args.connections:
                    report["runs"] += [
                        r.__dict__ for r in oh.run_group(opts, targets, c, pids, ttfb_run=False)
                    ]
                report["ttfb_runs"] = [
                    r.__dict__ for r in oh.run_group(opts, targets, 1, pids, ttfb_run=True)
                ]

                sys.stderr.write(f"highest req/s with p99 ≤ {P99_LIMIT_MS:g} ms:\n")
                sweep_opts = replace(opts, duration=args.sweep_duration, warmup=1.0)
                report["sweeps"] = {}
                for s in servers:
                    if args.wait_idle:
                        oh.wait_until_quiet(args.wait_idle)
                    report["sweeps"][s.name] = sweep(sweep_opts, s, pids, args.sweep_max)

                sys.stderr.write("exact-cache hit:\n")
                report["cache_hit"] = cache_hit_run(opts, gw, mock, pids)
                # Every server's memory after all its runs (the 2-worker gateway has no RSS run).
                report["rss_at_end_mib"] = {
                    s.name: round(oh.tree_rss_mib(s.pid), 1) for s in servers
                }
                sys.stderr.write("approved answers and the full pipeline:\n")
                problem = train_answers(opts, tmp) or config_check(opts, ANSWERS_CONFIG, tmp)
                if problem:
                    report["answers"] = {"skipped": problem}
                else:
                    report["answers"] = answers_run(opts, mock, tmp, pids, stack)
                problem = problem or config_check(opts, FULL_CONFIG, tmp)
                if problem:
                    report["full_pipeline"] = {"skipped": problem}
                else:
                    report["full_pipeline"] = full_pipeline_run(opts, mock, tmp, pids, stack)
        signal.alarm(0)
    except (oh.BenchError, subprocess.SubprocessError) as exc:
        sys.stderr.write(f"compare.py: {exc}\n")
        return 1
    except KeyboardInterrupt as exc:
        # Ctrl-C, SIGTERM or the --max-minutes deadline: keep what was measured.
        sys.stderr.write(f"compare.py: interrupted ({exc}); everything started was stopped\n")
        report["notes"].append(f"interrupted ({exc}): the runs after that point are missing")
        status = 130
    else:
        status = 0
    report["summary"] = summarise(report)
    markdown = render(report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown)
    sys.stdout.write(markdown + f"\nwritten: {out.with_suffix('.md')} and .json\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
