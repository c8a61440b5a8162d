"""The database: the one module that knows the schema. Versioned migrations run at start;
every write is one transaction (a write that checks before it changes takes its tale's or list's
lock first: bot/backends.py); every tale query filters by guild."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bot.backends import connect
from bot.limits import (COOLDOWN_SECONDS, GALLERY_PAGE, MAX_CAST, MAX_CHAPTERS, MAX_SERVER_WORDS, REPORT_THRESHOLD,
                        REPORTS_PER_HOUR, STORY_LENGTH, TEMPERATURE, TOGETHER_LENGTH, WEB_ADDRESS_BYTES)
from model.memory import default_cast

# Append only: a released migration never changes; schema_version records the last applied. Column
# types are named by what they hold ({ID}, {INT}, {FLOAT}); each backend spells them (bot/backends.py).
MIGRATIONS = [
    """
    CREATE TABLE guild_settings (
        guild_id {INT} PRIMARY KEY,
        temperature {FLOAT} NOT NULL DEFAULT 0.5 CHECK (temperature BETWEEN 0.1 AND 2.0),
        story_length {INT} NOT NULL DEFAULT 800 CHECK (story_length BETWEEN 100 AND 1900),
        cooldown_seconds {INT} NOT NULL DEFAULT 20 CHECK (cooldown_seconds BETWEEN 0 AND 3600),
        channel_id {INT}
    );
    CREATE TABLE tales (
        id {ID},
        guild_id {INT} NOT NULL,
        channel_id {INT} NOT NULL,
        author_id {INT} NOT NULL,
        author_name TEXT NOT NULL,
        start TEXT NOT NULL,
        text TEXT NOT NULL,
        temperature {FLOAT} NOT NULL,
        seed {INT} NOT NULL,
        model TEXT NOT NULL,
        card_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        votes {INT} NOT NULL DEFAULT 0,
        in_gallery {INT} NOT NULL DEFAULT 0
    );
    CREATE INDEX tales_by_guild ON tales (guild_id, in_gallery, votes DESC, id DESC);
    CREATE TABLE votes (
        tale_id {INT} NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        user_id {INT} NOT NULL,
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
        report_threshold {INT} NOT NULL DEFAULT 1 CHECK (report_threshold BETWEEN 1 AND 100);
    ALTER TABLE tales ADD COLUMN hidden {INT} NOT NULL DEFAULT 0;
    CREATE TABLE blocked_words (
        guild_id {INT} NOT NULL,
        word TEXT NOT NULL,
        PRIMARY KEY (guild_id, word)
    );
    CREATE TABLE reports (
        tale_id {INT} NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        user_id {INT} NOT NULL,
        PRIMARY KEY (tale_id, user_id)
    );
    """,
    """
    ALTER TABLE guild_settings ADD COLUMN
        max_chapters {INT} NOT NULL DEFAULT 10 CHECK (max_chapters BETWEEN 1 AND 50);
    ALTER TABLE guild_settings ADD COLUMN
        together_length {INT} NOT NULL DEFAULT 300 CHECK (together_length BETWEEN 100 AND 1000);
    ALTER TABLE tales ADD COLUMN together {INT} NOT NULL DEFAULT 0;  -- written together in a thread
    ALTER TABLE tales ADD COLUMN finished {INT} NOT NULL DEFAULT 0;  -- a together round that was closed
    CREATE TABLE chapters (
        tale_id {INT} NOT NULL REFERENCES tales (id) ON DELETE CASCADE,
        number {INT} NOT NULL CHECK (number >= 2),  -- the tale's own text is chapter 1
        kind TEXT NOT NULL CHECK (kind IN ('chapter', 'line', 'reply')),  -- Continue; a member's line; the bot's
        author_id {INT} NOT NULL,
        author_name TEXT NOT NULL,
        text TEXT NOT NULL,
        seed {INT} NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tale_id, number)
    );
    """,
    """
    ALTER TABLE tales ADD COLUMN length {INT} NOT NULL DEFAULT 0;  -- new characters asked for; 0: not kept
    """,
    """
    CREATE TABLE casts (  -- a server's cast (model.memory); no row: the default cast
        guild_id {INT} PRIMARY KEY,
        entries TEXT NOT NULL  -- a JSON list of entries
    );
    ALTER TABLE tales ADD COLUMN cast_entries TEXT NOT NULL DEFAULT '[]';  -- the cast it was told with
    """,
    # Reports hide a tale at 3 by default, not 1 (one member could hide a gallery), and each report
    # keeps its time (a member makes only so many an hour). Neither engine changes a column's DEFAULT
    # in place the same way, so the table is built again; the rows keep their values, since a stored 1
    # may be a moderator's choice.
    """
    CREATE TABLE guild_settings_next (
        guild_id {INT} PRIMARY KEY,
        temperature {FLOAT} NOT NULL DEFAULT 0.5 CHECK (temperature BETWEEN 0.1 AND 2.0),
        story_length {INT} NOT NULL DEFAULT 800 CHECK (story_length BETWEEN 100 AND 1900),
        cooldown_seconds {INT} NOT NULL DEFAULT 20 CHECK (cooldown_seconds BETWEEN 0 AND 3600),
        channel_id {INT},
        report_threshold {INT} NOT NULL DEFAULT 3 CHECK (report_threshold BETWEEN 1 AND 100),
        max_chapters {INT} NOT NULL DEFAULT 10 CHECK (max_chapters BETWEEN 1 AND 50),
        together_length {INT} NOT NULL DEFAULT 300 CHECK (together_length BETWEEN 100 AND 1000)
    );
    INSERT INTO guild_settings_next (guild_id, temperature, story_length, cooldown_seconds, channel_id,
                                     report_threshold, max_chapters, together_length)
        SELECT guild_id, temperature, story_length, cooldown_seconds, channel_id,
               report_threshold, max_chapters, together_length FROM guild_settings;
    DROP TABLE guild_settings;
    ALTER TABLE guild_settings_next RENAME TO guild_settings;
    ALTER TABLE reports ADD COLUMN created_at TEXT;  -- NULL for reports made before it was kept
    CREATE INDEX reports_by_member ON reports (user_id, created_at);
    """,
    """
    CREATE TABLE web_galleries (  -- a server's gallery on the web (bot/web.py); no row: never published
        guild_id {INT} PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,  -- its random address; /settings web:reset draws another
        published {INT} NOT NULL DEFAULT 0 CHECK (published IN (0, 1))
    );
    """,
]



class Database:
    """The tales, settings, word lists and casts of every server, in SQLite or PostgreSQL
    (bot/backends.py), migrated to the schema above on opening."""

    def __init__(self, backend):
        self.backend = backend
        self.kind = backend.kind
        self.fetchone, self.fetchall, self.write = backend.fetchone, backend.fetchall, backend.write

    @classmethod
    async def open(cls, location) -> "Database":
        """A file path, or a postgresql:// URL (QUILL_DATABASE)."""
        return cls(await connect(location, MIGRATIONS))

    async def close(self) -> None:
        await self.backend.close()

    async def get_meta(self, key: str) -> str | None:
        """A value the bot keeps about itself (the synced command tree's hash)."""
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", key)
        return row["value"] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.write(lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value))

    async def claim_meta(self, key: str, value: str) -> bool:
        """Set the value unless it is already set so; True for the one caller, of any number of
        processes, that changed it (the process that syncs the command tree)."""
        return await self.write(lambda tx: tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value "
            "WHERE meta.value <> excluded.value", key, value)) == 1


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
        row = await self.db.fetchone(f"SELECT {', '.join(self.COLUMNS)} FROM guild_settings WHERE guild_id = ?",
                                     guild_id)
        return GuildSettings(guild_id, **row) if row else GuildSettings(guild_id)

    async def update(self, guild_id: int, only_if_new: bool = False, **changes) -> GuildSettings:
        """Change a server's settings; with `only_if_new`, only a server that has none stored yet."""
        unknown = set(changes) - set(self.COLUMNS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")

        async def change(tx):
            created = await tx.execute("INSERT INTO guild_settings (guild_id) VALUES (?) ON CONFLICT DO NOTHING",
                                       guild_id)
            for column, value in changes.items() if created or not only_if_new else ():
                # column names come from COLUMNS, values are bound
                await tx.execute(f"UPDATE guild_settings SET {column} = ? WHERE guild_id = ?", value, guild_id)
        await self.db.write(change)
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


def writers(tale: Tale, chapters: list[Chapter]) -> list[str]:
    """Who wrote a tale, in order of their first part: its opener, then every member who added a
    part (a chapter asked for with Continue, a line written together); never the bot's replies."""
    return list(dict.fromkeys([tale.author_name, *(c.author_name for c in chapters if c.kind != "reply")]))


def tale_so_far(tale: Tale, chapters: list[Chapter]) -> str:
    """A tale's text with every chapter after it, as stored: what the next part is written on from."""
    return tale.text + "".join(c.text for c in chapters)


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


class ReportLimit(ValueError):
    def __init__(self):
        super().__init__(f"you have made {REPORTS_PER_HOUR} reports in this server in the last hour; "
                         f"a moderator can look at the rest")


class GalleryStore:
    PAGE_SIZE = GALLERY_PAGE
    SORTS = {"top": "votes DESC, id DESC", "new": "id DESC"}

    def __init__(self, db: Database):
        self.db = db

    async def add(self, *, guild_id: int, channel_id: int, author_id: int, author_name: str, start: str,
                  text: str, temperature: float, seed: int, model: str, card_hash: str, together: bool = False,
                  length: int = 0, cast_entries: tuple[str, ...] = ()) -> Tale:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")

        async def insert(tx):
            row = await tx.fetchone(
                "INSERT INTO tales (guild_id, channel_id, author_id, author_name, start, text, temperature, "
                "seed, model, card_hash, created_at, together, length, cast_entries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                guild_id, channel_id, author_id, author_name, start, text, temperature, seed, model,
                card_hash, created, int(together), length, json.dumps(list(cast_entries)))
            return row["id"]
        return await self.get(guild_id, await self.db.write(insert))

    async def get(self, guild_id: int, tale_id: int) -> Tale:
        row = await self.db.fetchone(f"SELECT {TALE_COLUMNS} FROM tales WHERE guild_id = ? AND id = ?",
                                     guild_id, tale_id)
        if row is None:
            raise TaleNotFound(tale_id)
        return Tale(**row)

    async def _update(self, guild_id: int, tale_id: int, sql: str) -> Tale:
        """One UPDATE of one tale of this server (`sql` ends with its WHERE clause's placeholders)."""
        async def update(tx):
            if await tx.execute(sql, guild_id, tale_id) == 0:
                raise TaleNotFound(tale_id)
        await self.db.write(update)
        return await self.get(guild_id, tale_id)

    async def save_to_gallery(self, guild_id: int, tale_id: int) -> Tale:
        return await self._update(guild_id, tale_id, "UPDATE tales SET in_gallery = 1 WHERE guild_id = ? AND id = ?")

    @staticmethod
    async def _require(tx, guild_id: int, tale_id: int) -> None:
        if await tx.fetchone("SELECT 1 FROM tales WHERE guild_id = ? AND id = ?", guild_id, tale_id) is None:
            raise TaleNotFound(tale_id)

    async def toggle_vote(self, guild_id: int, tale_id: int, user_id: int) -> tuple[Tale, bool]:
        """One vote per member: a second press takes it back. Returns the tale and whether it is voted now."""
        async def toggle(tx):
            await tx.lock("tale", tale_id)
            await self._require(tx, guild_id, tale_id)
            voted = await tx.execute("DELETE FROM votes WHERE tale_id = ? AND user_id = ?", tale_id, user_id) == 0
            if voted:
                await tx.execute("INSERT INTO votes (tale_id, user_id) VALUES (?, ?)", tale_id, user_id)
            await tx.execute("UPDATE tales SET votes = (SELECT COUNT(*) FROM votes WHERE tale_id = ?) "
                             "WHERE id = ?", tale_id, tale_id)
            return voted
        voted = await self.db.write(toggle)
        return await self.get(guild_id, tale_id), voted

    async def remove(self, guild_id: int, tale_id: int) -> None:
        async def remove(tx):
            if await tx.execute("DELETE FROM tales WHERE guild_id = ? AND id = ?", guild_id, tale_id) == 0:
                raise TaleNotFound(tale_id)
        await self.db.write(remove)

    async def add_chapters(self, guild_id: int, tale_id: int, parts: list[tuple[str, int, str, str, int]],
                           limit: int) -> list[Chapter]:
        """The next parts (kind, author id, author name, text, seed) in one transaction, stored as soon
        as they are written; ChapterLimit past `limit` parts, and nothing is added to a finished tale."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")

        async def add(tx):
            await tx.lock("tale", tale_id)
            row = await tx.fetchone("SELECT (SELECT COUNT(*) FROM chapters WHERE tale_id = ?) + 1 AS told, finished "
                                    "FROM tales WHERE guild_id = ? AND id = ?", tale_id, guild_id, tale_id)
            if row is None:
                raise TaleNotFound(tale_id)
            if row["finished"]:
                raise TaleFinished(tale_id)
            if row["told"] + len(parts) > limit:
                raise ChapterLimit(limit)
            added = [Chapter(tale_id, row["told"] + 1 + i, *part, created) for i, part in enumerate(parts)]
            for c in added:
                await tx.execute("INSERT INTO chapters (tale_id, number, kind, author_id, author_name, text, seed, "
                                 "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 c.tale_id, c.number, c.kind, c.author_id, c.author_name, c.text, c.seed,
                                 c.created_at)
            return added
        return await self.db.write(add)

    async def finish(self, guild_id: int, tale_id: int) -> Tale:
        return await self._update(guild_id, tale_id, "UPDATE tales SET finished = 1 WHERE guild_id = ? AND id = ?")

    async def chapters(self, guild_id: int, tale_id: int) -> list[Chapter]:
        """Chapters 2 onwards, in order (chapter 1 is the tale's own text)."""
        rows = await self.db.fetchall(
            "SELECT c.* FROM chapters c JOIN tales t ON t.id = c.tale_id WHERE t.guild_id = ? AND c.tale_id = ? "
            "ORDER BY c.number", guild_id, tale_id)
        return [Chapter(**r) for r in rows]

    async def report(self, guild_id: int, tale_id: int, user_id: int, threshold: int) -> tuple[Tale, bool]:
        """One report per member and tale, and REPORTS_PER_HOUR per member in a server: the tale is
        hidden once `threshold` members reported it. Returns the tale and whether this report is new."""
        now = datetime.now(timezone.utc)

        async def report(tx):
            await tx.lock("reporter", guild_id, user_id)  # two of a member's reports at once count each other
            await tx.lock("tale", tale_id)
            await self._require(tx, guild_id, tale_id)
            if not await tx.fetchone("SELECT 1 AS yes FROM reports WHERE tale_id = ? AND user_id = ?", tale_id, user_id):
                recent = await tx.fetchone(
                    "SELECT COUNT(*) AS n FROM reports r JOIN tales t ON t.id = r.tale_id "
                    "WHERE r.user_id = ? AND t.guild_id = ? AND r.created_at > ?",
                    user_id, guild_id, (now - timedelta(hours=1)).isoformat(timespec="seconds"))
                if recent["n"] >= REPORTS_PER_HOUR:
                    raise ReportLimit()
            new = await tx.execute("INSERT INTO reports (tale_id, user_id, created_at) VALUES (?, ?, ?) "
                                   "ON CONFLICT DO NOTHING", tale_id, user_id, now.isoformat(timespec="seconds")) == 1
            await tx.execute("UPDATE tales SET hidden = 1 WHERE id = ? AND "
                             "(SELECT COUNT(*) FROM reports WHERE tale_id = ?) >= ?", tale_id, tale_id, threshold)
            return new
        new = await self.db.write(report)
        return await self.get(guild_id, tale_id), new

    async def restore(self, guild_id: int, tale_id: int) -> Tale:
        """A moderator's verdict: the tale is fine; its reports are cleared."""
        async def restore(tx):
            if await tx.execute("UPDATE tales SET hidden = 0 WHERE guild_id = ? AND id = ?", guild_id, tale_id) == 0:
                raise TaleNotFound(tale_id)
            await tx.execute("DELETE FROM reports WHERE tale_id = ?", tale_id)
        await self.db.write(restore)
        return await self.get(guild_id, tale_id)

    async def page(self, guild_id: int, page: int, sort: str = "top", author_id: int | None = None,
                   size: int = PAGE_SIZE) -> tuple[list[Tale], int]:
        """One page of `size` tales of the server's gallery and the number of pages; sort "reported"
        lists the hidden tales instead (for moderators)."""
        if sort == "reported":
            where, args, sort = "guild_id = ? AND hidden = 1", [guild_id], "new"
        else:
            where, args = "guild_id = ? AND in_gallery = 1 AND hidden = 0", [guild_id]
        if author_id is not None:
            where += " AND author_id = ?"
            args.append(author_id)
        total = (await self.db.fetchone(f"SELECT COUNT(*) AS n FROM tales WHERE {where}", *args))["n"]
        pages = max(1, -(-total // size))
        rows = await self.db.fetchall(
            f"SELECT {TALE_COLUMNS} FROM tales WHERE {where} ORDER BY {self.SORTS[sort]} LIMIT ? OFFSET ?",
            *args, size, page * size)
        return [Tale(**r) for r in rows], pages


class WordListStore:
    """Each server's own blocked words, on top of the shipped list (model/safety.py)."""

    def __init__(self, db: Database):
        self.db = db

    async def words(self, guild_id: int) -> tuple[str, ...]:
        rows = await self.db.fetchall("SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word", guild_id)
        return tuple(row["word"] for row in rows)

    async def add(self, guild_id: int, word: str) -> bool:
        """Whether the word is new; ValueError when the server's list is full."""
        async def add(tx):
            await tx.lock("blocked_words", guild_id)
            count = await tx.fetchone("SELECT COUNT(*) AS n FROM blocked_words WHERE guild_id = ?", guild_id)
            if count["n"] >= MAX_SERVER_WORDS:
                raise ValueError(f"this server's list is full ({MAX_SERVER_WORDS} words)")
            return await tx.execute("INSERT INTO blocked_words (guild_id, word) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                    guild_id, word) == 1
        return await self.db.write(add)

    async def remove(self, guild_id: int, word: str) -> bool:
        return await self.db.write(lambda tx: tx.execute(
            "DELETE FROM blocked_words WHERE guild_id = ? AND word = ?", guild_id, word)) == 1


class CastStore:
    """Each server's cast: the names, places and things its stories draw on (model.memory). A
    server that never changed it has the default cast; entries keep the order they were added in."""

    def __init__(self, db: Database):
        self.db = db

    async def entries(self, guild_id: int) -> tuple[str, ...]:
        row = await self.db.fetchone("SELECT entries FROM casts WHERE guild_id = ?", guild_id)
        return tuple(json.loads(row["entries"])) if row else default_cast()

    async def _change(self, guild_id: int, change) -> bool:
        """Apply `change(entries) -> new entries or None (no change)` in one transaction."""
        async def apply(tx):
            await tx.lock("cast", guild_id)
            row = await tx.fetchone("SELECT entries FROM casts WHERE guild_id = ?", guild_id)
            new = change(tuple(json.loads(row["entries"])) if row else default_cast())
            if new is None:
                return False
            await tx.execute("INSERT INTO casts (guild_id, entries) VALUES (?, ?) "
                             "ON CONFLICT (guild_id) DO UPDATE SET entries = excluded.entries",
                             guild_id, json.dumps(list(new)))
            return True
        return await self.db.write(apply)

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
        await self.db.write(lambda tx: tx.execute("DELETE FROM casts WHERE guild_id = ?", guild_id))


@dataclass(frozen=True)
class WebGallery:
    guild_id: int
    slug: str  # the gallery's random address (bot/web.py)
    published: bool

    def __post_init__(self):
        object.__setattr__(self, "published", bool(self.published))  # SQLite stores 0/1


class WebGalleryStore:
    """Each server's gallery on the web: its random address, and whether the server publishes it
    (/settings web). A server's first change draws its address."""

    def __init__(self, db: Database):
        self.db = db

    async def get(self, guild_id: int) -> WebGallery | None:
        row = await self.db.fetchone("SELECT * FROM web_galleries WHERE guild_id = ?", guild_id)
        return WebGallery(**row) if row else None

    async def _upsert(self, guild_id: int, published: bool, sql: str) -> WebGallery:
        """A row drawn now, or the stored one changed by `sql` (an ON CONFLICT action)."""
        row = await self.db.write(lambda tx: tx.fetchone(
            f"INSERT INTO web_galleries (guild_id, slug, published) VALUES (?, ?, ?) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {sql} RETURNING *",
            guild_id, secrets.token_urlsafe(WEB_ADDRESS_BYTES), int(published)))
        return WebGallery(**row)

    async def publish(self, guild_id: int, published: bool) -> WebGallery:
        """Published, or taken down at once; the address stays."""
        return await self._upsert(guild_id, published, "published = excluded.published")

    async def new_address(self, guild_id: int) -> WebGallery:
        """A new random address: every earlier link answers 404. Published or not, as it was."""
        return await self._upsert(guild_id, False, "slug = excluded.slug")

    async def guild(self, slug: str) -> int | None:
        """The server whose published gallery lives at `slug`; None for any other address."""
        row = await self.db.fetchone("SELECT guild_id FROM web_galleries WHERE slug = ? AND published = 1", slug)
        return row["guild_id"] if row else None

    async def tale(self, slug: str, tale_id: int) -> Tale | None:
        """A tale of the published gallery at `slug`: saved to it and not hidden; None for any other
        (an unknown, hidden, removed or unsaved tale, or an address not published), in one query."""
        row = await self.db.fetchone(
            f"SELECT {TALE_COLUMNS} FROM tales WHERE id = ? AND in_gallery = 1 AND hidden = 0 AND guild_id = "
            "(SELECT guild_id FROM web_galleries WHERE slug = ? AND published = 1)", tale_id, slug)
        return Tale(**row) if row else None
