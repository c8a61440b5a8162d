"""`quill bench web`: a tale's page on the web gallery (bot/web.py) read by many readers at once,
on SQLite and on PostgreSQL, and again with conditional GETs (each reader sends back the ETag
it has and gets a 304), as when a link goes round.

The gallery is served by a process of its own, as the bot's is, and the readers are aiohttp
clients in this one: on a 2-core machine each has a core (PostgreSQL shares them). Without
--postgres, a throwaway PostgreSQL server is started for the run (tools/local_postgres.py).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.db import Database, GalleryStore, WebGalleryStore
from tools.local_postgres import free_port
from bot.web import WebServer, tale_url

GUILD = 2**40 + 7
TARGETS = {"pages_per_s": 500, "p99_ms": 200}
PARAGRAPH = ("Harry looked at the castle, and the castle looked back at him with all its windows lit. "
             "'We should not be here,' whispered Hermione, pulling her cloak tighter. ")


async def _publish_a_tale(location: str) -> str:
    """A published gallery with one tale of three chapters (a long page); its path."""
    db = await Database.open(location)
    try:
        store, galleries = GalleryStore(db), WebGalleryStore(db)
        tale = await store.add(guild_id=GUILD, channel_id=1, author_id=1, author_name="Luna", start="Harry",
                               text="\n\n".join([PARAGRAPH * 2] * 5), temperature=0.5, seed=1, model="bench",
                               card_hash="bench", cast_entries=("Harry Potter", "Hermione Granger", "Hogwarts"))
        await store.save_to_gallery(GUILD, tale.id)
        await store.add_chapters(GUILD, tale.id, [("chapter", 2, "Ron", "\n\n".join([PARAGRAPH] * 6), 2),
                                                  ("chapter", 3, "Neville", "\n\n".join([PARAGRAPH] * 6), 3)], 10)
        gallery = await galleries.publish(GUILD, True)
        return tale_url("", gallery.slug, tale.id)
    finally:
        await db.close()


def _serve(location: str, port: int, ready) -> None:
    """The web gallery alone, in a process of its own, until it is terminated."""
    async def serve() -> None:
        server = WebServer(await Database.open(location), f"http://127.0.0.1:{port}", port=port)
        await server.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def _read(session: aiohttp.ClientSession, url: str, readers: int, per_reader: int,
                conditional: bool) -> dict:
    """`readers` readers at once, each reading the page `per_reader` times."""
    latencies: list[float] = []
    async with session.get(url) as first:
        assert first.status == 200, first.status
        headers = {"If-None-Match": first.headers["ETag"]} if conditional else {}
        size = len(await first.read())

    async def reader() -> None:
        for _ in range(per_reader):
            began = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                assert response.status == (304 if conditional else 200), response.status
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(readers)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"pages_per_s": round(len(latencies) / elapsed),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "bytes": 0 if conditional else size}


async def _readers(url: str, readers: int, per_reader: int) -> dict:
    """A warm-up (the page rendered once, every reader's connection open, kept alive as a
    browser's is), then the page read plainly and conditionally."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=readers)) as session:
        await _read(session, url, readers, per_reader, False)
        return {"plain": await _read(session, url, readers, per_reader, False),
                "conditional": await _read(session, url, readers, per_reader, True)}


def _measure(location: str, readers: int, per_reader: int) -> dict:
    path = asyncio.run(_publish_a_tale(location))
    port = free_port()
    spawn = multiprocessing.get_context("spawn")  # a clean process, as the bot's is
    ready = spawn.Event()
    server = spawn.Process(target=_serve, args=(location, port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the web gallery did not start within 60 s")
        return asyncio.run(_readers(f"http://127.0.0.1:{port}{path}", readers, per_reader))
    finally:
        server.terminate()
        server.join()


def bench_web(postgres: str | None = None, readers: int = 100, per_reader: int = 50) -> dict:
    from tools.local_postgres import LocalPostgres

    with tempfile.TemporaryDirectory() as folder:
        sqlite = str(Path(folder) / "bench.db")
        if postgres:
            figures = {"sqlite": _measure(sqlite, readers, per_reader),
                       "postgresql": _measure(postgres, readers, per_reader)}
        else:
            with LocalPostgres(durable=True) as server:
                figures = {"sqlite": _measure(sqlite, readers, per_reader),
                           "postgresql": _measure(server.new_database(), readers, per_reader)}
    met = all(f["pages_per_s"] >= TARGETS["pages_per_s"] and f["p99_ms"] <= TARGETS["p99_ms"]
              for backend in figures.values() for f in backend.values())
    return {"readers_at_once": readers, "pages_per_reader": per_reader,
            "page": "a tale of 3 chapters; plain: 200 and the page, conditional: 304 for the reader's ETag",
            **figures, "targets": TARGETS, "targets_met": met}
