"""Precision and recall of the masker and the handoff detector on labelled rows.

Masking rows: ``{"text", "entities": [{"type", "start", "end"}]}``; a found entity counts only
when its type and both ends equal a labelled one (span-exact). A second, looser count accepts a
found span of the right type that overlaps a labelled one, to tell boundary disagreements from
misses.

Handoff rows: ``{"text"}`` or ``{"messages"}`` with ``"labels"``: the signals expected (empty:
none). Scored per signal over every signal the detector raises, and as one yes/no "hand off".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.safety.entities import ENTITY_TYPES, Entity
from gateway.safety.handoff import SIGNALS, HandoffConfig, handoff_signals, messages_of
from gateway.safety.masking import Masker


@dataclass
class Score:
    """Counts for one type or signal."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "labelled": self.tp + self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
        }


def _key(entity: Mapping[str, Any] | Entity) -> tuple[str, int, int]:
    if isinstance(entity, Entity):
        return entity.type, entity.start, entity.end
    return str(entity["type"]), int(entity["start"]), int(entity["end"])


def evaluate_masking(
    rows: Iterable[Mapping[str, Any]], masker: Masker | None = None, *, keep_examples: int = 0
) -> dict[str, dict[str, Score]]:
    """``{"exact": {type: Score}, "overlap": {type: Score}}`` over ``rows``."""
    masker = masker or Masker()
    exact = {t: Score() for t in ENTITY_TYPES}
    overlap = {t: Score() for t in ENTITY_TYPES}
    for row in rows:
        text = str(row["text"])
        gold = {_key(e) for e in row.get("entities", [])}
        got = {_key(e) for e in masker.find(text)}
        for kind, start, end in got:
            hit = (kind, start, end) in gold
            score = exact[kind]
            if hit:
                score.tp += 1
            else:
                score.fp += 1
                if len(score.examples) < keep_examples:
                    score.examples.append(f"FP {text[start:end]!r} in {text!r}")
            near = any(g[0] == kind and g[1] < end and start < g[2] for g in gold)
            if near:
                overlap[kind].tp += 1
            else:
                overlap[kind].fp += 1
        for kind, start, end in gold:
            if (kind, start, end) not in got:
                exact[kind].fn += 1
                if len(exact[kind].examples) < keep_examples:
                    exact[kind].examples.append(f"FN {text[start:end]!r} in {text!r}")
            if not any(g[0] == kind and g[1] < end and start < g[2] for g in got):
                overlap[kind].fn += 1
    return {"exact": exact, "overlap": overlap}


def evaluate_handoff(
    rows: Iterable[Mapping[str, Any]],
    config: HandoffConfig | None = None,
    *,
    keep_examples: int = 0,
) -> dict[str, Score]:
    """``{signal: Score, ..., "any": Score}`` over ``rows``."""
    config = config or HandoffConfig()
    scores = {s: Score() for s in (*SIGNALS, "any")}
    for row in rows:
        messages = messages_of(row)
        expected = set(row.get("labels") or [])
        raised = {s.reason for s in handoff_signals(messages, config)}
        shown = row.get("text") or messages[-1].get("content", "") if messages else ""
        for signal in SIGNALS:
            _count(scores[signal], signal in raised, signal in expected, shown, keep_examples)
        _count(scores["any"], bool(raised), bool(expected), shown, keep_examples)
    return scores


def _count(score: Score, raised: bool, expected: bool, shown: object, keep: int) -> None:
    if raised and expected:
        score.tp += 1
    elif raised:
        score.fp += 1
        if len(score.examples) < keep:
            score.examples.append(f"FP {shown!r}")
    elif expected:
        score.fn += 1
        if len(score.examples) < keep:
            score.examples.append(f"FN {shown!r}")


def table(
    scores: Mapping[str, Score], targets: Mapping[str, tuple[float, float]], *, name: str = "type"
) -> str:
    """A Markdown table: counts, precision and recall, and the target each must meet."""
    header = f"| {name} | labelled | found right | wrong | missed | precision | recall |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    lines = [header + " target P / R |", rule + "---|"] if targets else [header, rule]
    for row, score in scores.items():
        line = (
            f"| {row} | {score.tp + score.fn} | {score.tp} | {score.fp} | {score.fn} | "
            f"{score.precision:.1%} | {score.recall:.1%} |"
        )
        if targets:
            target = targets.get(row)
            line += f" {target[0]:.0%} / {target[1]:.0%} |" if target else " |"
        lines.append(line)
    return "\n".join(lines)


MASKING_TARGETS: dict[str, tuple[float, float]] = {
    kind: ((0.97, 0.98) if kind in ("card", "cn_id", "iban") else (0.90, 0.95))
    for kind in ENTITY_TYPES
}


def rows_with_messages(rows: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    return [messages_of(row) for row in rows]
