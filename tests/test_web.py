"""The web gallery (bot/web.py) as readers, link unfurlers and a browser see it, on both database
backends: what is published and what is not (one 404 for everything else), hostile text shown as
text, the headers, conditional GETs, bad requests; /settings web through the cog and the console;
headless Chromium; and `quill bench web`."""
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from html.parser import HTMLParser

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from bot.app import QuillBot
from bot.db import Database, GalleryStore, Tale, WebGalleryStore
from bot.limits import WEB_SUMMARY
from tools.local_postgres import free_port
from bot.settings import Settings, SettingsError
from bot.web import WebError, WebServer
from tests.helpers import ephemeral_text, make_interaction
from tests.test_bot import press, run

PUBLIC = "https://tales.example.org/quill"
PUBLISHED, HOSTILE, UNPUBLISHED, NEVER = 1, 2, 3, 4  # servers
HOSTILE_TEXTS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">read me</a>",
    "<b>broken <i unclosed <p",
    "</p></article><p onclick='alert(1)'>out",
    "\u201cHarry\u201d \u2018said\u2019 \uff02quote\uff02 \u02bcapos\u02bc \u00abguillemets\u00bb",
    "{{ 7 * 7 }} {% raw %} ${7*7}",
    "&lt;already escaped&gt; &amp; &#60;script&#62;",
    "<!-- not a comment <style>body{display:none}</style>",
]
PAGE_TAGS = {"html", "head", "meta", "title", "link", "body", "header", "main", "footer", "a", "h1", "h2", "p",
             "nav", "ol", "li", "span", "strong", "time", "article", "section", "aside"}


