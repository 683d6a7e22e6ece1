"""Growing pauses between tries of something that may come back (a platform's bad minute, a network outage).

Every channel's start-up and receive loop share it, so each says an outage once (the first failure), retries
quietly with 1, 2, 4 ... up to ``cap`` seconds between tries, and says once that it is back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    """The pause before the next try; ``failures`` counts the tries that failed in a row."""

    first: float = 1.0
    cap: float = 60.0
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before trying again."""
        self.failures += 1
        return min(self.first * 2 ** (self.failures - 1), self.cap)

    @property
    def first_failure(self) -> bool:
        """Whether the failure just counted began an outage: the one to log."""
        return self.failures == 1

    def succeeded(self) -> bool:
        """Reset after a success; ``True`` when it ends an outage (worth a line saying so)."""
        was_failing, self.failures = self.failures > 0, 0
        return was_failing
