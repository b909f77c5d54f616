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

Before/after on a shared machine: ``--baseline DIR`` measures another copy of the code (e.g.
``git archive <commit> gateway | tar -x -C DIR``) and this one alternately, ``--rounds`` times,
each in a fresh process, so both see the same background load; per set the medians over the
rounds are reported, and the p50 range over every run of every round::

    .venv/bin/python bench/classifier_latency.py --baseline /tmp/old --rounds 5
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
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

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


def measure(
    code: Path, data_dir: Path, runs: int, seed: int, weights: str | None
) -> dict[str, Any]:
    """Every set ``runs`` times with the classifier of the code tree ``code``, in this process."""
    sys.path.insert(0, str(code))
    from gateway.routing.evaluation import measure_latency

    sets = {**routing_sets(data_dir, seed), **synthetic_sets(seed)}
    results: dict[str, Any] = {}
    sticks = []
    for name, conversations in sets.items():
        per_run = []
        for _ in range(runs):
            sticks.append(yardstick())
            per_run.append(measure_latency(conversations, weights=weights))
        results[name] = {**summarise(per_run), "p50_us_runs": [r["p50_us"] for r in per_run]}
        r = results[name]
        print(f"{name}: p50 {r['p50_us']:.1f} µs ({r['p50_us_min']}-{r['p50_us_max']})", flush=True)
    return {"sets": results, "yardstick_us": sticks}


def measure_in_child(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``measure`` in a fresh interpreter, so two code trees never share a process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, __file__, "--child", str(code), "--child-out", str(out)]
        cmd += ["--data-dir", args.data_dir, "--runs", str(args.runs), "--seed", str(args.seed)]
        if args.weights:
            cmd += ["--weights", args.weights]
        subprocess.run(cmd, check=True)
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return result


def combine(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per set, over rounds: median of the rounds' p50/p90/p99/mean, p50 range over all runs."""
    out: dict[str, Any] = {}
    for name in rounds[0]["sets"]:
        per = [r["sets"][name] for r in rounds]
        every_p50 = [v for r in per for v in r["p50_us_runs"]]

        def med(key: str, per: list[Any] = per) -> float:
            return round(float(statistics.median(float(r[key]) for r in per)), 1)

        out[name] = {
            "n_per_run": per[0]["n_per_run"],
            "rounds": len(per),
            "runs_per_round": per[0]["runs"],
            "p50_us": med("p50_us"),
            "p50_us_min": round(min(every_p50), 1),
            "p50_us_max": round(max(every_p50), 1),
            "p90_us": med("p90_us"),
            "p99_us": med("p99_us"),
            "mean_us": med("mean_us"),
            "p50_us_per_round": [r["p50_us"] for r in per],
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument(
        "--baseline", default=None, help="another copy of the code to measure against"
    )
    parser.add_argument("--baseline-label", default="baseline", help="what --baseline is")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: alternations")
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "classifier-latency.json")
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = measure(Path(args.child), Path(args.data_dir), args.runs, args.seed, args.weights)
        Path(args.child_out).write_text(json.dumps(result), encoding="utf-8")
        return 0

    started = datetime.now(UTC)
    info = machine()
    baseline: dict[str, Any] | None = None
    if args.baseline is None:
        measured = measure(REPO, Path(args.data_dir), args.runs, args.seed, args.weights)
        results = {
            name: {k: v for k, v in r.items() if k != "p50_us_runs"}
            for name, r in measured["sets"].items()
        }
        sticks = measured["yardstick_us"]
    else:
        before: list[dict[str, Any]] = []
        after: list[dict[str, Any]] = []
        for i in range(args.rounds):
            for label, code, into in (
                (args.baseline_label, Path(args.baseline), before),
                ("this code", REPO, after),
            ):
                print(f"== round {i + 1}/{args.rounds}: {label} ({code})", flush=True)
                into.append(measure_in_child(code, args))
        results = combine(after)
        sticks = [v for r in before + after for v in r["yardstick_us"]]
        baseline = {"code": args.baseline_label, "sets": combine(before)}
    doc: dict[str, Any] = {
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
        "perf_counter per call, after a 200-call warm-up; p50 = median over runs (min-max)"
        + (
            "; with a baseline: both measured alternately in fresh processes, medians over "
            "the rounds, min-max over every run"
            if baseline
            else ""
        ),
        "sets": results,
    }
    if baseline:
        doc["baseline"] = baseline
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {out}\n")
    print(markdown(doc))
    return 0


def markdown(doc: Mapping[str, Any]) -> str:
    if "baseline" in doc:
        return markdown_comparison(doc)
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


def markdown_comparison(doc: Mapping[str, Any]) -> str:
    base = doc["baseline"]
    first = doc["sets"][next(iter(doc["sets"]))]
    rows: list[str] = [
        f"| prompts ({first['rounds']} rounds × {first['runs_per_round']} runs) "
        f"| p50 {base['code']} | p50 this code | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    for name, r in doc["sets"].items():
        b = base["sets"][name]
        rows.append(
            f"| {name} | {b['p50_us']:,.0f} µs ({b['p50_us_min']:,.0f}-{b['p50_us_max']:,.0f}) "
            f"| **{r['p50_us']:,.0f} µs** ({r['p50_us_min']:,.0f}-{r['p50_us_max']:,.0f}) "
            f"| {b['p90_us']:,.0f} → {r['p90_us']:,.0f} µs "
            f"| {b['p99_us']:,.0f} → {r['p99_us']:,.0f} µs |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
