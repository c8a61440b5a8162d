"""The stores on both backends (tests/conftest.py's database_location: a SQLite file and a fresh
PostgreSQL database): the schema, migrations, and the rules that must hold when several
processes share one database. Two Database objects on one location stand for two processes."""
import asyncio

import pytest
import pytest_asyncio

from bot import db
from bot.backends import DatabaseError, IntegrityError
from bot.db import ChapterLimit, Database, GalleryStore, GuildSettingsStore, ReportLimit
from bot.limits import REPORT_THRESHOLD, REPORTS_PER_HOUR

GUILD = 2**62 + 12345  # Discord ids need 64 bits


async def schema(database: Database) -> list[tuple]:
    """Tables, columns, constraints and indexes, in a form that compares."""
    if database.kind == "sqlite":
        rows = await database.fetchall("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        return [tuple(r.values()) for r in rows]
    columns = await database.fetchall(
        "SELECT table_name, ordinal_position, column_name, data_type, column_default, is_nullable "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
    constraints = await database.fetchall(
        "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY t, conname")
    indexes = await database.fetchall("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                                      "ORDER BY indexname")
    return [tuple(r.values()) for r in columns + constraints + indexes]


async def columns(database: Database) -> set[tuple[str, str]]:
    if database.kind == "sqlite":
        tables = [r["name"] for r in await database.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                             "AND name NOT LIKE 'sqlite_%'")]
        return {(t, r["name"]) for t in tables for r in await database.fetchall(f"PRAGMA table_info({t})")}
    rows = await database.fetchall("SELECT table_name, column_name FROM information_schema.columns "
                                   "WHERE table_schema = 'public'")
    return {(r["table_name"], r["column_name"]) for r in rows}


async def test_every_earlier_version_migrates_to_the_new_schema(database_location, postgres_server, tmp_path,
                                                                monkeypatch):
    def locations():
        for k in range(len(db.MIGRATIONS) + 1):
            yield k, (str(tmp_path / f"v{k}.db") if database_location.endswith(".db")
                      else postgres_server.new_database())

    fresh = await Database.open(database_location)
    expected = await schema(fresh)
    await fresh.close()
    for k, location in locations():
        monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS[:k])
        old = await Database.open(location)  # a database as release k left it
        await old.close()
        monkeypatch.undo()
        upgraded = await Database.open(location)
        try:
            assert await schema(upgraded) == expected, f"migrated from version {k}"
            row = await upgraded.fetchone("SELECT MAX(version) AS v FROM schema_version")
            assert row["v"] == len(db.MIGRATIONS)
        finally:
            await upgraded.close()


async def test_both_backends_hold_the_same_tables_and_columns(postgres_server, tmp_path):
    lite, pg = await Database.open(str(tmp_path / "q.db")), await Database.open(postgres_server.new_database())
    try:
        assert await columns(lite) == await columns(pg)
        types = {r["data_type"] for r in await pg.fetchall(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'public'")}
        assert types == {"bigint", "double precision", "text"}  # no 32-bit column for a Discord id
    finally:
        await lite.close()
        await pg.close()


async def test_processes_opening_one_new_database_together_migrate_it_once(database_location):
    opened = await asyncio.gather(*(Database.open(database_location) for _ in range(4)))
    try:
        rows = await opened[0].fetchall("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, len(db.MIGRATIONS) + 1))
    finally:
        for database in opened:
            await database.close()


@pytest_asyncio.fixture(loop_scope="module")  # the tests' own loop (pyproject)
async def two_processes(database_location):
    """Two handles on one database, as two bot processes have."""
    one, two = await Database.open(database_location), await Database.open(database_location)
    yield GalleryStore(one), GalleryStore(two)
    await one.close()
    await two.close()


async def add_tale(store: GalleryStore, seed: int = 1):
    return await store.add(guild_id=GUILD, channel_id=1, author_id=1, author_name="a", start="Harry", text="t",
                           temperature=0.5, seed=seed, model="m", card_hash="h")


async def test_tale_numbers_are_unique_and_increase(two_processes):
    async def add_many(store, first):
        return [(await add_tale(store, first + i)).id for i in range(15)]

    one, two = await asyncio.gather(add_many(two_processes[0], 0), add_many(two_processes[1], 100))
    assert len(set(one + two)) == 30
    assert one == sorted(one) and two == sorted(two)  # each process's next tale has a higher number


async def test_a_members_vote_counts_once_across_processes(two_processes):
    tale = await add_tale(two_processes[0])
    members = range(1, 31)
    await asyncio.gather(*(two_processes[m % 2].toggle_vote(GUILD, tale.id, m) for m in members))
    assert (await two_processes[1].get(GUILD, tale.id)).votes == 30
    # One member pressing 👍 in both processes at once: one press counts, the other takes it back.
    (_, first), (_, second) = await asyncio.gather(*(store.toggle_vote(GUILD, tale.id, 99) for store in two_processes))
    assert first != second
    assert (await two_processes[0].get(GUILD, tale.id)).votes == 30


async def test_the_report_threshold_holds_under_concurrent_reports(two_processes):
    below, over = await add_tale(two_processes[0], 1), await add_tale(two_processes[0], 2)
    await asyncio.gather(*(two_processes[m % 2].report(GUILD, below.id, m, 3) for m in (1, 2)))
    assert not (await two_processes[0].get(GUILD, below.id)).hidden
    results = await asyncio.gather(*(two_processes[m % 2].report(GUILD, over.id, m, 3) for m in range(1, 11)))
    assert sum(new for _, new in results) == 10
    assert (await two_processes[1].get(GUILD, over.id)).hidden


async def test_a_member_makes_at_most_so_many_reports_an_hour_across_processes(two_processes):
    tales = [await add_tale(two_processes[0], seed) for seed in range(REPORTS_PER_HOUR + 3)]

    async def report(i, member=7):
        try:
            return (await two_processes[i % 2].report(GUILD, tales[i].id, member, 3))[1]
        except ReportLimit:
            return None

    results = await asyncio.gather(*(report(i) for i in range(len(tales))))
    assert results.count(True) == REPORTS_PER_HOUR and results.count(None) == 3
    made = [i for i, new in enumerate(results) if new]
    assert await report(made[0]) is False  # a tale already reported says so; it is not a new report
    assert await report(results.index(None), member=8) is True  # another member is not limited
    await two_processes[0].db.write(lambda tx: tx.execute(  # an hour on, the member may report again
        "UPDATE reports SET created_at = '2000-01-01T00:00:00+00:00' WHERE user_id = 7"))
    assert await report(results.index(None)) is True


async def test_the_report_threshold_default_is_kept_by_the_migration(database_location, postgres_server, tmp_path,
                                                                     monkeypatch):
    location = str(tmp_path / "old.db") if database_location.endswith(".db") else postgres_server.new_database()
    monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS[:6])  # before reports defaulted to 3
    old = await Database.open(location)
    await GuildSettingsStore(old).update(GUILD, cooldown_seconds=5)
    await old.close()
    monkeypatch.undo()
    upgraded = await Database.open(location)
    try:
        store = GuildSettingsStore(upgraded)
        kept = await store.get(GUILD)
        assert (kept.cooldown_seconds, kept.report_threshold) == (5, 1)  # a stored value may be a moderator's
        assert (await store.update(GUILD + 1, cooldown_seconds=5)).report_threshold == REPORT_THRESHOLD.default == 3
    finally:
        await upgraded.close()


async def test_the_chapter_cap_holds_under_concurrent_continues(two_processes):
    tale = await add_tale(two_processes[0])

    async def go_on(i):
        try:
            return await two_processes[i % 2].add_chapters(GUILD, tale.id, [("chapter", i, "m", f"part {i}", i)], 5)
        except ChapterLimit:
            return None

    added = [c for c in await asyncio.gather(*(go_on(i) for i in range(20))) if c]
    assert len(added) == 4  # the tale's own text is chapter 1
    chapters = await two_processes[1].chapters(GUILD, tale.id)
    assert [c.number for c in chapters] == [2, 3, 4, 5]
    assert sorted(c.text for c in chapters) == sorted(part[0].text for part in added)


async def test_cast_and_word_list_changes_from_two_processes_all_land(database_location):
    from bot.db import CastStore, WordListStore

    one, two = await Database.open(database_location), await Database.open(database_location)
    try:
        casts, words = (CastStore(one), CastStore(two)), (WordListStore(one), WordListStore(two))
        names = [f"Wizard{chr(65 + i)}" for i in range(12)]
        await asyncio.gather(*(casts[i % 2].add(GUILD, name) for i, name in enumerate(names)))
        assert set(names) <= set(await casts[0].entries(GUILD))  # no change overwrote another
        await asyncio.gather(*(words[i % 2].add(GUILD, f"word{i}") for i in range(12)))
        assert len(await words[1].words(GUILD)) == 12
    finally:
        await one.close()
        await two.close()


async def test_settings_changed_in_one_process_are_read_at_once_by_the_other(database_location):
    one, two = await Database.open(database_location), await Database.open(database_location)
    try:
        await GuildSettingsStore(one).update(GUILD, temperature=0.8, max_chapters=3)
        seen = await GuildSettingsStore(two).get(GUILD)
        assert (seen.temperature, seen.max_chapters) == (0.8, 3)
        with pytest.raises(IntegrityError):  # the schema's own limits, on both backends
            await GuildSettingsStore(two).update(GUILD, story_length=5)
        assert (await GuildSettingsStore(one).get(GUILD)).story_length == 800  # nothing half-written
    finally:
        await one.close()
        await two.close()


async def test_exactly_one_process_claims_the_command_sync(database_location):
    handles = [await Database.open(database_location) for _ in range(3)]
    try:
        claims = await asyncio.gather(*(h.claim_meta("command_tree:global", "abc") for h in handles))
        assert sorted(claims) == [False, False, True]
        assert not await handles[0].claim_meta("command_tree:global", "abc")  # unchanged: nobody syncs
        assert await handles[1].claim_meta("command_tree:global", "def")  # a new tree: one syncs
    finally:
        for h in handles:
            await h.close()


async def test_an_unreachable_postgresql_is_a_clear_error():
    from tools.local_postgres import free_port

    with pytest.raises(DatabaseError, match=r"cannot open the database postgresql://quill:\*\*\*@127.0.0.1"):
        await Database.open(f"postgresql://quill:secret@127.0.0.1:{free_port()}/nothing")


def test_bench_store_measures_both_backends(postgres_server):
    from bench.store import OPERATIONS, bench_store

    result = bench_store(postgres_server.new_database(), members=4, per_member=2, rounds=1)
    assert result["chapters_landed"] == {"sqlite": True, "postgresql": True}  # what it timed really happened
    assert all(set(result[op]) == {"sqlite_per_s", "postgresql_per_s", "postgresql_vs_sqlite"} for op in OPERATIONS)