class Page(HTMLParser):
    """A page as a browser parses it: its tags, attributes and text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.metas: dict[str, str] = {}
        self.texts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]
        found = dict(attrs)
        if tag == "meta" and "content" in found:
            self.metas[found.get("property") or found.get("name")] = found["content"]

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())


def only_text_and_our_markup(page: Page) -> None:
    assert set(page.tags) <= PAGE_TAGS, set(page.tags) - PAGE_TAGS
    assert not [name for name, _ in page.attributes if name.startswith("on")]
    for name, value in page.attributes:
        if name in ("href", "src"):
            assert re.fullmatch(r"(\.\./\.\./static/quill\.css|\./|new|feed\.atom|[0-9]+|\?page=[0-9]+|"
                                + re.escape(PUBLIC) + r"/g/[A-Za-z0-9_-]{16}/[0-9]+)", value), value


@dataclass
class Site:
    client: TestClient
    store: GalleryStore
    slug: str  # PUBLISHED's
    hostile_slug: str
    shown: list[Tale]  # PUBLISHED's saved tales, in the order they were told
    chaptered: Tale
    unseen: dict[str, tuple[str, int]]  # (address, tale id) of tales no reader may see, by why


async def tell(store: GalleryStore, guild: int, start: str, *, votes: int = 0, saved: bool = True,
               author: str = "Luna", text: str | None = None) -> Tale:
    tale = await store.add(guild_id=guild, channel_id=1, author_id=7, author_name=author, start=start,
                           text=text or f"{start} looked at the castle.\n\nThe owl flew over the hall.",
                           temperature=0.5, seed=3, model="tiny", card_hash="h", cast_entries=("Harry Potter", start))
    if saved:
        await store.save_to_gallery(guild, tale.id)
    for member in range(votes):
        await store.toggle_vote(guild, tale.id, 100 + member)
    return await store.get(guild, tale.id)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgresql"])
async def site(request, tmp_path_factory):
    """Four servers: one published with seven saved tales (two pages) and the tales nobody may see
    (hidden, unsaved, removed), one published with hostile starts, one that took its gallery down,
    and one that never published."""
    if request.param == "sqlite":
        location = str(tmp_path_factory.mktemp("web") / "quill.db")
    else:
        location = request.getfixturevalue("postgres_server").new_database()
    db = await Database.open(location)
    store, galleries = GalleryStore(db), WebGalleryStore(db)
    slug = (await galleries.publish(PUBLISHED, True)).slug
    shown = [await tell(store, PUBLISHED, f"Tale {n}", votes=n % 3) for n in range(6)]
    chaptered = await tell(store, PUBLISHED, "Ron's long tale", votes=1, text="Ron ran.\n\nRon ran on.\nAnd on.")
    await store.add_chapters(PUBLISHED, chaptered.id, [("chapter", 8, "Neville", "Chapter two, first.\n\nSecond.", 5),
                                                       ("chapter", 9, "Ginny", "Chapter three.", 6)], limit=10)
    shown.append(chaptered := await store.get(PUBLISHED, chaptered.id))
    hidden = await tell(store, PUBLISHED, "Reported")
    await store.report(PUBLISHED, hidden.id, 50, threshold=1)
    unsaved = await tell(store, PUBLISHED, "Not saved", saved=False)
    removed = await tell(store, PUBLISHED, "Removed")
    await store.remove(PUBLISHED, removed.id)
    hostile_slug = (await galleries.publish(HOSTILE, True)).slug
    hostile = [await tell(store, HOSTILE, text, author=text) for text in HOSTILE_TEXTS]
    taken_down = await galleries.publish(UNPUBLISHED, True)
    down = await tell(store, UNPUBLISHED, "Taken down")
    await galleries.publish(UNPUBLISHED, False)
    never = await tell(store, NEVER, "Never published")
    unseen = {"hidden": (slug, hidden.id), "unsaved": (slug, unsaved.id), "removed": (slug, removed.id),
              "another server's": (slug, hostile[0].id), "unpublished": (taken_down.slug, down.id),
              "never published, under another address": (slug, never.id), "unknown": (slug, 10**17)}
    async with TestClient(TestServer(WebServer(db, PUBLIC).app)) as client:
        yield Site(client, store, slug, hostile_slug, shown, chaptered, unseen)
    await db.close()


async def get(site: Site, path: str, **headers) -> tuple[aiohttp.ClientResponse, str]:
    """The answer to a GET of `path` exactly as written (no normalising of dots or escapes)."""
    url = URL(str(site.client.make_url("")).rstrip("/") + path, encoded=True)
    async with site.client.session.get(url, headers=headers, allow_redirects=False) as response:
        return response, await response.text()


async def test_a_gallery_lists_its_saved_tales_top_and_new_page_by_page(site):
    top1, top2 = [Page((await get(site, f"/g/{site.slug}/{query}"))[1]) for query in ("", "?page=2")]
    assert GalleryStore.PAGE_SIZE == 5 and len(site.shown) == 7
    listed = [h for page in (top1, top2) for h in page.attributes if h[0] == "href" and h[1].isdigit()]
    by_votes = sorted(site.shown, key=lambda t: (-t.votes, -t.id))
    assert [int(v) for _, v in listed] == [t.id for t in by_votes]
    assert "page 1 of 2" in top1.text and ("rel", "next") in top1.attributes and ("rel", "prev") in top2.attributes
    new = Page((await get(site, f"/g/{site.slug}/new"))[1])
    assert [int(v) for n, v in new.attributes if n == "href" and v.isdigit()] == [t.id for t in site.shown[::-1][:5]]
    assert "Ron's long tale" in new.text and "by Luna" in new.text and "3 chapters" in new.text
    for page in (top1, top2, new):
        only_text_and_our_markup(page)
    assert (await get(site, f"/g/{site.slug}/new?page=3"))[0].status == 404  # past the last page


async def test_a_tale_page_holds_every_chapter_and_who_told_it_when(site):
    tale = site.chaptered
    response, html = await get(site, f"/g/{site.slug}/{tale.id}")
    assert response.status == 200 and response.content_type == "text/html" and response.charset == "utf-8"
    page = Page(html)
    only_text_and_our_markup(page)
    for words in ("Ron's long tale", "A tale of Luna", "1 vote ·", "3 chapters", "Chapter 1", "Ron ran.", "Chapter 2",
                  "asked for by Neville", "Chapter two, first.", "Second.", "Chapter 3", "asked for by Ginny",
                  "Chapter three.", "The cast it was told with: Harry Potter, Ron's long tale.", "seed 3",
                  "Told by Quill (tiny)"):
        assert words in page.text, words
    assert "<p>Ron ran.</p>" in html and "<p>Chapter two, first.</p>\n" in html  # each paragraph its own
    day = tale.created_at[:10]
    assert f'<time datetime="{tale.created_at}">' in html and str(int(day[8:])) in page.text


async def test_a_tale_page_unfurls_as_a_card(site):
    tale = await tell(site.store, PUBLISHED, "Hermione's card", saved=False, text="Hermione read. " * 40)
    await site.store.save_to_gallery(PUBLISHED, tale.id)
    page = Page((await get(site, f"/g/{site.slug}/{tale.id}"))[1])
    url = f"{PUBLIC}/g/{site.slug}/{tale.id}"
    assert page.metas["og:title"] == page.metas["twitter:title"] == "Hermione's card"
    assert page.metas["og:site_name"] == "Quill" and page.metas["og:url"] == url and page.metas["og:type"] == "article"
    assert page.metas["twitter:card"] == "summary"
    description = page.metas["og:description"]
    assert description == page.metas["twitter:description"] == page.metas["description"]
    assert description.startswith("Hermione read. Hermione") and description.endswith("read.…")
    assert len(description) <= WEB_SUMMARY
    await site.store.remove(PUBLISHED, tale.id)


async def test_the_feed_lists_the_newest_saved_tales(site):
    response, xml = await get(site, f"/g/{site.slug}/feed.atom")
    assert response.status == 200 and response.content_type == "application/atom+xml"
    atom = "{http://www.w3.org/2005/Atom}"
    feed = ElementTree.fromstring(xml)
    entries = feed.findall(f"{atom}entry")
    assert [e.find(f"{atom}title").text for e in entries] == [t.start for t in site.shown[::-1]]
    assert entries[0].find(f"{atom}link").get("href") == f"{PUBLIC}/g/{site.slug}/{site.shown[-1].id}"
    assert feed.find(f"{atom}updated").text == site.shown[-1].created_at
    hostile = ElementTree.fromstring((await get(site, f"/g/{site.hostile_slug}/feed.atom"))[1])
    assert sorted(e.find(f"{atom}title").text for e in hostile.findall(f"{atom}entry")) == sorted(HOSTILE_TEXTS)


async def test_whatever_is_not_published_is_one_and_the_same_404(site):
    """An unknown address, a server that took its gallery down, and a hidden, unsaved, removed,
    unknown or other server's tale: every byte and header alike (but the date)."""
    paths = ["/", "/g/", "/g/AAAAAAAAAAAAAAAA/", "/g/AAAAAAAAAAAAAAAA/new", "/g/AAAAAAAAAAAAAAAA/feed.atom",
             f"/g/{site.slug}/?page=3", f"/g/{site.slug}", "/static/", "/favicon.ico", f"/g/{site.slug}/0"]
    paths += [f"/g/{address}/{tale_id}" for address, tale_id in site.unseen.values()]
    down = site.unseen["unpublished"][0]
    paths += [f"/g/{down}/", f"/g/{down}/new", f"/g/{down}/feed.atom", f"/g/{down}/?page=1"]
    answers = []
    for path in paths:
        response, body = await get(site, path)
        answers.append((response.status, body, {k: v for k, v in response.headers.items() if k != "Date"}))
    assert answers[0][0] == 404 and answers[0][1] == "404: nothing is published at this address.\n"
    assert all(answer == answers[0] for answer in answers), [p for p, a in zip(paths, answers) if a != answers[0]]
    for address, tale_id in site.unseen.values():  # nor does the feed or a gallery page list them
        if address == site.slug:
            listed = "".join([(await get(site, f"/g/{address}/{q}"))[1] for q in ("", "?page=2", "new", "feed.atom")])
            assert f"/{tale_id}<" not in listed and f'href="{tale_id}"' not in listed


