"""What waiting for each ledger record's commit costs, against letting the writer batch.

    .venv/bin/python bench/ledger_commit_cost.py [--records 3000]

The ledger stage waits for its record's commit before an answer's last byte
(docs/reliability.md). This records N records one at a time into a fresh ledger, in two modes,
twice each: ``batched`` (record, then 1 ms until the next, as one connection's requests arrive;
the writer lingers up to 20 ms and commits many at once) and ``committed`` (record, then wait
for its commit, as the gateway now does). Prints the process CPU time per record (all threads)
and the time one record's wait adds. Standard library and the gateway only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ledger import LedgerRecord, SqliteLedger  # noqa: E402


def _record(i: int) -> LedgerRecord:
    return LedgerRecord(
        request_id=f"r{i}",
        ts=datetime.now(UTC),
        tenant="t",
        requested_model="auto",
        route="small",
        model="m",
        prompt_tokens=20,
        completion_tokens=7,
        cost_micros=10,
        large_cost_micros=20,
        latency_ms=1.0,
        status=200,
        stream=False,
        reasons=("default",),
        features={"len": 3},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=3000)
    n = parser.parse_args().records
    for mode in ("batched", "committed", "batched", "committed"):
        with tempfile.TemporaryDirectory() as tmp:
            ledger = SqliteLedger(Path(tmp) / "ledger.sqlite3")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            slept = 0.0
            for i in range(n):
                ledger.record(_record(i))
                if mode == "committed":
                    done = threading.Event()
                    ledger.when_committed(done.set)
                    done.wait()
                else:
                    before = time.perf_counter()
                    time.sleep(0.001)
                    slept += time.perf_counter() - before
            ledger.flush()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0 - slept
            ledger.close()
        print(
            f"{mode:9s} CPU {cpu / n * 1e6:6.1f} µs/record; "
            f"time in record()/wait {wall / n * 1e6:6.1f} µs/record"
        )


if __name__ == "__main__":
    main()
