"""Latency of one routing decision by the difficulty classifier (features + score + top features).

    .venv/bin/python bench/classifier_latency.py                  # ../shared/data, 5 runs
    .venv/bin/python bench/classifier_latency.py --runs 3 --data-dir /path/to/data

Each measurement is ``gateway.routing.evaluation.measure_latency``: ``perf_counter`` around
``DifficultyClassifier.score(messages)`` (the shipped weights, top-3 features), one conversation
at a time, after a warm-up on the first 200. Prompt sets:

* the routing dev prompts in ``../shared/data/routing/`` (GSM8K, a seeded MMLU sample, MT-Bench
  repeated so its percentiles mean something); the data is read in place, never copied;
* synthetic edge cases: a 200-turn support conversation, a ~200k-token prompt and Chinese-only
  prompts.

Every set is measured ``--runs`` times; reported per set: the median p50 over the runs with its
min-max, and the median p90, p99 and mean. ``sum(range(1000))`` is timed alongside as a yardstick
of how busy the machine was. Results go to ``bench/results/classifier-latency.json`` and a
Markdown table is printed for ``docs/routing.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.routing.evaluation import measure_latency  # noqa: E402

Conversation = list[dict[str, Any]]


def user(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


def read_prompts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["prompt"] for line in fh if line.strip()]


def routing_sets(data_dir: Path, seed: int) -> dict[str, list[Conversation]]:
    root = data_dir / "routing"
    rng = random.Random(seed)
    gsm = read_prompts(root / "gsm8k.dev.jsonl")
    mmlu = read_prompts(root / "mmlu.dev.jsonl")
    mt = read_prompts(root / "mt_bench.dev.jsonl")
    return {
        f"GSM8K dev prompts (all {len(gsm):,})": [user(p) for p in gsm],
        f"MMLU dev prompts (3,000 of {len(mmlu):,}, seeded sample)": [
            user(p) for p in rng.sample(mmlu, 3000)
        ],
        f"MT-Bench dev prompts ({len(mt)}, each 20 times)": [user(p) for p in mt] * 20,
    }


SUPPORT_TURNS = [
    ("user", "Hi, my order {n} has not arrived yet and it has been {d} days."),
    ("assistant", "Sorry to hear that! Let me check order {n} for you. One moment please."),
    ("user", "Thanks. I also want to change the delivery address to 12 Park Lane, Leeds."),
    ("assistant", "Done: the address is updated. The parcel should arrive in {d} working days."),
]

ZH_PHRASES = [
    "我的订单还没有到",
    "请问怎么修改收货地址",
    "我想申请退款",
    "这个产品坏了，能换一个吗",
    "快递已经三天没有更新了",
    "会员费每个月扣两次是怎么回事",
    "如果我今天下单，什么时候能到",
    "小明有十二个苹果，给了小红一半，又买了五个，现在有几个",
    "请帮我把发票抬头改成公司名称",
    "为什么我的账户被冻结了",
]


def synthetic_sets(seed: int) -> dict[str, list[Conversation]]:
    rng = random.Random(seed)
    # 200 turns: a system prompt and 199 alternating support turns, the last one the user's
    long_chat: Conversation = [{"role": "system", "content": "You are a helpful support agent."}]
    for i in range(199):
        role, text = SUPPORT_TURNS[i % len(SUPPORT_TURNS)]
        long_chat.append({"role": role, "content": text.format(n=10_000 + i, d=i % 9 + 1)})
    long_chat[-1] = {"role": "user", "content": "So how many days in total until it arrives?"}
    # ~200k tokens: about 4.2 characters per token for English prose
    paragraph = (
        "The customer reports that the parcel was damaged in transit, that two of the five items "
        "were missing, and asks whether a refund or a replacement is possible within 30 days. "
    )
    huge = paragraph * (840_000 // len(paragraph))
    chinese = [
        user("，".join(rng.choice(ZH_PHRASES) for _ in range(rng.randint(1, 4))) + "？")
        for _ in range(2000)
    ]
    return {
        "200-turn conversation (same one 300 times)": [long_chat] * 300,
        f"~200k-token prompt ({len(huge):,} characters, 50 times)": [user(huge)] * 50,
        "Chinese-only prompts (2,000 generated, 1-4 clauses)": chinese,
    }


def yardstick() -> float:
    """Median µs of ``sum(range(1000))``: how fast this machine is running Python right now."""
    times = []
    for _ in range(2000):
        start = time.perf_counter()
        sum(range(1000))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in run("lscpu").splitlines()
            if line.startswith("Model name:")
        ),
        platform.processor() or "unknown",
    )
    import numpy

    return {
        "nproc": int(run("nproc").strip() or os.cpu_count() or 0),
        "cpu": model,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def summarise(runs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    p50 = [r["p50_us"] for r in runs]

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 1)

    return {
        "n_per_run": int(runs[0]["n"]),
        "runs": len(runs),
        "p50_us": med("p50_us"),
        "p50_us_min": round(min(p50), 1),
        "p50_us_max": round(max(p50), 1),
        "p90_us": med("p90_us"),
        "p99_us": med("p99_us"),
        "mean_us": med("mean_us"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "classifier-latency.json")
    )
    args = parser.parse_args(argv)

    started = datetime.now(UTC)
    info = machine()
    sets = {**routing_sets(Path(args.data_dir), args.seed), **synthetic_sets(args.seed)}
    results: dict[str, Any] = {}
    sticks = []
    for name, conversations in sets.items():
        runs = []
        for _ in range(args.runs):
            sticks.append(yardstick())
            runs.append(measure_latency(conversations, weights=args.weights))
        results[name] = summarise(runs)
        r = results[name]
        print(f"{name}: p50 {r['p50_us']} µs ({r['p50_us_min']}-{r['p50_us_max']})", flush=True)
    doc = {
        "command": "python bench/classifier_latency.py " + " ".join(argv or sys.argv[1:]),
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": info,
        "yardstick_sum_range_1000_us": {
            "median": round(statistics.median(sticks), 2),
            "min": round(min(sticks), 2),
            "max": round(max(sticks), 2),
        },
        "what": "one decision: features + score + top-3 features (DifficultyClassifier.score), "
        "perf_counter per call, after a 200-call warm-up; p50 = median over runs (min-max)",
        "sets": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {out}\n")
    print(markdown(doc))
    return 0


def markdown(doc: Mapping[str, Any]) -> str:
    rows: list[str] = [
        f"| prompts ({doc['sets'][next(iter(doc['sets']))]['runs']} runs each) "
        "| p50: median (min-max) | p90 (median) | p99 (median) |",
        "|---|---|---|---|",
    ]
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f} µs"  # noqa: E731
    for name, r in doc["sets"].items():
        rows.append(
            f"| {name} | **{fmt(r['p50_us'])}** ({r['p50_us_min']:,.0f}-{r['p50_us_max']:,.0f}) "
            f"| {fmt(r['p90_us'])} | {fmt(r['p99_us'])} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
