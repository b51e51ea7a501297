"""A running study's progress: the fits done, the one running, the time so far and the time left.

Studies run for minutes to an hour and used to print nothing until "report written". `StudyProgress` prints
a line every 10 s in a log, or keeps one line up to date every second in a terminal, from a background
thread, so a fit that takes minutes still shows the clock moving. The time left comes from the last run of the
same preset in the same folder (its results.json keeps its wall time and its number of fits): fits still to
go at this run's pace, or that run's wall time less this one's so far; without one, no estimate is invented.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

from ..runtime import format_duration

__all__ = ["StudyProgress"]


@dataclass
class StudyProgress:
    name: str
    expected_fits: int | None = None  # the last run of this preset's, when there was one
    expected_seconds: float | None = None
    interval: float | None = None  # seconds between lines (default: 1 in a terminal, 10 in a log)
    stream: object = None  # default sys.stdout
    start: float = field(default_factory=time.monotonic)
    fit_seconds: list[float] = field(default_factory=list)
    running: str | None = None
    _fit_start: float = 0.0

    def __post_init__(self):
        self.stream = self.stream or sys.stdout
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.interval is None:
            self.interval = 1.0 if self.terminal else 10.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"study-progress-{self.name}", daemon=True)

    # --- what the fits report ----------------------------------------------------------------------

    def fit_started(self, label: str) -> None:
        self.running, self._fit_start = label, time.monotonic()

    def fit_done(self) -> None:
        self.fit_seconds.append(time.monotonic() - self._fit_start)
        self.running = None

    # --- what is shown -----------------------------------------------------------------------------

    def left(self) -> float | None:
        """Seconds left by the last run's measure, or None where there is none to go by."""
        elapsed = time.monotonic() - self.start
        if self.expected_fits and self.fit_seconds:
            in_fit = time.monotonic() - self._fit_start if self.running else 0.0
            to_go = max(0, self.expected_fits - len(self.fit_seconds))
            return max(0.0, to_go * statistics.mean(self.fit_seconds) - in_fit)
        if self.expected_seconds:
            return max(0.0, self.expected_seconds - elapsed)
        return None

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = len(self.fit_seconds)
        total = f" of ~{self.expected_fits}" if self.expected_fits else ""
        parts = [f"study {self.name}: {format_duration(elapsed)}", f"{done}{total} fit(s) done"]
        if self.running:
            parts.append(f"running {self.running} ({format_duration(time.monotonic() - self._fit_start)})")
        left = self.left()
        if left is not None:
            parts.append(f"~{format_duration(left)} left" if left > 0 else "longer than the last run")
        return ", ".join(parts)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self.terminal:
                self.stream.write("\r\033[K" + self.line())
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def __enter__(self) -> StudyProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.terminal:  # the live line gives way to what the study prints next
            self.stream.write("\r\033[K")
            self.stream.flush()
