"""Hash rates over sliding windows from samples of a running total: the speed line and status lines.

A `SpeedMeter` keeps a bounded ring of (time, total hashes) samples; the rate over a window is the
growth of the total between the newest sample and the newest one at least that window older, so a
window reads "n/a" (None) until the meter has seen that much history, as xmrig's speed line does.

>>> meter = SpeedMeter(windows=(10.0, 60.0))
>>> for t in range(0, 31):
...     meter.add(float(t), 1000 * t)
>>> meter.rates()
(1000.0, None)
>>> speed_line(meter.rates(), meter.windows, active_jobs=1, jobs_completed=3, jobs_ended=4)
'speed 10s/60s 0.001 n/a M nonces/s; 1 active job(s), 3 completed of 4 ended'
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

DEFAULT_WINDOWS = (10.0, 60.0, 900.0)  # xmrig's 10 s / 60 s / 15 min


class SpeedMeter:
    """Rates over `windows` (seconds) from (time, running total) samples, in a bounded ring.

    Retained samples are at least `resolution` seconds apart, but for the newest, which later samples
    replace until it is that far from the one before; so the ring never holds more than max(windows) / resolution + 3.

    >>> m = SpeedMeter(windows=(2.0,), resolution=1.0)
    >>> for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5):
    ...     m.add(t, int(100 * t))
    >>> m.rate(2.0), m.rate(2.0, partial=True), m.rate(5.0), round(m.rate(5.0, partial=True))
    (100.0, 100.0, None, 100)
    >>> len(m) <= m.capacity
    True
    """

    def __init__(self, windows: Sequence[float] = DEFAULT_WINDOWS, resolution: float = 1.0):
        if not windows or min(windows) <= 0 or resolution <= 0:
            raise ValueError("windows and resolution must be positive")
        self.windows = tuple(float(w) for w in windows)
        self.resolution = float(resolution)
        self.capacity = math.ceil(max(self.windows) / self.resolution) + 3
        self._samples: deque[tuple[float, int]] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, t: float, total: int) -> None:
        """Record the running total `total` at time `t` (times never decrease)."""
        s = self._samples
        if len(s) >= 2 and s[-1][0] - s[-2][0] < self.resolution:
            s[-1] = (t, total)  # the newest is provisional until `resolution` after the one before
        else:
            s.append((t, total))

    def rate(self, window: float, *, partial: bool = False) -> float | None:
        """Hashes/s over at least `window` seconds up to the newest sample; None without that much history.

        `partial` falls back to the whole history held when it is shorter than the window (None only
        before two samples exist): the "current rate" of a status line that just started.
        """
        s = self._samples
        if len(s) < 2:
            return None
        t1, n1 = s[-1]
        base = None
        for t0, n0 in reversed(s):  # newest first: the first old enough is the tightest window
            if t1 - t0 >= window:
                base = (t0, n0)
                break
        if base is None:
            if not partial:
                return None
            base = s[0]
        t0, n0 = base
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def rates(self) -> tuple[float | None, ...]:
        """The rate over each of `windows`, in order."""
        return tuple(self.rate(w) for w in self.windows)


def window_label(seconds: float) -> str:
    """'10s', '60s', '15m', '1h'.

    >>> [window_label(w) for w in (10, 60, 900, 3600, 1.5)]
    ['10s', '60s', '15m', '1h', '1.5s']
    """
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds > 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def mega(rate: float | None) -> str:
    """A rate in M nonces/s with three decimals, or 'n/a'."""
    return "n/a" if rate is None else f"{rate / 1e6:.3f}"


def speed_line(rates: Sequence[float | None], windows: Sequence[float], *, active_jobs: int,
               jobs_completed: int, jobs_ended: int) -> str:
    """The periodic info line of `serve` and `devnet` (xmrig style: one figure per window)."""
    labels = "/".join(window_label(w) for w in windows)
    figures = " ".join(mega(r) for r in rates)
    return (f"speed {labels} {figures} M nonces/s; {active_jobs} active job(s), "
            f"{jobs_completed} completed of {jobs_ended} ended")


def duration(seconds: float) -> str:
    """Elapsed time as 'M:SS' or 'H:MM:SS'.

    >>> duration(5.4), duration(75), duration(3725)
    ('0:05', '1:15', '1:02:05')
    """
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def status_line(tested: int, rate: float | None, elapsed: float, share: float | None = None) -> str:
    """The live line of `mine` and `bench`: nonces tested, current rate, elapsed, share of the range.

    >>> status_line(12_345_678, 2.5e6, 75.2, 0.0312)
    '12,345,678 nonces  2.500 M/s  1:15  3.12 % of the range'
    >>> status_line(0, None, 0.2)
    '0 nonces  n/a M/s  0:00'
    """
    line = f"{tested:,} nonces  {mega(rate)} M/s  {duration(elapsed)}"
    if share is not None:
        line += f"  {100 * share:.2f} % of the range"
    return line
