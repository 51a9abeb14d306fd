"""Durations and progress lines with an ETA, for loops that would otherwise say nothing."""
from __future__ import annotations

import logging
import time
from typing import Optional


def format_duration(seconds: float) -> str:
    """'4m05s', '1h02m03s'."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLog:
    """Logs `done/total` with the rate and the ETA, at most every `interval_seconds`.

    For loops that otherwise print nothing until they end (an evaluation at multi-scale +
    flip on VOC takes minutes). The first update after the first interval is logged, and
    so is the last (`done == total`) when the loop took longer than one interval.
    """

    def __init__(self, what: str, total: int, unit: str, *, interval_seconds: float = 30.0,
                 clock=time.monotonic):
        self.what, self.total, self.unit = what, total, unit
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._start = self._last = clock()
        self.done = 0

    def update(self, count: int) -> Optional[str]:
        """Adds `count` finished items; returns the line it logged, if any."""
        self.done += count
        now = self._clock()
        finished = self.done >= self.total
        if now - self._last < self.interval_seconds and not (
                finished and now - self._start >= self.interval_seconds):
            return None
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        line = (f"{self.what}: {self.done}/{self.total} {self.unit} "
                f"({100.0 * self.done / max(self.total, 1):.0f}%), {rate:.3g} {self.unit}/s, ")
        line += (f"took {format_duration(elapsed)}" if finished else
                 f"ETA {format_duration((self.total - self.done) / max(rate, 1e-9))}")
        logging.info("%s", line)
        return line
