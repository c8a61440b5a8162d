"""Where the database lives: SQLite in one file (the default) or PostgreSQL (several processes).

The stores (bot/db.py) write one SQL for both, with `?` placeholders, and see rows as dicts:

    row = await backend.fetchone("SELECT ... WHERE id = ?", 7)
    await backend.write(change)   # async def change(tx): ...; tx.execute returns the rows changed

`write` runs its function as one transaction. A function that reads before it writes (a count
checked against a cap, a list changed) first takes `await tx.lock("tale", tale_id)`: SQLite
already runs one writer at a time (BEGIN IMMEDIATE); PostgreSQL takes a transaction-scoped
advisory lock, so writers of the same tale or list take turns across processes while the rest run
in parallel, and every statement after the lock sees what they committed (READ COMMITTED). A
transaction that still collides (a deadlock) is run again.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import sqlite3
from functools import lru_cache
from pathlib import Path

import aiosqlite

WRITE_ATTEMPTS = 20  # a transaction that keeps colliding fails after this many tries


class DatabaseError(ValueError):
    """The database cannot be opened or migrated; the message names it."""


class IntegrityError(Exception):
    """A write broke a rule of the schema (a CHECK, a key): a bug, not a member's mistake, so not a
    ValueError (the cogs show a store's ValueError to the member)."""


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def describe(location: str) -> str:
    """The location without its password, for messages and logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", location)


async def connect(location, migrations: list[str]):
    """A path (SQLite) or a postgresql:// URL, opened and migrated."""
    location = str(location)
    backend = PostgresBackend if is_postgres(location) else SQLiteBackend
    return await backend.open(location, migrations)


class SQLiteBackend:
    kind = "sqlite"
    # The migrations' column types ({ID}, {INT}, {FLOAT} in bot/db.py), as this engine spells them.
    types = {"ID": "INTEGER PRIMARY KEY AUTOINCREMENT", "INT": "INTEGER", "FLOAT": "REAL"}

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self._lock = asyncio.Lock()  # one connection: one transaction at a time

    @classmethod
    async def open(cls, path: str, migrations: list[str]) -> "SQLiteBackend":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        except (OSError, sqlite3.Error) as e:
            raise DatabaseError(f"cannot open the database {path}: {e}") from None
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA busy_timeout=5000")  # first: other connections may hold the file
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")  # a confirmed tale survives a crash
            await conn.execute("PRAGMA foreign_keys=ON")
            backend = cls(conn)
            await backend.migrate(migrations)
            return backend
        except sqlite3.Error as e:
            await conn.close()  # its worker thread would keep the program alive
            raise DatabaseError(f"cannot open the database {path}: {e}") from None
        except BaseException:
            await conn.close()
            raise

    async def close(self) -> None:
        await self.conn.close()

    async def migrate(self, migrations: list[str]) -> None:
        await self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self._lock:
            for version, script in enumerate(migrations, start=1):
                if await self._version() >= version:
                    continue
                # Each script runs whole (triggers hold semicolons), in one transaction with its version.
                try:
                    await self.conn.executescript(f"BEGIN IMMEDIATE;\n{script.format_map(self.types)}\n"
                                                  f"INSERT INTO schema_version (version) VALUES ({version});\n"
                                                  f"COMMIT;")
                except BaseException:
                    if self.conn.in_transaction:
                        await self.conn.execute("ROLLBACK")
                    if await self._version() >= version:
                        continue  # another process opening the same file applied it first
                    raise

    async def _version(self) -> int:
        async with self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
            return (await cur.fetchone())[0]

    async def fetchone(self, sql: str, *args) -> dict | None:
        async with self.conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, *args) -> list[dict]:
        async with self.conn.execute(sql, args) as cur:
            return [dict(row) for row in await cur.fetchall()]

    async def execute(self, sql: str, *args) -> int:
        cur = await self.conn.execute(sql, args)
        return cur.rowcount

    async def lock(self, *key) -> None:
        """Nothing to do: a SQLite write transaction already has the file to itself."""

    async def write(self, change):
        for attempt in range(WRITE_ATTEMPTS):
            async with self._lock:
                try:
                    await self.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as e:
                    # Another connection to the file (another process) is writing, and SQLite may
                    # answer "locked" at once, without waiting busy_timeout: nothing ran, try again.
                    if "locked" not in str(e) or attempt == WRITE_ATTEMPTS - 1:
                        raise
                else:
                    try:
                        with _integrity(sqlite3.IntegrityError):
                            result = await change(self)
                    except BaseException:
                        await self.conn.execute("ROLLBACK")
                        raise
                    await self.conn.execute("COMMIT")
                    return result
            await _back_off(attempt)


