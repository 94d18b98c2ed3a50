"""Errors the CLI turns into one line on stderr: bad input (exit status 2) and a stop asked for by a signal
(exit status 128 + the signal's number)."""
from __future__ import annotations

import signal


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix, on one line."""


class Stopped(KeyboardInterrupt):
    """The command was stopped by `signum` (SIGINT: Ctrl-C; SIGTERM: what a cluster scheduler sends), after its
    running unit checkpointed where it could; rerunning the same command resumes it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a command the way Ctrl-C does."""


def raise_stopped(signum: int, frame: object) -> None:
    """A signal handler: stop now with `Stopped` (Python's default for SIGINT, for SIGTERM as well)."""
    raise Stopped(signum)
