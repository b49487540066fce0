"""The starts of one kind of sandbox (or of a toolchain), and their back-off after failures."""

from __future__ import annotations

import time

from codeactions.runner.host.log import log
from codeactions.runner.host.slots import Timer

BROKEN_AFTER = 3  # consecutive failed starts after which a language cannot run
BOOT_DELAY_FIRST = 0.1  # back-off after a failed start, doubling up to BOOT_DELAY_MAX
BOOT_DELAY_MAX = 30.0


class Boot:
    """The starts of one kind of sandbox (or of a toolchain), and their back-off.

    After a failed start the next waits BOOT_DELAY_FIRST, doubling up to BOOT_DELAY_MAX, and no
    more once a start works. Failures within one step count once (every slot of a kind failing
    together is one failure): one log line per step, not per attempt, and no spinning.
    """

    def __init__(self, key: str, what: str) -> None:
        self.key = key
        self.what = what
        self.failures = 0
        self.error = ""
        self.certain = False  # the last failure is something missing for sure (a program)
        self.retry_at = 0.0
        self.timer: Timer | None = None  # the pending Supervisor._retry
        self.started = False  # a start worked since the supervisor started

    def ready(self) -> bool:
        return self.failures < BROKEN_AFTER

    def waiting(self) -> bool:
        """In a back-off step: nothing is tried until it ends."""
        return self.failures > 0 and time.monotonic() < self.retry_at

    def failed(self, error: str, certain: bool) -> bool:
        """Count a failed start; False when this step already counted one."""
        if self.waiting():
            return False
        self.failures = max(self.failures + 1, BROKEN_AFTER if certain else 0)
        self.error, self.certain = error, certain
        delay = min(BOOT_DELAY_MAX, BOOT_DELAY_FIRST * 2 ** min(self.failures - 1, 16))
        self.retry_at = time.monotonic() + delay
        log(f"{self.what} failed to start ({self.failures} in a row): {error}; next in {delay:g} s")
        return True

    def worked(self) -> bool:
        """A start worked; True when that ends a run of failures."""
        self.started = True
        if not self.failures:
            return False
        log(f"{self.what} started again after {self.failures} failed starts")
        self.failures, self.error, self.certain, self.retry_at = 0, "", False, 0.0
        return True

    def describe(self) -> str:
        return f"{self.what} cannot start: {self.error}"
