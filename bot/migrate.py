"""Schema migrations: ``migrations/NNNN_name.sql`` applied in order, each in one transaction, recorded with a checksum.

PostgreSQL takes the same numbers; where its SQL must differ (types, defaults) ``migrations/postgres/`` holds its
own file of that number."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

if TYPE_CHECKING:
    import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PG_LOCK = 0x63686F7275  # the advisory lock held while an instance migrates ("choru")


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


def discover(directory: Path = MIGRATIONS_DIR, engine: str = "sqlite") -> list[Migration]:
    """The migration files in version order (PostgreSQL's own where it has one); a gap or a duplicate number is
    a packaging bug."""
    paths = {p.name[:4]: p for p in sorted(directory.glob("*.sql"))}
    if engine == "postgresql":
        own = {p.name[:4]: p for p in sorted((directory / "postgres").glob("*.sql"))}
        if unknown := sorted(own.keys() - paths.keys()):
            raise MigrationError(f"postgres/{unknown[0]}_*.sql has no SQLite migration of that number")
        paths.update(own)
    found = []
    for path in [paths[k] for k in sorted(paths)]:
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m[1]), m[2], path.read_text(encoding="utf-8")))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise MigrationError(f"migration {mig.version:04d}_{mig.name}: expected number {expected:04d} (gap or duplicate)")
    return found


_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations ("
          " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT {now})")


def _to_apply(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """What is left to apply; refuses a database newer than the code, or one a changed migration was applied to."""
    known = {m.version: m for m in migrations}
    if applied and max(applied) > len(migrations):
        raise MigrationError(
            f"the database is at schema version {max(applied)}, newer than this Chorus knows ({len(migrations)}); "
            "upgrade Chorus, or point CHORUS_HOME at another state directory"
        )
    for version, (name, checksum) in applied.items():
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{name} was changed after it was applied to this database; "
                "restore the original file and put the change in a new migration"
            )
    return [m for m in migrations if m.version not in applied]


async def migrate(db: aiosqlite.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Bring ``db`` up to date; return what was applied. Refuses a newer or tampered database."""
    migrations = discover() if migrations is None else migrations
    await db.execute(_TABLE.format(now="(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"))
    await db.commit()
    async with db.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version") as cur:
        applied = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    done = []
    for mig in _to_apply(migrations, applied):
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


async def migrate_postgres(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Bring a PostgreSQL database up to date under an advisory lock: of several instances starting at once,
    one migrates and the others wait, then find nothing left to do."""
    migrations = discover(engine="postgresql") if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _PG_LOCK)
    try:
        await conn.execute(_TABLE.format(now="(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))"))
        rows: list[Any] = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        done = []
        for mig in _to_apply(migrations, {r[0]: (r[1], r[2]) for r in rows}):
            try:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                       mig.version, mig.name, mig.checksum)
            except Exception as exc:
                raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed and was rolled back: {exc}") from exc
            done.append(mig)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _PG_LOCK)
