"""Background work while the database cannot be reached: said once when the outage begins, once when it ends.

Cron and the video jobs look at the database every few seconds; during an outage each look fails the same way.
One warning line (no traceback: the cause is known) at the first failure and one info line at the first
success after it tell an operator all there is; a failure of any other kind is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """Whether ``what`` (``cron``, ``video jobs``) is cut off from the database now, said once each way."""

    def __init__(self, log: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.clock = clock
        self.since: float | None = None  # when the current outage began; ``None`` while the database answers
        self.tries = 0  # looks that failed in the current outage

    def failed(self, exc: BaseException | str) -> None:
        """The database did not answer (one of ``DB_ERRORS``); the first failure of an outage is logged."""
        self.tries += 1
        if self.since is None:
            self.since = self.clock()
            self.log.warning("%s: the database cannot be used now (%s); trying again quietly until it answers",
                             self.what, exc)

    def answered(self) -> None:
        """The database answered; the first answer after an outage is logged."""
        if self.since is not None:
            self.log.info("%s: the database answers again (after %.0f s, %d failed tries)", self.what,
                          self.clock() - self.since, self.tries)
            self.since, self.tries = None, 0
