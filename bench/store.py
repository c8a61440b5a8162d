"""`quill bench store`: gallery operations per second for many members at once, on SQLite and on
PostgreSQL side by side (rounds alternate between them, so both see the same machine).

The operations are a bot's writes and reads: saving a tale to the gallery, a 👍 (members vote on a
few popular tales, so votes collide), a gallery page, and Continue's chapter insert. Without
--postgres, a throwaway PostgreSQL server is started for the run (tools/local_postgres.py).
"""
from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from bot.db import Database, GalleryStore

GUILD = 2**40 + 7
POPULAR = 5  # the tales most votes go to
OPERATIONS = ("save", "vote", "page", "chapter")


async def _seed(store: GalleryStore, members: int) -> list[int]:
    """One tale per member (theirs to save and to continue), saved ones to page through."""
    tales = []
    for m in range(members):
        tale = await store.add(guild_id=GUILD, channel_id=1, author_id=m, author_name=f"member{m}",
                               start="Harry", text="Harry looked at the castle. " * 20, temperature=0.5,
                               seed=m, model="bench", card_hash="bench")
        tales.append(tale.id)
    for tale_id in tales[::2]:
        await store.save_to_gallery(GUILD, tale_id)
    return tales


async def _rate(store: GalleryStore, operation: str, tales: list[int], members: int, per_member: int,
                round_: int) -> float:
    rng = random.Random(round_)
    pages = max(1, (await store.page(GUILD, 0))[1])

    async def member(m: int) -> None:
        for i in range(per_member):
            if operation == "save":
                await store.save_to_gallery(GUILD, tales[m])
            elif operation == "vote":
                await store.toggle_vote(GUILD, tales[rng.randrange(min(POPULAR, members))], m)
            elif operation == "page":
                await store.page(GUILD, rng.randrange(pages))
            else:
                await store.add_chapters(GUILD, tales[m], [("chapter", m, f"member{m}", "And then. " * 30, i)],
                                         limit=10**6)

    started = time.perf_counter()
    await asyncio.gather(*(member(m) for m in range(members)))
    return members * per_member / (time.perf_counter() - started)


async def _measure(locations: dict[str, str], members: int, per_member: int, rounds: int) -> dict:
    stores = {kind: GalleryStore(await Database.open(location)) for kind, location in locations.items()}
    try:
        tales = {kind: await _seed(store, members) for kind, store in stores.items()}
        rates = {(kind, op): [] for kind in stores for op in OPERATIONS}
        for round_ in range(rounds):
            for op in OPERATIONS:
                for kind, store in stores.items():
                    rates[kind, op].append(await _rate(store, op, tales[kind], members, per_member, round_))
        # Every chapter the members wrote at once landed: the rates count writes that happened.
        landed = {kind: (await store.db.fetchone("SELECT COUNT(*) AS n FROM chapters"))["n"]
                  for kind, store in stores.items()}
    finally:
        for store in stores.values():
            await store.db.close()
    written = members * per_member * rounds
    result = {"chapters_landed": {kind: n == written for kind, n in landed.items()}}
    for op in OPERATIONS:
        medians = {kind: statistics.median(rates[kind, op]) for kind in stores}
        result[op] = {f"{kind}_per_s": round(rate) for kind, rate in medians.items()}
        if len(medians) == 2:
            result[op]["postgresql_vs_sqlite"] = round(medians["postgresql"] / medians["sqlite"], 2)
    return result


def bench_store(postgres: str | None = None, members: int = 100, per_member: int = 10, rounds: int = 3) -> dict:
    from tools.local_postgres import LocalPostgres

    with tempfile.TemporaryDirectory() as folder:
        sqlite = str(Path(folder) / "bench.db")
        if postgres:
            figures = asyncio.run(_measure({"sqlite": sqlite, "postgresql": postgres}, members, per_member, rounds))
            where = "the given server"
        else:
            with LocalPostgres(durable=True) as server:
                figures = asyncio.run(_measure({"sqlite": sqlite, "postgresql": server.new_database()}, members,
                                               per_member, rounds))
            where = "a throwaway local server, fsync on"
    return {"members_at_once": members, "operations_per_member": per_member, "rounds": rounds,
            "figures": "median operations per second over the rounds", "postgresql": where,
            "sqlite": "one file, WAL, synchronous=FULL", **figures}
