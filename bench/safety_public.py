"""The safeguards on public support requests nobody here wrote (``../shared/data/support``).

    .venv/bin/python bench/safety_public.py [--data-dir ../shared/data]

None of these sets is labelled for masking or handoff, but some of their intent labels say
what a handoff detector should do, and none of them holds personal data:

* bitext ``contact_human_agent`` rows ask for a person: recall of ``human_request``; the other 26
  intents should not raise it (``contact_customer_service`` rows are listed apart: "I'd like to
  speak to customer service" asks for people too, by most readings);
* banking77 ``terminate_account`` rows ask to close an account: recall of the shipped
  ``close_account`` intent; the other 76 intents should not raise it;
* every row of bitext, banking77 and clinc150: how often each signal fires at all, and how many
  values the masker finds (every one is a false positive: the sets hold no personal data; the
  order numbers in bitext are unlabelled and 11+ digits, a good test of phone precision).

Prints Markdown for docs/safety.md and writes ``bench/results/safety-public.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.safety import Masker, handoff_signals  # noqa: E402


def rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/safety-public.json")
    args = parser.parse_args()
    support = args.data_dir / "support"
    masker = Masker()
    result: dict[str, Any] = {}
    print("| set | rows | masked values (all false) | handoff raised | by signal |")
    print("|---|---:|---:|---:|---|")
    raised: dict[str, list[set[str]]] = {}
    for name in ("bitext", "banking77", "clinc150"):
        data = rows(support / f"{name}.dev.jsonl")
        signals = [
            {s.header_value for s in handoff_signals([{"role": "user", "content": r["text"]}])}
            for r in data
        ]
        raised[name] = signals
        masked = sum(len(masker.find(r["text"])) for r in data)
        by_signal = Counter(s.split(":")[0] for found in signals for s in found)
        flagged = sum(1 for found in signals if found)
        result[name] = {
            "rows": len(data),
            "masked_values": masked,
            "handoff_rows": flagged,
            "by_signal": dict(by_signal),
        }
        shown = ", ".join(f"{k} {v}" for k, v in by_signal.most_common())
        share = f"{flagged} ({flagged / len(data):.1%})"
        print(f"| {name} | {len(data)} | {masked} | {share} | {shown} |")
    print()
    print("| check | positives | recall | false alarms on other intents |")
    print("|---|---:|---:|---|")
    for name, intent, signal in (
        ("bitext", "contact_human_agent", "human_request"),
        ("banking77", "terminate_account", "intent:close_account"),
    ):
        data = rows(support / f"{name}.dev.jsonl")
        hits = [signal in found for found in raised[name]]
        positives = [h for r, h in zip(data, hits, strict=True) if r["intent"] == intent]
        others = Counter(
            r["intent"] for r, h in zip(data, hits, strict=True) if h and r["intent"] != intent
        )
        negatives = sum(1 for r in data if r["intent"] != intent)
        recall = sum(positives) / len(positives)
        false = sum(others.values())
        result[f"{name}:{intent}"] = {
            "signal": signal,
            "positives": len(positives),
            "recall": round(recall, 4),
            "false_alarms": false,
            "negatives": negatives,
            "false_alarms_by_intent": dict(others),
        }
        shown = ", ".join(f"{k} {v}" for k, v in others.most_common())
        print(
            f"| {name} `{intent}` -> `{signal}` | {len(positives)} | {recall:.1%} | "
            f"{false} of {negatives} ({shown or 'none'}) |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
