"""A progress bar on stderr for long commands (training, replay)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    pass


class ProgressBar:
    """A ``training.Progress`` callback for stderr: one redrawn ``\\r`` line per stage on a
    terminal; on anything else (a log, CI) a plain line at the start of a stage, every 10% and at
    its end."""

    LABELS = {"features": "features", "fit": "fitting", "calibrate": "calibrating", "cv": "cv"}

    def __init__(
        self,
        stream: IO[str],
        *,
        tty: bool | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.clock = clock
        self._stage: str | None = None
        self._open = False  # a \r line is drawn and not yet ended
        self._last_decile = -1
        self._start = clock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        label = self.LABELS.get(stage, stage)
        total = max(total, 1)
        done = min(max(done, 0), total)
        if stage != self._stage:
            if self._open:
                self.stream.write("\n")
                self._open = False
            self._stage = stage
            self._last_decile = -1
        elapsed = self.clock() - self._start
        if self.tty:
            filled = self.width * done // total
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(
                f"\r{label:>11} [{bar}] {done}/{total} {done / total:4.0%} {elapsed:5.1f}s"
            )
            self._open = done < total
            if done >= total:
                self.stream.write("\n")
        else:
            decile = 10 * done // total
            if decile > self._last_decile or done >= total:
                if done < total or self._last_decile < 10:
                    self.stream.write(
                        f"{label}: {done}/{total} ({done / total:.0%}, {elapsed:.1f}s)\n"
                    )
                self._last_decile = 10 if done >= total else decile
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
