"""Hand-written fakes of our own interfaces (simonw/llm style), for tests that need no disk."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gateway.ledger import LedgerQuery, LedgerRecord, SummaryRow


class FakeLedger:
    """A ledger in memory: ``history`` holds every record, in order."""

    def __init__(self) -> None:
        self.history: list[LedgerRecord] = []

    def record(self, rec: LedgerRecord) -> None:
        self.history.append(rec)

    def flush(self, timeout: float = 10.0) -> None:
        return None

    def close(self) -> None:
        return None

    def records(self, query: LedgerQuery) -> Iterator[LedgerRecord]:
        return iter(self.history)

    def count(self, query: LedgerQuery) -> int:
        return len(self.history)

    def summarize(self, query: LedgerQuery, group_by: Sequence[str]) -> list[SummaryRow]:
        raise AssertionError("FakeLedger does not summarise; use SqliteLedger in that test")
