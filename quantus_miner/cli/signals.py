"""Stopping on SIGINT and SIGTERM: the first signal stops the command cleanly, a second exits at once.

The one exit-status policy for every command (README, "What you see in a terminal"):

| command | graceful stop by SIGTERM | by SIGINT (Ctrl-C) | a second signal |
|---|---|---|---|
| daemons: `serve`, `connect`, `worker` | 0 | 130 | 128 + signal, at once |
| one-shot: `mine`, `bench`, `devnet` | 143 | 130 | 128 + signal, at once |

A service manager stops a daemon with SIGTERM, and that stop is a success (systemd, like nginx,
Prometheus and hypercorn, then records the unit as stopped, not failed). A one-shot command stopped
before it finished did not do its job, and shells expect 128 + the signal number for that.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


DAEMONS = frozenset({"serve", "connect", "worker"})
ONE_SHOT = frozenset({"mine", "bench", "devnet"})

#: the signal that stopped this process gracefully, if any (`cli.main` then skips interpreter teardown)
stopped_by: int | None = None


def exit_status(signum: int) -> int:
    """128 + the signal number: a one-shot command's status, and every command's after a second signal.

    >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM)
    (130, 143)
    """
    return 128 + signum


def stop_status(command: str, signum: int) -> int:
    """The exit status after `command` stopped gracefully on `signum` (the table above).

    >>> [stop_status(c, s) for c in ("serve", "mine") for s in (signal.SIGTERM, signal.SIGINT)]
    [0, 130, 143, 130]
    """
    if command in DAEMONS and signum == signal.SIGTERM:
        return 0
    return exit_status(signum)


class Interrupted(Exception):
    """Raised in the main thread by the first signal while no graceful stop is armed (e.g. warm-up)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalStop:
    """Handle SIGINT and SIGTERM while the context is open.

    The first signal calls the armed callback (set a kernel cancel flag, or cancel a trio scope via
    `TrioToken.run_sync_soon`, which is safe in a signal handler); with none armed it raises
    `Interrupted` in the main thread. A second signal writes one line and exits at once with
    `os._exit`, whatever the command was doing (a wedged shutdown cannot hold the terminal).
    """

    def __init__(self, on_signal: Callable[[int], None] | None = None, *, command: str = ""):
        self.command = command
        self.signum: int | None = None
        self._on_signal = on_signal
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalStop:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.signum is not None:
            return  # stopping: a later signal still exits at once, never with a KeyboardInterrupt traceback
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def arm(self, on_signal: Callable[[int], None]) -> None:
        """From now on the first signal calls `on_signal(signum)`; at once if it already came."""
        self._on_signal = on_signal
        if self.signum is not None:
            on_signal(self.signum)

    @property
    def exit_status(self) -> int | None:
        """The command's exit status for the signal that stopped it (the policy table); None before one."""
        return None if self.signum is None else stop_status(self.command, self.signum)

    @property
    def name(self) -> str | None:
        """The name of the signal that came (SIGINT, SIGTERM), or None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum: int, frame) -> None:
        global stopped_by
        if self.signum is not None:
            os.write(2, f"\r\x1b[K{signal.Signals(signum).name} again: exiting at once\n".encode())
            os._exit(exit_status(signum))
        self.signum = stopped_by = signum
        if self._on_signal is None:
            raise Interrupted(signum)
        self._on_signal(signum)
