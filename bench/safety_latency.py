"""Latency of the safeguards per message: masking, handoff detection, streamed restore.

    .venv/bin/python bench/safety_latency.py              # 5 runs, writes bench/results/
    .venv/bin/python bench/safety_latency.py --runs 3 --data-dir /path/to/shared/data

Each measurement is the thread's CPU time (``thread_time_ns``; ``--wall`` for ``perf_counter_ns``)
around one call on one message, after a warm-up pass. CPU time, because this machine's 2 cores
are shared: wall time there measures the other processes as much as this code. Measured:

* ``Masker.mask(text)`` (all types, a tenant secret, so value hashes are computed too);
* ``handoff_signals([{"role": "user", "content": text}])`` with the shipped config;
* ``Restorer.feed`` over an answer of the same length cut into 4-character deltas (the cost per
  delta, as a stream would pay it).

Message sets: "typical 300 chars" (hand-written support messages of 280-320 characters, English,
Chinese and mixed, each with 0-3 personal values), the labelled masking set, and, when
``../shared/data`` is there, 2,000 real English support requests from bitext and banking77
(mostly without digits: the cheap path). Reported per set: median p50 over the runs with its
min-max, and the median p90, p99 and mean, in microseconds; ``sum(range(1000))`` is timed alongside
as a yardstick of how busy the machine was. Results go to ``bench/results/safety-latency.json``
and a Markdown table is printed for ``docs/safety.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.safety import Masker, Restorer, handoff_signals, tenant_secret  # noqa: E402

TYPICAL = [
    "Hi, I ordered a pair of running shoes last Tuesday (order 558201) and the tracking page "
    "still says label created. Could you check what is going on? I paid with my card "
    "4111 1111 1111 1111 and chose express shipping, which cost extra. If it helps, my phone "
    "is +1 (415) 555-2671 and my e-mail is dana.whitfield@gmail.com. Thanks a lot for the help!",
    "Hello, I want to return the blue jacket from my last order because the size is wrong. The "
    "website says I have 30 days, and it has been 12 days since delivery. Do I need to print a "
    "label, or can the courier bring one? I would also like to know how long the refund takes to "
    "reach my card, and whether the original shipping cost is refunded as well. Many thanks.",
    "你好，我上周在你们店买了一台空气净化器，订单号是202405121234567890，到现在还没有发货。我的手机号是"
    "13812345678，收货地址是北京市朝阳区建国路88号SOHO现代城3号楼1201室。请帮我查一下什么时候能发货，"
    "如果这周内发不了货，我想申请退款，钱退回原来的银行卡就可以。另外发票请开公司抬头，发到我的邮箱"
    "zhangsan_2020@qq.com，谢谢！",
    "客服你好，我想咨询一下你们的退货政策。我买的衣服尺码不合适，已经收到三天了，吊牌还在，没有洗过。"
    "请问可以七天无理由退货吗？运费是谁出？退货以后多久能收到退款？另外我还想换一个大一号的，但是页面"
    "显示已经没有库存了，请问什么时候会补货？如果补货的话能不能提醒我一下？谢谢你们，辛苦了。麻烦尽快回复，"
    "我这边比较着急，周末之前需要处理好。",
    "Hi 我的订单 still hasn't arrived. I ordered on 2024-05-12 and paid ¥1388 with my card. "
    "The courier says the address is wrong: it should be 上海市徐汇区漕溪北路18号, not 81号. "
    "Please call me on 13011112222 or write to amy.zhou@gmail.com, and refund to IBAN "
    "DE89 3704 0044 0532 0130 00 if you cannot deliver this week. 谢谢!",
    "I was charged twice for the same order. The first payment failed with an error page, so I "
    "tried again, and now my bank statement shows two charges of $86.40 from your store on the "
    "same day. Can you refund one of them? I have screenshots of both if you need them, and I "
    "can send the bank statement as well. The order itself arrived fine, no complaints there.",
]


CLOCK = time.thread_time_ns


def measure(fn: Callable[[str], Any], texts: Sequence[str]) -> list[float]:
    """Microseconds per call, one call per text."""
    for text in texts[:200]:
        fn(text)
    out = []
    clock = CLOCK
    for text in texts:
        start = clock()
        fn(text)
        out.append((clock() - start) / 1000)
    return out


def restore_cost(masker: Masker) -> Callable[[str], Any]:
    def run(text: str) -> None:
        masked = masker.mask(text)
        answer = masked.text
        restorer = Restorer(masked.placeholders)
        deltas = [answer[i : i + 4] for i in range(0, len(answer), 4)]
        start = CLOCK()
        for delta in deltas:
            restorer.feed(delta)
        restorer.flush()
        per_delta = (CLOCK() - start) / 1000 / max(1, len(deltas))
        run.per_delta.append(per_delta)  # type: ignore[attr-defined]

    run.per_delta = []  # type: ignore[attr-defined]
    return run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(runs: list[list[float]]) -> dict[str, float]:
    p50s = [statistics.median(r) for r in runs]
    return {
        "p50_us": round(statistics.median(p50s), 2),
        "p50_min_us": round(min(p50s), 2),
        "p50_max_us": round(max(p50s), 2),
        "p90_us": round(statistics.median(percentile(r, 0.90) for r in runs), 2),
        "p99_us": round(statistics.median(percentile(r, 0.99) for r in runs), 2),
        "mean_us": round(statistics.median(statistics.fmean(r) for r in runs), 2),
        "messages": len(runs[0]),
    }


def yardstick() -> float:
    start = CLOCK()
    for _ in range(200):
        sum(range(1000))
    return (CLOCK() - start) / 200 / 1000


def message_sets(data_dir: Path, seed: int) -> dict[str, list[str]]:
    typical = [t for t in TYPICAL for _ in range(200)]
    labelled = [
        json.loads(line)["text"]
        for line in (REPO / "tests/safety/data/masking_labelled.jsonl").open(encoding="utf-8")
    ]
    sets = {"typical 300 chars": typical, "labelled masking set": labelled * 8}
    real: list[str] = []
    for name in ("bitext.dev.jsonl", "banking77.dev.jsonl"):
        path = data_dir / "support" / name
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                real.extend(json.loads(line)["text"] for line in fh if line.strip())
    if real:
        sets["real support requests"] = random.Random(seed).sample(real, min(2000, len(real)))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/safety-latency.json")
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of CPU time")
    args = parser.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter_ns

    masker = Masker(secret=tenant_secret(b"bench-master-key", "acme"))
    sets = message_sets(args.data_dir, args.seed)
    lengths = {name: statistics.mean(len(t) for t in texts) for name, texts in sets.items()}
    results: dict[str, dict[str, Any]] = {}
    yard: list[float] = []
    for name, texts in sets.items():
        mask_runs, handoff_runs, restore_runs = [], [], []
        for _ in range(args.runs):
            yard.append(yardstick())
            mask_runs.append(measure(masker.mask, texts))
            handoff_runs.append(
                measure(lambda t: handoff_signals([{"role": "user", "content": t}]), texts)
            )
            run = restore_cost(masker)
            measure(run, texts)
            restore_runs.append(run.per_delta[len(texts[:200]) :])  # type: ignore[attr-defined]
        results[name] = {
            "mean_chars": round(lengths[name]),
            "mask": summary(mask_runs),
            "handoff": summary(handoff_runs),
            "restore_per_delta": summary(restore_runs),
        }
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "clock": "perf_counter_ns (wall)" if args.wall else "thread_time_ns (CPU)",
        "load_average": os.getloadavg(),
        "yardstick_sum_range_1000_us": round(statistics.median(yard), 2),
        "sets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}\n")
    print("| set | mean chars | what | p50 µs (min-max over runs) | p90 µs | p99 µs | mean µs |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, r in results.items():
        for what in ("mask", "handoff", "restore_per_delta"):
            s = r[what]
            print(
                f"| {name} | {r['mean_chars']} | {what.replace('_', ' ')} | {s['p50_us']} "
                f"({s['p50_min_us']}-{s['p50_max_us']}) | {s['p90_us']} | {s['p99_us']} | "
                f"{s['mean_us']} |"
            )
    print(f"\nyardstick sum(range(1000)): {document['yardstick_sum_range_1000_us']} µs")


if __name__ == "__main__":
    main()
