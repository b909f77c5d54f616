"""How often the cascade would keep SmolLM2-135M's answers to ordinary support questions, and
what judging costs.

    .venv/bin/python bench/cascade_smollm2.py                 # 20 questions, writes bench/results/
    .venv/bin/python bench/cascade_smollm2.py --limit 40 --threshold 0.4
    .venv/bin/python bench/cascade_smollm2.py --rejudge bench/results/cascade-smollm2.json
        # the saved answers and log-probabilities judged again (after a change to the judge)

The questions are the first ``--limit`` rows without a handoff label of
``tests/safety/data/handoff_labelled.jsonl`` (English and Chinese, taken alternately), each
answered by the in-process SmolLM2 (2 threads, greedy, ``--max-tokens`` 64) as the gateway's
small tier would, and judged with :func:`gateway.safety.confidence.judge` at ``--threshold``.
Reported: the kept share (the large-tier calls the cascade would save), the signals that fired,
the median generation time per answer (wall time, so it depends on how busy the machine is) and
the judge's CPU time per answer. There is no ground truth here on whether a kept answer was a
good one: read the per-question answers in the JSON before trusting the threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.safety.confidence import CascadeConfig, judge  # noqa: E402
from gateway.tiers.base import TokenLogprob  # noqa: E402
from gateway.tiers.llama_cpp import LlamaCppTier  # noqa: E402

DATA = REPO / "tests" / "safety" / "data" / "handoff_labelled.jsonl"


def questions(limit: int) -> list[str]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    plain = [r["text"] for r in rows if "text" in r and not r["labels"]]
    chinese = [t for t in plain if any("\u4e00" <= c <= "\u9fff" for c in t)]
    english = [t for t in plain if t not in chinese]
    mixed: list[str] = []
    for en, zh in zip(english, chinese, strict=False):
        mixed += [en, zh]
    return mixed[:limit]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = CascadeConfig(enabled=True, threshold=args.threshold)
    tier = LlamaCppTier(
        name="small",
        model="smollm2",
        model_file=None,
        threads=args.threads,
        context_tokens=2048,
        queue_limit=4,
        queue_timeout_s=args.timeout,
        request_timeout_s=args.timeout,
    )
    rows: list[dict[str, Any]] = []
    try:
        await tier.warm_up()
        for text in questions(args.limit):
            started = time.perf_counter()
            answer = await tier.complete(
                {
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0,
                }
            )
            row = {
                "question": text,
                "answer": answer.text,
                "finish_reason": answer.body["choices"][0]["finish_reason"],
                "generation_s": round(time.perf_counter() - started, 3),
                "completion_tokens": answer.usage.completion_tokens if answer.usage else None,
                # Kept so the verdicts can be recomputed (--rejudge) after a change to the judge.
                "logprobs": [round(lp.logprob, 4) for lp in answer.logprobs or ()],
            }
            rows.append(judged(row, config))
    finally:
        await tier.aclose()
    return summary(rows, args, machine())


def judged(row: dict[str, Any], config: CascadeConfig) -> dict[str, Any]:
    """``row`` with the judge's verdict on its answer, judged as the gateway judges it."""
    logprobs = [TokenLogprob("", lp) for lp in row["logprobs"]]
    cpu = time.thread_time_ns()
    verdict = judge(row["answer"], logprobs, row["finish_reason"], config, question=row["question"])
    judge_us = (time.thread_time_ns() - cpu) / 1000
    return {
        **row,
        "score": round(verdict.score, 3),
        "kept": not verdict.escalate(config.threshold),
        "reasons": list(verdict.reasons),
        "judge_us": round(judge_us, 1),
    }


def rejudge(args: argparse.Namespace) -> dict[str, Any]:
    """The answers of a saved run (and their generation times) with today's verdicts."""
    saved = json.loads(args.rejudge.read_text(encoding="utf-8"))
    config = CascadeConfig(enabled=True, threshold=args.threshold)
    rows = [judged(row, config) for row in saved["rows"]]
    args.max_tokens, args.threads = saved["max_tokens"], saved["threads"]
    result = summary(rows, args, saved["machine"])
    result["answers_generated"] = saved.get("answers_generated", saved["when"])
    return result


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other processes share the cores: generation times are only as good as this.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def summary(
    rows: list[dict[str, Any]], args: argparse.Namespace, where: dict[str, Any]
) -> dict[str, Any]:
    kept = sum(r["kept"] for r in rows)
    signals = Counter(r.split(":")[0].split(" ")[0] for row in rows for r in row["reasons"])
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": where,
        "command": " ".join(["bench/cascade_smollm2.py", *sys.argv[1:]]),
        "threshold": args.threshold,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "questions": len(rows),
        "kept": kept,
        "kept_share": round(kept / len(rows), 3) if rows else 0.0,
        "signals": dict(signals.most_common()),
        "median_generation_s": round(statistics.median(r["generation_s"] for r in rows), 3),
        "median_judge_us": round(statistics.median(r["judge_us"] for r in rows), 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per answer")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/cascade-smollm2.json")
    parser.add_argument("--rejudge", type=Path, help="judge the answers of a saved run again")
    args = parser.parse_args()
    result = rejudge(args) if args.rejudge else asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