async def test_hostile_text_is_shown_as_text(site):
    """Starts, writers' names and casts that try markup, script, event handlers, javascript: links,
    broken HTML, look-alike quotes and template syntax: each shows exactly as written."""
    gallery = Page("".join([(await get(site, f"/g/{site.hostile_slug}/{query}"))[1] for query in ("", "?page=2")]))
    only_text_and_our_markup(gallery)
    ids = [int(v) for n, v in gallery.attributes if n == "href" and v.isdigit()]
    assert len(ids) == len(HOSTILE_TEXTS)
    for tale_id in ids:
        html = (await get(site, f"/g/{site.hostile_slug}/{tale_id}"))[1]
        page = Page(html)
        only_text_and_our_markup(page)
        start = (await site.store.get(HOSTILE, tale_id)).start
        assert page.metas["og:title"] == start and f"A tale of {start}" in page.text
        assert page.text.count(start) >= 4  # title, heading, its first paragraph, the cast
    assert all(text in gallery.text for text in HOSTILE_TEXTS)


async def test_every_answer_carries_the_headers_and_sets_no_cookie(site):
    tale = f"/g/{site.slug}/{site.shown[0].id}"
    etag = (await get(site, tale))[0].headers["ETag"]
    answers = [await get(site, tale), await get(site, tale, **{"If-None-Match": etag}),
               await get(site, f"/g/{site.slug}/"), await get(site, f"/g/{site.slug}/feed.atom"),
               await get(site, "/static/quill.css"), await get(site, "/nothing"),
               await get(site, f"/g/{site.slug}/?page=x")]
    async with site.client.post(tale) as posted:
        answers.append((posted, await posted.text()))
    assert sorted(r.status for r, _ in answers) == [200, 200, 200, 200, 304, 400, 404, 405]
    for response, _ in answers:
        csp = response.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none'; style-src 'self';") and "script" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in response.headers
    css, _ = answers[4]
    assert css.content_type == "text/css"


