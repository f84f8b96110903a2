"""Progress of long local work (`mine`, `bench`) on stderr: a status line on a terminal, log lines elsewhere.

A few lines of our own rather than rich or tqdm: one `\\r`-rewritten line and a throttled plain line
are all we draw, the rate comes from `core.speed`, and the runtime dependencies stay as they are.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..core.speed import SpeedMeter, status_line

RATE_WINDOW_S = 2.0  # the "current rate" of the status line
REDRAW_S = 0.5  # terminal redraws at most this often
CLEAR = "\r\x1b[K"  # carriage return, erase to the end of the line


class StatusLine:
    """One updating line when `stream` is a terminal; otherwise a plain line every `log_s`; none if quiet."""

    def __init__(self, label: str, *, stream: TextIO | None = None, quiet: bool = False, log_s: float = 10.0):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()
        self.period = REDRAW_S if self.live else log_s
        self.meter = SpeedMeter(windows=(RATE_WINDOW_S,), resolution=0.25)
        self.meter.add(0.0, 0)  # work starts at zero: the first update already has a rate
        self._shown_at = float("-inf") if self.live else 0.0  # plain lines start after one period
        self._drawn = False

    def update(self, tested: int, elapsed: float, share: float | None = None) -> None:
        """Record progress; redraw the line at most once per period."""
        self.meter.add(elapsed, tested)
        if self.quiet or elapsed - self._shown_at < self.period:
            return
        self._shown_at = elapsed
        line = f"{self.label}: {status_line(tested, self.meter.rate(RATE_WINDOW_S, partial=True), elapsed, share)}"
        if self.live:
            self.stream.write(CLEAR + line)
            self._drawn = True
        else:
            self.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the live line, so what follows starts on a clean line."""
        if self._drawn:
            self.stream.write(CLEAR)
            self.stream.flush()
            self._drawn = False
