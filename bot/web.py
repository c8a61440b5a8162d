"""The web gallery (QUILL_WEB_PORT): the saved tales of every server that publishes them
(/settings web:on), read-only, served in the bot's process by the aiohttp that discord.py brings,
apart from the private metrics port.

    /g/<address>/            the gallery, most votes (👍) first (?page=2 and on)
    /g/<address>/new         newest first
    /g/<address>/<id>        a tale: every chapter, who wrote it and when, its votes, its cast
    /g/<address>/feed.atom   the newest tales, as an Atom feed
    /static/quill.css        the one stylesheet

A server's address is random (bot/db.py draws it; /settings web:reset draws another), so nobody
finds a gallery from a server's id or walks from one gallery to the next. Whatever is not
published (an unknown address, an unpublished server, a hidden, removed or unsaved tale) gets the
same 404, byte for byte. Pages are Jinja2 templates with autoescaping on, so whatever a member or
the model wrote is text; every answer forbids scripts and anything from elsewhere in its
Content-Security-Policy, sets no cookie, and carries an ETag that a reader sends back for a 304.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import jinja2
from aiohttp import web

from bot.db import Database, GalleryStore, WebGalleryStore, writers
from bot.errors import counted
from bot.limits import WEB_FEED_TALES, WEB_SUMMARY

log = logging.getLogger("quill.web")
HERE = Path(__file__).resolve().parent
CACHED_TALES = 512  # rendered tale pages kept: a link that goes round is rendered once per change

HEADERS = {
    # Stylesheet from this site only; no script, image, font, frame or form anywhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # an address never travels to another site
    "X-Robots-Tag": "noindex",  # shared by members, not listed by search engines
    "Cache-Control": "no-cache",  # asked again each time (a 304 is cheap): web:off takes a page down at once
}
ADDRESS = r"[A-Za-z0-9_-]{1,64}"
TALE_ID = r"[1-9][0-9]{0,17}"  # below 2**63, which both databases hold
PAGE = re.compile(r"[1-9][0-9]{0,5}")
NOT_FOUND = "404: nothing is published at this address.\n"


class WebError(ValueError):
    """The web gallery cannot listen where it was told; the message says where."""


class Page(NamedTuple):
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, text: str, content_type: str = "text/html") -> "Page":
        body = text.encode()
        return cls(body, content_type, hashlib.blake2b(body, digest_size=16).hexdigest())


def gallery_url(public_url: str, slug: str) -> str:
    return f"{public_url}/g/{slug}/"


def tale_url(public_url: str, slug: str, tale_id: int) -> str:
    return f"{gallery_url(public_url, slug)}{tale_id}"


async def tale_link(bot, tale) -> str | None:
    """A tale's page, for its "Read on the web" button: only where the bot has a public address,
    the server publishes its gallery and the tale is in it (any other tale's page is a 404)."""
    if bot.settings.public_url is None or not tale.in_gallery or tale.hidden:
        return None
    gallery = await bot.web_galleries.get(tale.guild_id)
    return tale_url(bot.settings.public_url, gallery.slug, tale.id) if gallery and gallery.published else None


# -- what the templates show ----------------------------------------------------------------------
def paragraphs(text: str) -> list[str]:
    """A tale's paragraphs: blank lines part them (a line break inside one is kept by the stylesheet)."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def summary(text: str) -> str:
    """The beginning of a text on one line, cut at a word: a link's card, the gallery, the feed."""
    flat = " ".join(text.split())
    if len(flat) <= WEB_SUMMARY:
        return flat
    return flat[:WEB_SUMMARY - 1].rsplit(" ", 1)[0] + "…"


def day(stored: str) -> str:
    """A stored ISO time as readers say a date: 3 December 2026."""
    when = datetime.fromisoformat(stored)
    return f"{when.day} {when:%B %Y}"


def xml_text(text: str) -> str:
    """Text without the control characters XML 1.0 cannot hold (a feed with one is unreadable)."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(paragraphs=paragraphs, summary=summary, day=day, xml=xml_text, counted=counted)
    return env


class NotPublished(Exception):
    """Answered with the one 404."""


def no_query(request: web.Request) -> None:
    if request.query_string:
        raise web.HTTPBadRequest(text="400: this page takes no query (nothing after ?)\n")


def page_number(request: web.Request) -> int:
    """?page=N, from 1; a page takes nothing else."""
    extra = set(request.query) - {"page"}
    if extra:
        raise web.HTTPBadRequest(text=f"400: a gallery page takes only ?page=N, not {sorted(extra)[0][:40]!r}\n")
    numbers = request.query.getall("page", ["1"])
    if len(numbers) != 1 or not PAGE.fullmatch(numbers[0]):
        raise web.HTTPBadRequest(text="400: ?page must be one page number, such as ?page=2\n")
    return int(numbers[0])


class WebServer:
    """The web gallery over one database; `app` is the aiohttp application (the tests serve it
    themselves), `start` and `close` run it on a port."""

    def __init__(self, db: Database, public_url: str, host: str = "127.0.0.1", port: int = 0):
        self.galleries, self.tales = WebGalleryStore(db), GalleryStore(db)
        self.public_url, self.host, self.port = public_url, host, port
        self.templates = templates()
        self.stylesheet = Page.of((HERE / "static" / "quill.css").read_text(), "text/css")
        self.not_found = Page.of(NOT_FOUND, "text/plain")
        self.rendered: OrderedDict[tuple[str, int], tuple[tuple, Page]] = OrderedDict()
        self.looking_up: dict[tuple[str, int], asyncio.Future] = {}
        self.app = web.Application(middlewares=[self._one_404])
        self.app.on_response_prepare.append(self._headers)
        self.app.router.add_get(f"/g/{{slug:{ADDRESS}}}/", self.gallery)
        self.app.router.add_get(f"/g/{{slug:{ADDRESS}}}/{{sort:new}}", self.gallery)
        self.app.router.add_get(f"/g/{{slug:{ADDRESS}}}/{{tale:{TALE_ID}}}", self.tale)
        self.app.router.add_get(f"/g/{{slug:{ADDRESS}}}/feed.atom", self.feed)
        self.app.router.add_get("/static/quill.css", self.css)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as e:
            await self._runner.cleanup()
            raise WebError(f"cannot serve the web gallery on {self.host}:{self.port} (QUILL_WEB_HOST, "
                           f"QUILL_WEB_PORT): {e.strerror or e}") from None
        log.info("web gallery on %s:%d, linked as %s", self.host, self.port, self.public_url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- every answer -----------------------------------------------------------------------------
    @web.middleware
    async def _one_404(self, request: web.Request, handler):
        try:
            return await handler(request)
        except (NotPublished, web.HTTPNotFound):
            return self._send(request, self.not_found, status=404)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(HEADERS)

    def _send(self, request: web.Request, page: Page, status: int = 200) -> web.Response:
        """The page, or 304 when the reader has it already (its ETag)."""
        if status == 200 and any(tag.value in (page.etag, "*") for tag in request.if_none_match or ()):
            response = web.Response(status=304)
        else:
            response = web.Response(status=status, body=page.body, content_type=page.content_type, charset="utf-8")
        response.etag = page.etag
        return response

    def _render(self, template: str, **values) -> str:
        return self.templates.get_template(template).render(root="../../", **values)

    # -- the pages ----------------------------------------------------------------------------------
    async def gallery(self, request: web.Request) -> web.Response:
        number = page_number(request)  # a bad query is refused before anything is looked up
        slug, sort = request.match_info["slug"], request.match_info.get("sort", "top")
        guild_id = await self.galleries.guild(slug)
        if guild_id is None:
            raise NotPublished
        tales, pages = await self.tales.page(guild_id, number - 1, sort)
        if number > pages:
            raise NotPublished
        return self._send(request, Page.of(self._render("gallery.html", tales=tales, sort=sort, page=number,
                                                        pages=pages)))

    async def tale(self, request: web.Request) -> web.Response:
        no_query(request)
        key = request.match_info["slug"], int(request.match_info["tale"])
        tale = await self._published_tale(key)
        if tale is None:
            raise NotPublished
        # Its text never changes: a new vote or chapter is a new version (and the address is in the key).
        version = tale.votes, tale.chapters
        kept = self.rendered.get(key)
        if kept is not None and kept[0] == version:
            self.rendered.move_to_end(key)
            page = kept[1]
        else:
            chapters = await self.tales.chapters(tale.guild_id, tale.id) if tale.chapters > 1 else []
            page = Page.of(self._render("tale.html", tale=tale, chapters=chapters, writers=writers(tale, chapters),
                                        url=tale_url(self.public_url, *key)))
            self.rendered[key] = (version, page)
            self.rendered.move_to_end(key)
            if len(self.rendered) > CACHED_TALES:
                self.rendered.popitem(last=False)
        return self._send(request, page)

    async def _published_tale(self, key: tuple[str, int]):
        """The tale as the database has it now; readers asking at once share one query, so a link
        that goes round costs one query at a time, not one per reader."""
        asking = self.looking_up.get(key)
        if asking is None:
            asking = self.looking_up[key] = asyncio.ensure_future(self.galleries.tale(*key))
            asking.add_done_callback(lambda _: self.looking_up.pop(key))
        return await asyncio.shield(asking)  # a reader who leaves does not cancel the others' answer

    async def feed(self, request: web.Request) -> web.Response:
        no_query(request)
        slug = request.match_info["slug"]
        guild_id = await self.galleries.guild(slug)
        if guild_id is None:
            raise NotPublished
        tales, _ = await self.tales.page(guild_id, 0, "new", size=WEB_FEED_TALES)
        text = self._render("feed.atom", tales=tales, gallery=gallery_url(self.public_url, slug))
        return self._send(request, Page.of(text, "application/atom+xml"))

    async def css(self, request: web.Request) -> web.Response:
        no_query(request)
        return self._send(request, self.stylesheet)