async def test_a_reader_who_has_the_page_gets_a_304_until_it_changes(site):
    tale = await tell(site.store, PUBLISHED, "Conditional")
    path = f"/g/{site.slug}/{tale.id}"
    first, html = await get(site, path)
    etag = first.headers["ETag"]
    again, body = await get(site, path, **{"If-None-Match": etag})
    assert (again.status, body, again.headers["ETag"]) == (304, "", etag)
    assert (await get(site, path, **{"If-None-Match": f'"other", {etag}'}))[0].status == 304
    assert (await get(site, path, **{"If-None-Match": '"other"'}))[0].status == 200
    await site.store.toggle_vote(PUBLISHED, tale.id, 1)
    voted, html = await get(site, path, **{"If-None-Match": etag})
    assert voted.status == 200 and voted.headers["ETag"] != etag and "1 vote" in html
    await site.store.add_chapters(PUBLISHED, tale.id, [("chapter", 2, "Ron", "A second chapter.", 4)], limit=10)
    assert "A second chapter." in (await get(site, path, **{"If-None-Match": voted.headers["ETag"]}))[1]
    for other in (f"/g/{site.slug}/", f"/g/{site.slug}/feed.atom", "/static/quill.css"):
        seen = (await get(site, other))[0].headers["ETag"]
        assert (await get(site, other, **{"If-None-Match": seen}))[0].status == 304
    await site.store.remove(PUBLISHED, tale.id)
    assert (await get(site, path, **{"If-None-Match": voted.headers["ETag"]}))[0].status == 404  # gone at once


@pytest.mark.parametrize("path", [
    "/g/{slug}/99999999999999999999999999", "/g/{slug}/9223372036854775808", "/g/{slug}/-1", "/g/{slug}/1.5",
    "/g/{slug}/%00", "/g/{slug}%00/", "/g/{slug}/../../etc/passwd", "/g/%2e%2e/%2e%2e/etc/passwd",
    "/g/{slug}/%E2%80%AE", "/g/%C3%A9%C3%A9/", "/g/" + "A" * 5000 + "/", "/g/{slug}/?page=0", "/g/{slug}/?page=-1",
    "/g/{slug}/?page=1e9", "/g/{slug}/?page=99999999999999999999", "/g/{slug}/?page=%ff", "/g/{slug}/?page=1&page=2",
    "/g/{slug}/?page=", "/g/{slug}/?utm_source=x", "/g/{slug}/?page=2;drop", "/g/{slug}/{tale}?x=1",
    "/g/{slug}/feed.atom?page=2", "/static/quill.css?v=1", "/static/../bot/web.py",
    "/g/{slug}/?page=999999", "/g/{slug}/new?page=%00",
])
async def test_bad_paths_and_queries_get_a_404_or_400_never_a_500(site, path):
    response, body = await get(site, path.format(slug=site.slug, tale=site.shown[0].id))
    assert response.status in (400, 404), (response.status, body)
    if response.status == 400:
        assert body.startswith("400: ") and "?" in body  # says what was wrong with the query


