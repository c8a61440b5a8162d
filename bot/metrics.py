"""What an operator sees of a running bot (QUILL_METRICS_PORT): Prometheus metrics at /metrics
and a health check at /healthz, served by the aiohttp that discord.py already brings.

Each bot has its own registry, so several bots in one process (the tests) never collide.
"""
from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("quill.metrics")

# Seconds: a first chunk comes within tens of milliseconds on an idle box; a queue makes it seconds.
FIRST_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


class Metrics:
    def __init__(self, bot=None):
        self.registry = r = CollectorRegistry()
        self.started = Counter("quill_stories_started", "Stories, chapters and replies begun", registry=r)
        self.finished = Counter("quill_stories_finished", "Stories written and stored", registry=r)
        self.refused = Counter("quill_stories_refused", "Requests refused before writing (cooldown, channel, "
                               "busy queue, a start the model cannot write)", ["reason"], registry=r)
        self.failed = Counter("quill_stories_failed", "Stories begun that did not finish (the generator "
                              "died or timed out, or storing failed)", registry=r)
        self.first_chunk = Histogram("quill_first_chunk_seconds", "From the request to its first text",
                                     buckets=FIRST_CHUNK_BUCKETS, registry=r)
        self.story_seconds = Histogram("quill_story_seconds", "From the request to the stored story",
                                       buckets=STORY_BUCKETS, registry=r)
        self.rewinds = Counter("quill_filter_rewinds", "Times the word filter took back a blocked word and the "
                               "model chose again", registry=r)
        self.http_errors = Counter("quill_discord_http_errors", "Discord HTTP answers of 400 and above", ["status"],
                                   registry=r)
        self.rate_limits = Counter("quill_discord_rate_limits", "Discord HTTP 429 answers (discord.py waits "
                                   "and retries them)", registry=r)
        if bot is not None:  # read when scraped, from the live objects
            Gauge("quill_queue_depth", "Requests waiting for a row in the batch", registry=r).set_function(
                lambda: bot.generator.waiting if bot.generator else 0)
            Gauge("quill_batch_rows", "Stories being written now, one row each", registry=r).set_function(
                lambda: bot.generator.writing if bot.generator else 0)
            Gauge("quill_generator_restarts", "Times the generator process died and was started again",
                  registry=r).set_function(lambda: bot.generator.restarts if bot.generator else 0)

    def http_trace(self) -> aiohttp.TraceConfig:
        """Every Discord HTTP answer discord.py receives, 429s included (which it retries itself)."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session, context, params) -> None:
            status = params.response.status
            if status == 429:
                self.rate_limits.inc()
            if status >= 400:
                self.http_errors.labels(str(status)).inc()

        trace.on_request_end.append(on_request_end)
        return trace

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics, and /healthz: 200 only while `healthy()` (the gateway connected and the generator ready)."""

    def __init__(self, metrics: Metrics, healthy, port: int, host: str):
        self.metrics, self.healthy, self.port, self.host = metrics, healthy, port, host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("metrics on :%d/metrics, health on :%d/healthz", self.port, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        problem = self.healthy()
        return web.Response(text=problem or "ok", status=503 if problem else 200)
