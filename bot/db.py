"""The database: the one module that knows the schema. Versioned migrations run at start;
every write is one transaction; every tale query filters by guild."""
from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiosqlite

from bot.limits import (COOLDOWN_SECONDS, MAX_CHAPTERS, MAX_SERVER_WORDS, REPORT_THRESHOLD, STORY_LENGTH,
                        TEMPERATURE, TOGETHER_LENGTH)
from model.memory import MAX_CAST, default_cast

# Append only: a released migration never changes; schema_version records the last applied.
MIGRATIONS = [
    """
    CREATE TABLE guild_settings (
        guild_id INTEGER PRIMARY KEY,
        temperature REAL NOT NULL DEFAULT 0.5 CHECK (temperature BETWEEN 0.1 AND 2.0),
        story_length INTEGER NOT NULL DEFAULT 800 CHECK (story_length BETWEEN 100 AND 1900),
        cooldown_seconds INTEGER NOT NULL DEFAULT 20 CHECK (cooldown_seconds BETWEEN 0 AND 3600),
        channel_id INTEGER
    );
    CREATE TABLE tales (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        author_id INTEGER NOT NULL,
        author_name TEXT NOT NULL,
        start TEXT NOT NULL,
        text TEXT NOT NULL,
        temperature REAL NOT NULL,
        seed INTEGER NOT NULL,
        model TEXT NOT NULL,
        card_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        votes INTEGER NOT NULL DEFAULT 0,
        in_gallery INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tales_by_guild ON tales (guild_id, in_gallery, votes DESC, id DESC);
    CREATE TABLE votes (
        tale_id INTEGER NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        PRIMARY KEY (tale_id, user_id)
    );
    """,
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE guild_settings ADD COLUMN
        report_threshold INTEGER NOT NULL DEFAULT 1 CHECK (report_threshold BETWEEN 1 AND 100);
    ALTER TABLE tales ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE blocked_words (
        guild_id INTEGER NOT NULL,
        word TEXT NOT NULL,
        PRIMARY KEY (guild_id, word)
    );
    CREATE TABLE reports (
        tale_id INTEGER NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        PRIMARY KEY (tale_id, user_id)
    );
    """,
    """
    ALTER TABLE guild_settings ADD COLUMN
        max_chapters INTEGER NOT NULL DEFAULT 10 CHECK (max_chapters BETWEEN 1 AND 50);
    ALTER TABLE guild_settings ADD COLUMN
        together_length INTEGER NOT NULL DEFAULT 300 CHECK (together_length BETWEEN 100 AND 1000);
    ALTER TABLE tales ADD COLUMN together INTEGER NOT NULL DEFAULT 0;  -- written together in a thread
    ALTER TABLE tales ADD COLUMN finished INTEGER NOT NULL DEFAULT 0;  -- a together round that was closed
    CREATE TABLE chapters (
        tale_id INTEGER NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        number INTEGER NOT NULL CHECK (number >= 2),  -- the tale's own text is chapter 1
        kind TEXT NOT NULL CHECK (kind IN ('chapter', 'line', 'reply')),  -- Continue; a member's line; the bot's
        author_id INTEGER NOT NULL,
        author_name TEXT NOT NULL,
        text TEXT NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tale_id, number)
    );
    """,
    """
    ALTER TABLE tales ADD COLUMN length INTEGER NOT NULL DEFAULT 0;  -- new characters asked for; 0: not kept
    """,
    """
    CREATE TABLE casts (  -- a server's cast (model.memory); no row: the default cast
        guild_id INTEGER PRIMARY KEY,
        entries TEXT NOT NULL  -- a JSON list of entries
    );
    ALTER TABLE tales ADD COLUMN cast_entries TEXT NOT NULL DEFAULT '[]';  -- the cast it was told with
    """,
]



class DatabaseError(ValueError):
    """The database file cannot be opened or migrated; the message names it."""


class Database:
    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self._lock = asyncio.Lock()  # one connection: one transaction at a time

    @classmethod
    async def open(cls, path) -> "Database":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return await cls._open(path)
        except (OSError, sqlite3.Error) as e:
            raise DatabaseError(f"cannot open the database {path}: {e}") from None

    @classmethod
    async def _open(cls, path) -> "Database":
        conn = await aiosqlite.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")  # a confirmed tale survives a crash
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            db = cls(conn)
            await db.migrate()
            return db
        except BaseException:
            await conn.close()  # its worker thread would keep the program alive
            raise

    async def close(self) -> None:
        await self.conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self):
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    async def migrate(self) -> int:
        await self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self.conn.execute("SELECT MAX(version) FROM schema_version") as cur:
            current = (await cur.fetchone())[0] or 0
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            # Each script runs whole (triggers hold semicolons), in one transaction with its version.
            async with self._lock:
                try:
                    await self.conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n"
                                                  f"INSERT INTO schema_version (version) VALUES ({version});\n"
                                                  f"COMMIT;")
                except BaseException:
                    if self.conn.in_transaction:
                        await self.conn.execute("ROLLBACK")
                    raise
        return len(MIGRATIONS)

    async def get_meta(self, key: str) -> str | None:
        """A value the bot keeps about itself (the synced command tree's hash)."""
        async with self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self.transaction() as conn:
            await conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


@dataclass(frozen=True)
class GuildSettings:
    guild_id: int
    temperature: float = TEMPERATURE.default
    story_length: int = STORY_LENGTH.default
    cooldown_seconds: int = COOLDOWN_SECONDS.default
    channel_id: int | None = None
    report_threshold: int = REPORT_THRESHOLD.default
    max_chapters: int = MAX_CHAPTERS.default
    together_length: int = TOGETHER_LENGTH.default


class GuildSettingsStore:
    COLUMNS = ("temperature", "story_length", "cooldown_seconds", "channel_id", "report_threshold", "max_chapters",
               "together_length")

    def __init__(self, db: Database):
        self.db = db

    async def get(self, guild_id: int) -> GuildSettings:
        async with self.db.conn.execute(
                f"SELECT {', '.join(self.COLUMNS)} FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        return GuildSettings(guild_id, *row) if row else GuildSettings(guild_id)

    async def update(self, guild_id: int, **changes) -> GuildSettings:
        unknown = set(changes) - set(self.COLUMNS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        async with self.db.transaction() as conn:
            await conn.execute("INSERT OR IGNORE INTO guild_settings (guild_id) VALUES (?)", (guild_id,))
            for column, value in changes.items():  # column names come from COLUMNS, values are bound
                await conn.execute(f"UPDATE guild_settings SET {column} = ? WHERE guild_id = ?",
                                   (value, guild_id))
        return await self.get(guild_id)


@dataclass(frozen=True)
class Tale:
    id: int
    guild_id: int
    channel_id: int
    author_id: int
    author_name: str
    start: str
    text: str
    temperature: float
    seed: int
    model: str
    card_hash: str
    created_at: str
    votes: int
    in_gallery: bool
    hidden: bool = False  # reported by enough members; only moderators see it
    together: bool = False  # written together in a thread, line by line
    finished: bool = False  # a together round that its opener closed
    chapters: int = 1  # the tale's own text and the parts written on (Continue, or lines and replies)
    length: int = 0  # new characters asked for (Again asks for as many); 0 for tales told before it was kept
    cast_entries: tuple[str, ...] = ()  # the cast it was told with (model.memory): its seed tells it again

    def __post_init__(self):
        for flag in ("in_gallery", "hidden", "together", "finished"):  # SQLite stores them as 0/1
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        if isinstance(self.cast_entries, str):  # stored as a JSON list
            object.__setattr__(self, "cast_entries", tuple(json.loads(self.cast_entries)))


@dataclass(frozen=True)
class Chapter:
    tale_id: int
    number: int
    kind: str  # "chapter" (Continue), "line" (a member's own), "reply" (the bot's, after a line)
    author_id: int
    author_name: str
    text: str
    seed: int
    created_at: str


class ChapterLimit(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"this tale has all the chapters it may have ({limit}; see /settings)")


# Every tale query reads its chapter count along.
TALE_COLUMNS = "*, (SELECT COUNT(*) FROM chapters WHERE chapters.tale_id = tales.id) + 1 AS chapters"


class TaleFinished(ValueError):
    def __init__(self, tale_id: int):
        super().__init__(f"tale #{tale_id} is finished: its writers closed the round")


class TaleNotFound(LookupError):
    def __init__(self, tale_id: int):
        super().__init__(f"there is no tale #{tale_id} in this server")


class GalleryStore:
    PAGE_SIZE = 5
    SORTS = {"top": "votes DESC, id DESC", "new": "id DESC"}

    def __init__(self, db: Database):
        self.db = db

    async def add(self, *, guild_id: int, channel_id: int, author_id: int, author_name: str, start: str,
                  text: str, temperature: float, seed: int, model: str, card_hash: str, together: bool = False,
                  length: int = 0, cast_entries: tuple[str, ...] = ()) -> Tale:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO tales (guild_id, channel_id, author_id, author_name, start, text, temperature, "
                "seed, model, card_hash, created_at, together, length, cast_entries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (guild_id, channel_id, author_id, author_name, start, text, temperature, seed, model,
                 card_hash, created, int(together), length, json.dumps(list(cast_entries))))
            tale_id = cur.lastrowid
        return await self.get(guild_id, tale_id)

    async def get(self, guild_id: int, tale_id: int) -> Tale:
        async with self.db.conn.execute(f"SELECT {TALE_COLUMNS} FROM tales WHERE guild_id = ? AND id = ?",
                                        (guild_id, tale_id)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise TaleNotFound(tale_id)
        return Tale(**{k: row[k] for k in row.keys()})

    async def save_to_gallery(self, guild_id: int, tale_id: int) -> Tale:
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE tales SET in_gallery = 1 WHERE guild_id = ? AND id = ?",
                                     (guild_id, tale_id))
            if cur.rowcount == 0:
                raise TaleNotFound(tale_id)
        return await self.get(guild_id, tale_id)

    async def toggle_vote(self, guild_id: int, tale_id: int, user_id: int) -> tuple[Tale, bool]:
        """One vote per member: a second press takes it back. Returns the tale and whether it is voted now."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM tales WHERE guild_id = ? AND id = ?", (guild_id, tale_id)) as c:
                if await c.fetchone() is None:
                    raise TaleNotFound(tale_id)
            cur = await conn.execute("DELETE FROM votes WHERE tale_id = ? AND user_id = ?", (tale_id, user_id))
            voted = cur.rowcount == 0
            if voted:
                await conn.execute("INSERT INTO votes (tale_id, user_id) VALUES (?, ?)", (tale_id, user_id))
            await conn.execute("UPDATE tales SET votes = (SELECT COUNT(*) FROM votes WHERE tale_id = ?) "
                               "WHERE id = ?", (tale_id, tale_id))
        return await self.get(guild_id, tale_id), voted

    async def remove(self, guild_id: int, tale_id: int) -> None:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM tales WHERE guild_id = ? AND id = ?", (guild_id, tale_id))
            if cur.rowcount == 0:
                raise TaleNotFound(tale_id)

    async def add_chapters(self, guild_id: int, tale_id: int, parts: list[tuple[str, int, str, str, int]],
                           limit: int) -> list[Chapter]:
        """The next parts (kind, author id, author name, text, seed) in one transaction, stored as soon
        as they are written; ChapterLimit past `limit` parts, and nothing is added to a finished tale."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT (SELECT COUNT(*) FROM chapters WHERE tale_id = ?) + 1, finished "
                                    "FROM tales WHERE guild_id = ? AND id = ?", (tale_id, guild_id, tale_id)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise TaleNotFound(tale_id)
            if row[1]:
                raise TaleFinished(tale_id)
            if row[0] + len(parts) > limit:
                raise ChapterLimit(limit)
            added = [Chapter(tale_id, row[0] + 1 + i, *part, created) for i, part in enumerate(parts)]
            for c in added:
                await conn.execute("INSERT INTO chapters (tale_id, number, kind, author_id, author_name, text, seed, "
                                   "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   (c.tale_id, c.number, c.kind, c.author_id, c.author_name, c.text, c.seed,
                                    c.created_at))
        return added

    async def finish(self, guild_id: int, tale_id: int) -> Tale:
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE tales SET finished = 1 WHERE guild_id = ? AND id = ?", (guild_id, tale_id))
            if cur.rowcount == 0:
                raise TaleNotFound(tale_id)
        return await self.get(guild_id, tale_id)

    async def chapters(self, guild_id: int, tale_id: int) -> list[Chapter]:
        """Chapters 2 onwards, in order (chapter 1 is the tale's own text)."""
        async with self.db.conn.execute(
                "SELECT c.* FROM chapters c JOIN tales t ON t.id = c.tale_id WHERE t.guild_id = ? AND c.tale_id = ? "
                "ORDER BY c.number", (guild_id, tale_id)) as cur:
            rows = await cur.fetchall()
        return [Chapter(**{k: r[k] for k in r.keys()}) for r in rows]

    async def report(self, guild_id: int, tale_id: int, user_id: int, threshold: int) -> tuple[Tale, bool]:
        """One report per member: the tale is hidden once `threshold` members reported it.
        Returns the tale and whether this report is new."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM tales WHERE guild_id = ? AND id = ?", (guild_id, tale_id)) as c:
                if await c.fetchone() is None:
                    raise TaleNotFound(tale_id)
            cur = await conn.execute("INSERT OR IGNORE INTO reports (tale_id, user_id) VALUES (?, ?)",
                                     (tale_id, user_id))
            await conn.execute("UPDATE tales SET hidden = 1 WHERE id = ? AND "
                               "(SELECT COUNT(*) FROM reports WHERE tale_id = ?) >= ?", (tale_id, tale_id, threshold))
        return await self.get(guild_id, tale_id), cur.rowcount == 1

    async def restore(self, guild_id: int, tale_id: int) -> Tale:
        """A moderator's verdict: the tale is fine; its reports are cleared."""
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE tales SET hidden = 0 WHERE guild_id = ? AND id = ?", (guild_id, tale_id))
            if cur.rowcount == 0:
                raise TaleNotFound(tale_id)
            await conn.execute("DELETE FROM reports WHERE tale_id = ?", (tale_id,))
        return await self.get(guild_id, tale_id)

    async def page(self, guild_id: int, page: int, sort: str = "top",
                   author_id: int | None = None) -> tuple[list[Tale], int]:
        """One page of the server's gallery and the number of pages; sort "reported" lists the
        hidden tales instead (for moderators)."""
        if sort == "reported":
            where, args, sort = "guild_id = ? AND hidden = 1", [guild_id], "new"
        else:
            where, args = "guild_id = ? AND in_gallery = 1 AND hidden = 0", [guild_id]
        if author_id is not None:
            where += " AND author_id = ?"
            args.append(author_id)
        async with self.db.conn.execute(f"SELECT COUNT(*) FROM tales WHERE {where}", args) as cur:
            total = (await cur.fetchone())[0]
        pages = max(1, -(-total // self.PAGE_SIZE))
        async with self.db.conn.execute(
                f"SELECT {TALE_COLUMNS} FROM tales WHERE {where} ORDER BY {self.SORTS[sort]} LIMIT ? OFFSET ?",
                [*args, self.PAGE_SIZE, page * self.PAGE_SIZE]) as cur:
            rows = await cur.fetchall()
        return [Tale(**{k: r[k] for k in r.keys()}) for r in rows], pages


class WordListStore:
    """Each server's own blocked words, on top of the shipped list (model/safety.py)."""

    def __init__(self, db: Database):
        self.db = db

    async def words(self, guild_id: int) -> tuple[str, ...]:
        async with self.db.conn.execute("SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word",
                                        (guild_id,)) as cur:
            return tuple(row[0] for row in await cur.fetchall())

    async def add(self, guild_id: int, word: str) -> bool:
        """Whether the word is new; ValueError when the server's list is full."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT COUNT(*) FROM blocked_words WHERE guild_id = ?", (guild_id,)) as cur:
                if (await cur.fetchone())[0] >= MAX_SERVER_WORDS:
                    raise ValueError(f"this server's list is full ({MAX_SERVER_WORDS} words)")
            cur = await conn.execute("INSERT OR IGNORE INTO blocked_words (guild_id, word) VALUES (?, ?)",
                                     (guild_id, word))
            return cur.rowcount == 1

    async def remove(self, guild_id: int, word: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM blocked_words WHERE guild_id = ? AND word = ?", (guild_id, word))
            return cur.rowcount == 1


class CastStore:
    """Each server's cast: the names, places and things its stories draw on (model.memory). A
    server that never changed it has the default cast; entries keep the order they were added in."""

    def __init__(self, db: Database):
        self.db = db

    async def entries(self, guild_id: int) -> tuple[str, ...]:
        async with self.db.conn.execute("SELECT entries FROM casts WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        return tuple(json.loads(row[0])) if row else default_cast()

    async def _change(self, guild_id: int, change) -> bool:
        """Apply `change(entries) -> new entries or None (no change)` in one transaction."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT entries FROM casts WHERE guild_id = ?", (guild_id,)) as cur:
                row = await cur.fetchone()
            new = change(tuple(json.loads(row[0])) if row else default_cast())
            if new is None:
                return False
            await conn.execute("INSERT INTO casts (guild_id, entries) VALUES (?, ?) "
                               "ON CONFLICT (guild_id) DO UPDATE SET entries = excluded.entries",
                               (guild_id, json.dumps(list(new))))
            return True

    async def add(self, guild_id: int, entry: str) -> bool:
        """Whether the entry is new (entries differing only in case are one); ValueError when full."""
        def change(entries):
            if entry.casefold() in {e.casefold() for e in entries}:
                return None
            if len(entries) >= MAX_CAST:
                raise ValueError(f"this server's cast is full ({MAX_CAST} entries); remove one first")
            return entries + (entry,)
        return await self._change(guild_id, change)

    async def remove(self, guild_id: int, entry: str) -> bool:
        def change(entries):
            kept = tuple(e for e in entries if e.casefold() != entry.casefold())
            return kept if len(kept) < len(entries) else None
        return await self._change(guild_id, change)

    async def reset(self, guild_id: int) -> None:
        """Back to the default cast."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM casts WHERE guild_id = ?", (guild_id,))