@lru_cache(maxsize=256)
def postgres_sql(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2... (no SQL of ours holds a literal question mark)."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


# Any number will do, as long as nothing else in the database takes the same advisory lock.
MIGRATION_LOCK = 0x5175_696C  # "Quil"


class _PostgresQueries:
    """Queries on a pool (each statement its own transaction) or on one connection (inside one)."""

    def __init__(self, target):
        self.target = target

    async def fetchone(self, sql: str, *args) -> dict | None:
        row = await self.target.fetchrow(postgres_sql(sql), *args)
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, *args) -> list[dict]:
        return [dict(row) for row in await self.target.fetch(postgres_sql(sql), *args)]

    async def execute(self, sql: str, *args) -> int:
        return _rows_changed(await self.target.execute(postgres_sql(sql), *args))


class _PostgresTransaction(_PostgresQueries):
    async def lock(self, *key) -> None:
        """Wait for, then hold until the transaction ends, the lock named by `key` ("tale", 7)."""
        await self.target.execute("SELECT pg_advisory_xact_lock($1)", lock_number(key))


class PostgresBackend(_PostgresQueries):
    kind = "postgresql"
    types = {"ID": "BIGSERIAL PRIMARY KEY", "INT": "BIGINT", "FLOAT": "DOUBLE PRECISION"}  # Discord ids need 64 bits

    def __init__(self, pool):
        super().__init__(pool)
        self.pool = pool

    @classmethod
    async def open(cls, url: str, migrations: list[str]) -> "PostgresBackend":
        import asyncpg  # only a bot on PostgreSQL needs it loaded

        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10, timeout=10)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, ValueError) as e:
            raise DatabaseError(f"cannot open the database {describe(url)}: {e}") from None
        backend = cls(pool)
        try:
            await backend.migrate(migrations)
        except asyncpg.PostgresError as e:
            await pool.close()
            raise DatabaseError(f"cannot migrate the database {describe(url)}: {e}") from None
        except BaseException:
            await pool.close()
            raise
        return backend

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self, migrations: list[str]) -> None:
        async with self.pool.acquire() as conn:
            for version, script in enumerate(migrations, start=1):
                async with conn.transaction():
                    # Processes that start together take turns; each re-reads the version under the lock.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                    if await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version") >= version:
                        continue
                    await conn.execute(script.format_map(self.types))  # the whole script, in this transaction
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def write(self, change):
        import asyncpg

        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    with _integrity(asyncpg.IntegrityConstraintViolationError):
                        return await change(_PostgresTransaction(conn))
            except asyncpg.TransactionRollbackError:  # a deadlock: try again
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                await _back_off(attempt)


def lock_number(key: tuple) -> int:
    """A key as the signed 64-bit number PostgreSQL's advisory locks take."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big", signed=True)


async def _back_off(attempt: int) -> None:
    """A random wait that grows with the attempts, so colliding writers fall out of step."""
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))


def _rows_changed(status: str) -> int:
    """asyncpg answers a write with its command tag ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


@contextlib.contextmanager
def _integrity(*errors):
    try:
        yield
    except errors as e:
        raise IntegrityError(str(e)) from e
