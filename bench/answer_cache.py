"""Every figure of the answer cache (issue 6), from the evaluation sets in ../shared/data.

    .venv/bin/python bench/answer_cache.py                    # all of it, about 6 minutes
    .venv/bin/python bench/answer_cache.py --only semantic    # the semantic cache, ~30 s
    .venv/bin/python bench/answer_cache.py --only answers --sets bitext

Writes ``bench/results/answers.json`` and ``bench/results/semantic-cache.json`` and prints a
summary. The data is read in place, never copied into the repository.

Approved answers (``gateway answers eval`` does the same for one pair of files): train on the
rows with ``"split": "train"`` and test on the others; Bitext has no split field, so its rows are
split by a hash of the text (``crc32(text) % 10 < 7``: 70% train), which keeps a row's side fixed
across runs and machines. The threshold is what ``train`` chose by cross-validation on the
training rows for the target error (1%); nothing is tuned on the test rows. Reported: coverage
(share of test rows answered), error (share of answered rows with the wrong intent), the
latency of one match (p50 over every test row, after the model is loaded and warm), and the
share of CLINC150's out-of-scope test questions (791, about nothing either set covers) that the
model answers anyway.

Semantic cache (``gateway cache replay`` / ``gateway cache match`` do the same): the default
policy and embedder, one tenant, an empty cache; a miss is stored with its row as the answer.
A hit is false when the served row has another intent (for CLINC150, also when both are
out-of-scope: they must not hit one another). Streams are shuffled with fixed seeds (0-4);
``threshold_sweep`` shows the hit-rate / false-hit trade-off on Bitext seed 0. Latency: 10,000
CLINC150 questions stored, then one lookup at a time for 2,000 others.
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
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.answers.commands import evaluate  # noqa: E402
from gateway.answers.training import Example, train  # noqa: E402
from gateway.cache.semantic import MemorySemanticStore, SemanticCache, SemanticPolicy  # noqa: E402
from gateway.embedder import default_embedder  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
SECRET = b"bench-secret-bench-secret-bench!"


def rows_of(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split(
    name: str, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if all("split" in r for r in rows):
        train_rows = [r for r in rows if r["split"] == "train"]
        test_rows = [r for r in rows if r["split"] != "train" and not r["split"].startswith("oos_")]
        if name == "clinc150":  # out-of-scope test rows: any answer to them is wrong
            test_rows = [r for r in rows if r["split"] in ("test", "oos_test")]
        return train_rows, test_rows
    side = [zlib.crc32(r["text"].encode()) % 10 < 7 for r in rows]
    return [r for r, s in zip(rows, side, strict=True) if s], [
        r for r, s in zip(rows, side, strict=True) if not s
    ]


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- approved answers ----------------------------------------------------------------------------


def bench_answers(data: Path, sets: Sequence[str]) -> dict[str, Any]:
    files = {
        "bitext": "support/bitext.dev.jsonl",
        "banking77": "support/banking77.dev.jsonl",
        "clinc150": "support/clinc150.dev.jsonl",
    }
    out: dict[str, Any] = {}
    clinc = rows_of(data / files["clinc150"])
    out_of_scope = [r["text"] for r in clinc if r["split"] == "oos_test"]
    for name in sets:
        train_rows, test_rows = split(name, rows_of(data / files[name]))
        train_rows = [r for r in train_rows if r["intent"] != "oos"]
        started = time.monotonic()
        model = train([Example(r["text"], r["intent"]) for r in train_rows], target_error=0.01)
        seconds = time.monotonic() - started
        result = evaluate(model, [(r["text"], r["intent"]) for r in test_rows])
        answered_oos = sum(model.predict(text).intent is not None for text in out_of_scope)
        result.update(
            out_of_scope_answered=answered_oos / len(out_of_scope),
            support_floor=model.support_floor,
            train_rows=len(train_rows),
            intents=len(model.classes),
            cv=model.meta["cv"],
            train_seconds=round(seconds, 1),
            split="split field" if all("split" in r for r in train_rows) else "crc32(text)%10<7",
        )
        out[name] = result
        print(
            f"answers {name:9}: coverage {result['coverage']:.1%} error {result['error']:.2%} "
            f"(threshold {result['threshold']:.3f}; CV {model.meta['cv']}) "
            f"match p50 {result['latency_ms_p50']:.3f} ms, trained in {seconds:.0f} s; "
            f"CLINC150 out-of-scope answered {result['out_of_scope_answered']:.1%}",
            flush=True,
        )
    return out


# --- semantic cache ------------------------------------------------------------------------------


def new_cache(**policy: Any) -> SemanticCache:
    return SemanticCache(
        MemorySemanticStore(),
        secret=SECRET,
        embedder=default_embedder(),
        default=SemanticPolicy(**policy),
    )


def replay(rows: list[dict[str, Any]], seed: int, **policy: Any) -> dict[str, Any]:
    order = list(rows)
    random.Random(seed).shuffle(order)
    cache = new_cache(**policy)
    hits = false = oos_hits = 0
    reasons: dict[str, int] = {}
    for index, row in enumerate(order):
        found = cache.lookup("bench", row["text"])
        reason = found.reason.split(" (")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
        if found.hit is None:
            cache.store("bench", row["text"], str(index).encode())
            continue
        served = order[int(found.hit.answer)]
        hits += 1
        if served["intent"] != row["intent"] or row["intent"] == "oos":
            false += 1
            oos_hits += row["intent"] == "oos" and served["intent"] == "oos"
    return {
        "seed": seed,
        "requests": len(order),
        "hits": hits,
        "false_hits": false,
        "oos_hit_oos": oos_hits,
        "hit_rate": hits / len(order),
        "false_hit_share": false / hits if hits else 0.0,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "hit_rate_mean": statistics.mean(r["hit_rate"] for r in runs),
        "false_hit_share_mean": statistics.mean(r["false_hit_share"] for r in runs),
        "false_hit_share_max": max(r["false_hit_share"] for r in runs),
        "hit_rate_min": min(r["hit_rate"] for r in runs),
        "runs": runs,
    }


def bench_semantic(data: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    policy = SemanticPolicy()
    out["default_policy"] = {
        f: getattr(policy, f)
        for f in ("threshold", "ttl_s", "max_entries", "multi_turn", "personalised")
    }
    bitext = rows_of(data / "support/bitext.dev.jsonl")
    clinc = [
        r
        for r in rows_of(data / "support/clinc150.dev.jsonl")
        if r["split"] in ("test", "oos_test")
    ]
    banking = [r for r in rows_of(data / "support/banking77.dev.jsonl") if r["split"] == "test"]
    for name, rows in (("bitext", bitext), ("clinc150", clinc), ("banking77", banking)):
        result = summary([replay(rows, seed) for seed in SEEDS])
        out[f"{name}_stream"] = result
        print(
            f"semantic {name:9} stream: hit rate {result['hit_rate_mean']:.1%} (min "
            f"{result['hit_rate_min']:.1%}), false hits "
            f"{result['false_hit_share_mean']:.2%} of hits "
            f"(max {result['false_hit_share_max']:.2%}) over seeds {SEEDS}",
            flush=True,
        )
    out["bitext_personalised_stream"] = summary(
        [replay(bitext, s, personalised=True) for s in SEEDS]
    )
    r = out["bitext_personalised_stream"]
    print(
        f"semantic bitext personalised: hit rate {r['hit_rate_mean']:.1%}, false hits "
        f"{r['false_hit_share_mean']:.2%}",
        flush=True,
    )
    sweep = []
    for threshold in (0.75, 0.78, 0.8, 0.82, 0.85, 0.88, 0.9, 0.95):
        run = replay(bitext, 0, threshold=threshold)
        sweep.append(
            {"threshold": threshold, **{k: run[k] for k in ("hit_rate", "false_hit_share")}}
        )
        print(
            f"  bitext threshold {threshold:.2f}: hit rate {run['hit_rate']:.1%}, false hits "
            f"{run['false_hit_share']:.2%}",
            flush=True,
        )
    out["bitext_threshold_sweep"] = sweep

    # The pairs, and pairs of our own written after the glossary (bench/data/): a check
    # that the glossary is not just the words.
    for key, path in (
        ("zh_en_pairs", data / "support/zh_en_pairs.jsonl"),
        ("zh_pairs_own", ROOT / "bench/data/zh_pairs_own.jsonl"),
    ):
        out[key] = pair_matches(rows_of(path))
        z = out[key]
        print(
            f"semantic {key}: near misses rejected "
            f"{z['near_misses_rejected']}/{z['near_misses']}, "
            f"paraphrases matched {z['paraphrases_matched']}/{z['paraphrases']}",
            flush=True,
        )

    out["lookup_latency"] = latency(data)
    lat = out["lookup_latency"]
    print(
        f"semantic lookup with {lat['entries']} entries: p50 {lat['lookup_ms_p50']:.3f} ms, p99 "
        f"{lat['lookup_ms_p99']:.3f} ms; store p50 {lat['store_ms_p50']:.3f} ms",
        flush=True,
    )
    return out


def pair_matches(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row: q1 stored in an empty cache, q2 looked up (``gateway cache match``)."""
    detail = []
    for row, pair in enumerate(pairs):
        cache = new_cache()
        cache.store("pairs", pair["q1"], b"q1")
        found = cache.lookup("pairs", pair["q2"])
        detail.append(  # by row number: the results do not copy the evaluation data
            {
                "row": row,
                "same": pair["same"],
                "match": found.hit is not None,
                "score": found.score,
                "reason": found.reason,
            }
        )
    same = [d for d in detail if d["same"]]
    different = [d for d in detail if not d["same"]]
    return {
        "paraphrases_matched": sum(d["match"] for d in same),
        "paraphrases": len(same),
        "near_misses_rejected": sum(not d["match"] for d in different),
        "near_misses": len(different),
        "pairs": detail,
    }


