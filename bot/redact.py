"""Keep secrets out of logs: a logging filter that masks API keys and bot tokens wherever they appear
(the masking itself is ``providers.redact``, shared with the errors that reach chats)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from providers.redact import redact

__all__ = ["RedactingFilter", "redact", "setup_logging"]


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        record.msg, record.args = clean, None
        return True


def setup_logging(verbosity: int = 0, secrets: Iterable[str] = ()) -> None:
    """Log to stderr through the redacting filter. Chorus's own lines from INFO (what an owner needs to see:
    channels up, pairing requests, refusals), its debug lines with ``-v``; libraries only warn, and show their
    debug lines (the database's, the gateway's) only with ``-vv``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("chorus").setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    # A poll tick skipped because the previous one still runs is expected, not worth a warning.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbosity >= 2 else logging.ERROR)
    # While the database is away asyncpg's pool warns, with a traceback, each second it fails to reconnect;
    # the cluster's heartbeat says it once per outage instead.
    logging.getLogger("asyncpg.pool").setLevel(logging.DEBUG if verbosity >= 2 else logging.ERROR)