async def test_web_settings_through_the_cog_publish_take_down_and_readdress(tiny_bundle, database_location):
    """/settings web:on, off and reset as a moderator gives them; the bot's own web server on its
    port; the tale's Read on the web button."""
    port = free_port()
    bot = QuillBot(Settings(database=database_location, model=tiny_bundle, queue_size=2, max_batch=2,
                            story_timeout=30, web_port=port))
    guild = 77
    async with bot, aiohttp.ClientSession() as http:
        await bot.prepare()
        bot.writer.edit_interval = 0.0
        await bot.guild_settings.update(guild, cooldown_seconds=0)

        async def status(url: str) -> int:
            async with http.get(url) as response:
                return response.status

        async def web(value: str, manage_guild: bool = True) -> str:
            return ephemeral_text(await run(bot, "settings", make_interaction(bot, guild_id=guild,
                                                                              manage_guild=manage_guild), web=value))

        assert "Manage Server" in await web("on", manage_guild=False)
        assert await bot.web_galleries.get(guild) is None
        shown = await web("on")
        address = re.search(r"on the web at (http://127\.0\.0\.1:\d+/g/[A-Za-z0-9_-]{16}/)", shown).group(1)
        assert address.startswith(f"http://127.0.0.1:{port}/") and await status(address) == 200
        told = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry", length=100)
        view = told.edit_original_response.call_args.kwargs["view"]
        assert not [item for item in view.children if getattr(item, "url", None)]  # not saved: no page yet
        saver = make_interaction(bot, guild_id=guild)
        await press(view, "Save", saver)
        [link] = [i for i in saver.response.edit_message.call_args.kwargs["view"].children if getattr(i, "url", None)]
        tale_id = int(link.url.rsplit("/", 1)[1])
        assert (link.label, link.url, link.custom_id) == ("Read on the web", f"{address}{tale_id}", None)
        assert await status(link.url) == 200
        show = await run(bot, "tale show", make_interaction(bot, guild_id=guild), id=tale_id)
        shown_with = show.response.send_message.call_args.kwargs["view"].children
        assert [i.url for i in shown_with if getattr(i, "url", None)] == [link.url]

        assert "not on the web" in await web("off")
        assert await status(address) == await status(link.url) == 404  # at once
        assert "not on the web" in await web("reset")
        assert await status(link.url) == 404
        readdressed = re.search(r"on the web at (\S+/)", await web("on")).group(1)
        assert readdressed != address and await status(address) == await status(link.url) == 404
        assert await status(f"{readdressed}{tale_id}") == 200
        renewed = await web("reset")
        assert "earlier links show nothing now" in renewed and readdressed not in renewed
        assert await status(f"{readdressed}{tale_id}") == 404

        bot.settings = replace(bot.settings, web_port=None, public_url=None)  # an operator who serves no gallery
        refused = await web("off")
        assert "QUILL_WEB_PORT" in refused and (await bot.web_galleries.get(guild)).published


