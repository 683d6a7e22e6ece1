"""Which instance polls a bot's updates, and the offset it hands on to the next one.

Telegram lets one ``getUpdates`` caller in at a time (a second one gets 409 Conflict), so with several instances
on one database only the holder of the lease ``telegram:poller:<bot id>`` polls; the others send the answers of
the turns they run and try for the lease every ``Leases.every`` seconds. The holder keeps the offset past
what it has durably accepted as ``telegram:offset:<bot id>``, so a new holder neither loses an update (nothing
past the accepted is ever kept) nor fetches again much that was accepted (what it does fetch again, the inbox
takes once). The only instance (``Alone``) always holds the lease and keeps the offset in memory, as before.
"""

from __future__ import annotations

import json
import logging
import time

from ..base import Leases

log = logging.getLogger("chorus.telegram")
# Telegram keeps an unconfirmed update for 24 hours: a stored offset older than that can confirm nothing it
# still holds, and after a quiet week update ids start again at random, perhaps below it (confirming, that is
# dropping, new ones). So it is not used.
KEEP_SECONDS = 24 * 3600


def poller_lease(bot_id: int) -> str:
    """The lease whose holder polls bot ``bot_id``."""
    return f"telegram:poller:{bot_id}"


class PollerSeat:
    """This instance's claim to poll bot ``bot_id``: taken, kept, handed on."""

    def __init__(self, leases: Leases, bot_id: int) -> None:
        self.leases = leases
        self.lease = poller_lease(bot_id)
        self.key = f"telegram:offset:{bot_id}"
        self._polling: bool | None = None  # what was last said: polling, standing by (None: nothing yet)
        self._kept: int | None = None
        self._unsure = False  # the last try could not tell (said once)

    def held(self) -> bool:
        """Whether this instance may poll now (no trip to the database)."""
        return self.leases.holds(self.lease)

    async def take(self) -> bool:
        """Try for the lease; ``True`` when this instance polls from now on. A change is logged once, and so is
        a database that cannot tell (nothing is polled until it can)."""
        try:
            taken = await self.leases.take(self.lease)
        except Exception as exc:
            if not self._unsure:
                log.warning("Telegram: cannot tell which instance polls for updates (%s: %s); not polling until "
                            "the database answers", type(exc).__name__, str(exc)[:200])
            self._unsure = True
            return False
        self._unsure = False
        if taken:
            if self._polling is not True:
                log.info("Telegram: this instance polls for updates now (it holds %s)", self.lease)
            self._polling = True
            return True
        if self._polling is not False:
            log.info("Telegram: another instance polls for updates; this one answers the turns it runs and "
                     "takes over polling if that instance stops")
        self._polling = False
        return False

    async def offset(self) -> int | None:
        """The offset the previous holder kept, if it is recent enough to use (see ``KEEP_SECONDS``)."""
        stored = await self.leases.get(self.key)
        if stored is None:
            return None
        try:
            value = json.loads(stored)
            offset, at = int(value["offset"]), float(value["at"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("the stored Telegram offset %.60r is unreadable (%s); polling from what Telegram holds",
                        stored, exc)
            return None
        if time.time() - at > KEEP_SECONDS:
            log.info("the stored Telegram offset is over a day old; polling from what Telegram holds")
            return None
        self._kept = offset
        return offset

    async def keep(self, offset: int | None) -> None:
        """Store ``offset`` (everything before it is durably accepted) for whoever polls next."""
        if not self._polling or offset is None or offset == self._kept:
            return  # the only instance (``Alone``) keeps it in memory
        self._kept = offset
        await self.leases.put(self.key, json.dumps({"offset": offset, "at": round(time.time())}))

    async def leave(self) -> None:
        """Stopping: let the lease go at once, for another instance to poll without waiting it out."""
        if self._polling:
            self._polling = None
            await self.leases.give_up(self.lease)
