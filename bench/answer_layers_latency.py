"""End-to-end latency of a chat request answered by each layer, through a real ``gateway serve``.

    .venv/bin/python bench/answer_layers_latency.py            # 300 requests per kind
    .venv/bin/python bench/answer_layers_latency.py --requests 100 --entries 10000

What it starts, all on 127.0.0.1: the instant mock upstream (``bench/mock_upstream.py``) and
``.venv/bin/gateway serve`` with a config of two tenants: ``answers`` (approved answers from
``config/answers/example.jsonl``, the matcher trained here) and ``semantic`` (the semantic cache,
exact cache off, its diskcache store preloaded with ``--entries`` entries: texts of CLINC150 and
Banking77 from ``../shared/data/support``, so lookups search a full index). Then, one request at a
time on one keep-alive connection, ``--requests`` of each kind:

- ``model``: a unique question the matcher abstains on (tenant ``answers``), answered by the
  mock small tier; ``model_semantic_miss``: the same for tenant ``semantic`` (a lookup that
  misses among the entries, then the answer embedded and stored in a worker thread);
- ``exact``: the same request again (exact cache);
- ``answers``: example wordings of the approved intents (approved answers);
- ``semantic``: preloaded texts asked again (semantic hit).

Reported per kind: p50 / p99 / mean milliseconds as the client sees them, and the share that
was answered by the expected layer (from ``x-switchboard-cache-layer``). Written to
``bench/results/answer-layers-latency.json``. The machine's cores are shared with the mock, the
client and anything else running: the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT.parent / "shared" / "data" / "support"
EXAMPLE = ROOT / "config" / "answers" / "example.jsonl"
KEY_A, KEY_S = "sk-bench-answers-0123456789", "sk-bench-semantic-0123456789"
SECRET = "bench-semantic-secret-" + "0" * 32

CONFIG = """
upstreams:
  mock: {{ base_url: "http://127.0.0.1:{port}/v1" }}
tiers:
  small:
    upstream: mock
    model: bench-small
    price: {{ input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }}
  large:
    upstream: mock
    model: gpt-4o
router: {{ default: small }}
tenants:
  answers:
    keys: [{{ env: BENCH_ANSWERS_KEY }}]
    answers: {{ file: "{answers}", model: "{model}" }}
  semantic:
    keys: [{{ env: BENCH_SEMANTIC_KEY }}]
    cache: false
    semantic_cache: {{ enabled: true, secret_env: BENCH_SEMANTIC_SECRET }}
cache: {{ enabled: true, admit_after: 1 }}
telemetry: {{ prometheus: false }}
server: {{ watch_config: false }}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def texts(limit: int) -> list[str]:
    out: list[str] = []
    for name in ("clinc150.dev.jsonl", "banking77.dev.jsonl"):
        with (DATA / name).open(encoding="utf-8") as fh:
            out.extend(json.loads(line)["text"] for line in fh)
    unique = list(dict.fromkeys(out))
    return unique[:limit]


def preload(data_dir: Path, questions: list[str]) -> int:
    """Store one entry per question in the semantic tenant's diskcache store, as the stage would."""
    from gateway.cache.semantic import DiskSemanticStore, SemanticCache, SemanticPolicy
    from gateway.cache.stage import CacheEntry, encode_entry

    cache = SemanticCache(
        DiskSemanticStore(data_dir / "semantic-cache"),
        secret=os.urandom(32),
        secrets={"semantic": SECRET.encode()},
        policies={"semantic": SemanticPolicy(max_entries=len(questions) + 10)},
    )
    stored = 0
    for i, text in enumerate(questions):
        body = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench-small",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer {i}", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
        }
        entry = CacheEntry(model="bench-small", body=body, prompt_tokens=12, completion_tokens=4)
        scope = ("model: auto",)
        if cache.store("semantic", text, encode_entry(entry), scope=scope) is not None:
            stored += 1
    cache.backend.close()
    return stored


def _letters() -> str:
    return "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(
    client: httpx.Client, key: str, questions: list[str], layer: str | None
) -> dict[str, Any]:
    """Ask each question once; client-side milliseconds and how many the expected layer took."""
    ms: list[float] = []
    expected = 0
    for text in questions:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        t0 = time.perf_counter()
        response = client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        ms.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        expected += response.headers.get("x-switchboard-cache-layer") == layer
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "answered_by_expected_layer": round(expected / len(ms), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--out", default=str(BENCH / "results" / "answer-layers-latency.json"))
    args = parser.parse_args(argv)

    from gateway.answers.file import load_answers
    from gateway.answers.training import Example, train

    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="answer-layers-"))
    model = work / "example.npz"
    answers = load_answers(EXAMPLE)
    train([Example(t, i) for t, i in answers.examples()]).save(model)
    questions = texts(args.entries)
    t0 = time.perf_counter()
    stored = preload(work / "data", questions)
    print(f"preloaded {stored} entries in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    procs: list[subprocess.Popen[str]] = []
    try:
        mock = subprocess.Popen(
            [python, str(BENCH / "mock_upstream.py"), "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(mock)
        assert mock.stdout is not None
        mock_port = int(mock.stdout.readline().rsplit(":", 1)[1])
        config = work / "gateway.yaml"
        config.write_text(CONFIG.format(port=mock_port, answers=EXAMPLE, model=model), "utf-8")
        port = free_port()
        env = {
            **os.environ,
            "BENCH_ANSWERS_KEY": KEY_A,
            "BENCH_SEMANTIC_KEY": KEY_S,
            "BENCH_SEMANTIC_SECRET": SECRET,
        }
        serve = [
            str(Path(python).parent / "gateway"),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--data-dir",
            str(work / "data"),
            "--log-level",
            "warning",
        ]
        with (work / "gateway.log").open("w") as log:
            procs.append(subprocess.Popen(serve, cwd=ROOT, env=env, stderr=log))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise SystemExit(f"gateway did not start; see {work / 'gateway.log'}")
            time.sleep(0.1)
        n = args.requests
        # Letters only: a code with a digit would make the question personalised (not cached).
        unique = [f"bench question {_letters()} about the weather" for _ in range(n)]
        wordings = [text for text, _ in answers.examples()]
        asked = [wordings[i % len(wordings)] for i in range(n)]
        again = [questions[(i * 37) % len(questions)] for i in range(n)]
        results: dict[str, Any] = {}
        with httpx.Client(base_url=base, timeout=30) as client:
            # Warm-up: the semantic tenant's index is read from the store at its first lookup.
            measure(client, KEY_S, again[:5], "semantic")
            measure(client, KEY_A, asked[:5], "answers")
            results["model"] = measure(client, KEY_A, unique, None)
            results["exact"] = measure(client, KEY_A, unique, "exact")
            results["answers"] = measure(client, KEY_A, asked, "answers")
            results["semantic"] = measure(client, KEY_S, again, "semantic")
            # Last: its stores push the oldest preloaded entries out (max_entries).
            fresh = [f"bench question {_letters()} about the weather" for _ in range(n)]
            results["model_semantic_miss"] = measure(client, KEY_S, fresh, None)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    doc = {
        "command": " ".join(["python bench/answer_layers_latency.py", *(argv or sys.argv[1:])]),
        "semantic_entries": stored,
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "results": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