@pytest.mark.slow
def test_the_console_serves_its_gallery_and_prints_the_link(tiny_bundle, tmp_path):
    """`make run` with QUILL_WEB_PORT: /settings web:on in the console publishes the console's
    server; a saved tale's link button shows its page's address."""
    port = free_port()
    env = {**os.environ, "QUILL_MODEL": str(tiny_bundle), "QUILL_DATABASE": str(tmp_path / "console.db"),
           "QUILL_WEB_PORT": str(port)}
    env.pop("DISCORD_TOKEN", None)
    env.pop("QUILL_PUBLIC_URL", None)
    console = subprocess.Popen([sys.executable, "-m", "cli", "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)

    def answer_to(line: str, wanted: str) -> str:
        console.stdin.write(line + "\n")
        console.stdin.flush()
        return next(out for out in iter(console.stdout.readline, "") if wanted in out)

    try:
        assert f"The web gallery listens on http://127.0.0.1:{port}" in console.stdout.readline() + \
            console.stdout.readline()
        address = re.search(r"on the web at (\S+/)", answer_to("/settings web:on", "on the web at")).group(1)
        assert address.startswith(f"http://127.0.0.1:{port}/g/")
        assert "No tales are saved" in urllib.request.urlopen(address, timeout=30).read().decode()
        answer_to("/story start:Harry length:100", "[Save to gallery]")
        link = re.search(r"\[Read on the web\] (\S+)", answer_to("press save", "[Read on the web]")).group(1)
        assert link.startswith(address) and "<h1>Harry</h1>" in urllib.request.urlopen(link, timeout=30).read().decode()
        console.stdin.write("quit\n")
        console.stdin.flush()
        assert console.wait(60) == 0
    finally:
        console.kill()
        console.wait()
    assert "Traceback" not in console.stderr.read()


def test_settings_read_the_web_gallery():
    assert Settings.from_env({}, dotenv=False).public_url is None  # no port, no address: no links
    served = Settings.from_env({"QUILL_WEB_PORT": "8080"}, dotenv=False)
    assert (served.web_port, served.web_host, served.public_url) == (8080, "127.0.0.1", "http://127.0.0.1:8080")
    behind = Settings.from_env({"QUILL_PUBLIC_URL": " https://tales.example.org/quill/ ", "QUILL_WEB_PORT": "",
                                "QUILL_WEB_HOST": "0.0.0.0"}, dotenv=False)
    assert (behind.web_port, behind.web_host, behind.public_url) == (None, "0.0.0.0", "https://tales.example.org/quill")
    for name, value, message in [
            ("QUILL_WEB_PORT", "web", "QUILL_WEB_PORT must be a whole number"),
            ("QUILL_WEB_PORT", "70000", "QUILL_WEB_PORT must be a port number, 1 to 65535"),
            ("QUILL_PUBLIC_URL", "tales.example.org", "QUILL_PUBLIC_URL must be an http:// or https:// address"),
            ("QUILL_PUBLIC_URL", "javascript:alert(1)", "QUILL_PUBLIC_URL must be an http:// or https:// address"),
            ("QUILL_PUBLIC_URL", "https://x.org/?a=1", "with no query"),
            ("QUILL_PUBLIC_URL", "https://x.org/" + "a" * 400, "at most 400 characters")]:
        with pytest.raises(SettingsError, match=re.escape(message)):
            Settings.from_env({name: value}, dotenv=False)


async def test_a_servers_address_is_random_and_readdressing_kills_the_old(database_location):
    db = await Database.open(database_location)
    try:
        galleries = WebGalleryStore(db)
        assert await galleries.get(5) is None and await galleries.guild("anything") is None
        first, other = await galleries.publish(5, True), await galleries.publish(6, True)
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", first.slug) and first.slug != other.slug
        assert await galleries.guild(first.slug) == 5
        down = await galleries.publish(5, False)
        assert (down.slug, down.published) == (first.slug, False) and await galleries.guild(first.slug) is None
        moved = await galleries.new_address(5)
        assert moved.slug != first.slug and not moved.published  # published or not, as it was
        assert (await galleries.publish(5, True)).slug == moved.slug and await galleries.guild(moved.slug) == 5
        assert await galleries.guild(first.slug) is None
    finally:
        await db.close()


async def test_a_port_already_taken_is_one_clear_error(tmp_path):
    db = await Database.open(str(tmp_path / "quill.db"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            with pytest.raises(WebError, match=r"cannot serve the web gallery on 127\.0\.0\.1:\d+ \(QUILL_WEB_HOST, "
                                               r"QUILL_WEB_PORT\): .*address already in use"):
                await WebServer(db, PUBLIC, port=taken.getsockname()[1]).start()
        finally:
            await db.close()


def browser() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is missing: `make test` installs it as root on Debian (`apt-get install chromium`)",
                    pytrace=False)
    return found


async def chromium(*arguments: str, profile) -> str:
    process = await asyncio.create_subprocess_exec(
        browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", *arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)  # the event loop serves it the page meanwhile
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


@pytest.mark.slow
async def test_headless_chromium_renders_a_tale_page(site, tmp_path):
    """A tale whose start would mark the page if any script of it ran: Chromium shows it as text,
    with every chapter, and takes a screenshot."""
    start = "<script>document.body.dataset.ran = 1</script><img src=x onerror=\"document.body.dataset.ran = 1\">"
    tale = await tell(site.store, HOSTILE, start, text=f"{start}\n\nA second paragraph.")
    await site.store.add_chapters(HOSTILE, tale.id, [("chapter", 2, "Ron", "The chapter Ron asked for.", 4)], 10)
    url = str(site.client.make_url(f"/g/{site.hostile_slug}/{tale.id}"))
    dom = await chromium("--dump-dom", url, profile=tmp_path / "profile")
    page = Page(dom)
    assert "script" not in page.tags and "img" not in page.tags and "data-ran" not in dom
    assert page.metas["og:title"] == start and page.text.count(start) >= 3
    for words in ("A second paragraph.", "Chapter 2", "asked for by Ron", "The chapter Ron asked for."):
        assert words in page.text
    shot = tmp_path / "tale.png"
    await chromium(f"--screenshot={shot}", "--window-size=390,844", url, profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000  # more than a blank page
    await site.store.remove(HOSTILE, tale.id)


@pytest.mark.slow
def test_bench_web_measures_both_backends(postgres_server):
    from bench.web import bench_web

    result = bench_web(postgres_server.new_database(), readers=4, per_reader=3)
    for backend in ("sqlite", "postgresql"):
        for kind in ("plain", "conditional"):
            figures = result[backend][kind]
            assert figures["pages_per_s"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert result[backend]["plain"]["bytes"] > 1000 and result[backend]["conditional"]["bytes"] == 0
    assert isinstance(result["targets_met"], bool)

