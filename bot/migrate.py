"""Schema migrations: ``migrations/NNNN_name.sql`` applied in order, each in one transaction, recorded with a checksum."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database and the code disagree about the schema; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a duplicate number is a packaging bug.

    Gaps are allowed: numbers are reserved per branch of work, so one may land before another.
    """
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m[1]), m[2], path.read_text(encoding="utf-8")))
    for before, mig in zip(found, found[1:]):
        if mig.version == before.version:
            raise MigrationError(f"migration {mig.version:04d}_{mig.name}: number {mig.version:04d} is used twice")
    return found


async def migrate(db: aiosqlite.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Bring ``db`` up to date; return what was applied. Refuses a newer or tampered database."""
    migrations = discover() if migrations is None else migrations
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )
    await db.commit()
    async with db.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version") as cur:
        applied = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    known = {m.version: m for m in migrations}
    if set(applied) - set(known):
        raise MigrationError(
            f"the database has schema version {max(set(applied) - set(known))}, newer than this Chorus knows; "
            "upgrade Chorus, or point CHORUS_HOME at another state directory"
        )
    for version, (name, checksum) in applied.items():
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{name} was changed after it was applied to this database; "
                "restore the original file and put the change in a new migration"
            )
    done = []
    for mig in migrations:
        if mig.version in applied:
            continue
        script = (
            f"BEGIN;\n{mig.sql}\n;INSERT INTO schema_migrations (version, name, checksum) "
            f"VALUES ({mig.version}, '{mig.name}', '{mig.checksum}');\nCOMMIT;"
        )
        try:
            await db.executescript(script)
        except Exception as exc:
            await db.rollback()
            raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed and was rolled back: {exc}") from exc
        done.append(mig)
    return done