def latency(data: Path, entries: int = 10_000, lookups: int = 2_000) -> dict[str, Any]:
    clinc = rows_of(data / "support/clinc150.dev.jsonl")
    stored = list(dict.fromkeys(r["text"] for r in clinc if r["split"] in ("train", "val")))
    asked = [r["text"] for r in clinc if r["split"] == "test"][:lookups]
    cache = new_cache(personalised=True, max_entries=entries)
    store_times = []
    for i, text in enumerate(stored[:entries]):
        started = time.perf_counter()
        cache.store("bench", text, str(i).encode())
        store_times.append(time.perf_counter() - started)
    times = []
    for text in asked:
        started = time.perf_counter()
        cache.lookup("bench", text)
        times.append(time.perf_counter() - started)
    times.sort()
    store_times.sort()
    return {
        "entries": cache.size("bench"),
        "lookups": len(times),
        "lookup_ms_p50": times[len(times) // 2] * 1000,
        "lookup_ms_p90": times[int(len(times) * 0.9)] * 1000,
        "lookup_ms_p99": times[int(len(times) * 0.99)] * 1000,
        "store_ms_p50": store_times[len(store_times) // 2] * 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", choices=["answers", "semantic"])
    parser.add_argument("--sets", default="bitext,banking77", help="answers: comma-separated")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "semantic"):
        result = {"environment": environment(), **bench_semantic(data)}
        (out / "semantic-cache.json").write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        )
    if args.only in (None, "answers"):
        sets = [s for s in args.sets.split(",") if s]
        result = {"environment": environment(), **bench_answers(data, sets)}
        (out / "answers.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
