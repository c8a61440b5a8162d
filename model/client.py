"""The asyncio face of the generator process, used by the bot and by `quill story`.

    generator = StoryGenerator(config); await generator.start()
    story = await generator.generate(StoryRequest("Harry", 800))
    async for event in generator.stream(request): ...   # queue positions, then text chunks

It never imports Keras or TensorFlow (nor does the process, on a CPU). Requests wait here (a bounded line)
until the process has a free row; if the process dies, in-flight requests fail with
GeneratorUnavailable and a new process is started.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass

from model.bundle import read_metadata
from model.generator import (GeneratorBusy, GeneratorConfig, GeneratorUnavailable, InvalidRequest, Story,
                             StoryRequest, StoryTimeout, serve)

log = logging.getLogger(__name__)
START_TIMEOUT = 120.0  # loading the model and compiling the engine (first start) on a slow box
RESTART_DELAYS = (0.5, 2.0, 10.0)  # after repeated deaths, wait longer before the next start


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit in time"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class StoryEvent:
    position: int = 0  # place in the waiting line; 0 once the story is being written
    text: str = ""  # new text since the last event
    story: Story | None = None  # set on the last event


class _Pending:
    def __init__(self, rid: int, request: StoryRequest):
        self.rid, self.request = rid, request
        self.events: asyncio.Queue = asyncio.Queue()
        self.streamed = request.context  # model text told so far (the context never is)
        self.position = 0
        self.started = time.monotonic()


class StoryGenerator:
    def __init__(self, config: GeneratorConfig, on_notice=None):
        self.config = config
        self.on_notice = on_notice or log.info  # what a person waiting for the start should know
        self.bundle = read_metadata(config.model)  # vocabulary for validation; no Keras here
        self.vocab = self.bundle.vocab
        self.info: dict = {}
        self._ids = itertools.count(1)
        self._waiting: deque[_Pending] = deque()
        self._running: dict[int, _Pending] = {}
        self._ready = asyncio.Event()
        self._down = asyncio.Event()  # set when the process cannot be started: stop waiting for it
        self._start_error: str | None = None
        self._process = None
        self._inbox = None
        self._generation = 0
        self._failures = 0
        self.restarts = 0  # processes started after one died
        self._closing = False
        self.down_reason: str | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn()
        await self.wait_ready()

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        waits = [asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._down.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not self._ready.is_set():
            raise GeneratorUnavailable(self.down_reason or "the story generator did not start in time")

    async def close(self) -> None:
        self._closing = True
        for pending in [*self._waiting, *self._running.values()]:
            pending.events.put_nowait(GeneratorUnavailable("the storyteller is shutting down"))
        self._waiting.clear()
        self._running.clear()
        process, inbox = self._process, self._inbox
        if process is None:
            return
        try:
            inbox.send(("stop",))
        except (OSError, ValueError):
            pass
        await asyncio.get_running_loop().run_in_executor(None, process.join, 10)
        if process.is_alive():
            process.kill()
            process.join(5)
        inbox.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def writing(self) -> int:
        """Stories in the batch now, one row each."""
        return len(self._running)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _spawn(self) -> None:
        if self._inbox is not None:
            self._inbox.close()  # the previous process's pipe
        self._start_error = None
        self._down.clear()
        ctx = multiprocessing.get_context("spawn")
        inbox_read, inbox_write = ctx.Pipe(duplex=False)
        outbox_read, outbox_write = ctx.Pipe(duplex=False)
        self._generation += 1
        self._process = ctx.Process(target=serve, args=(self.config, inbox_read, outbox_write),
                                    name="quill-generator", daemon=True)
        self._process.start()
        inbox_read.close()  # the child's ends: closing ours lets EOF tell us when it dies
        outbox_write.close()
        self._inbox = inbox_write
        threading.Thread(target=self._read, args=(outbox_read, self._generation, self._process), daemon=True,
                         name="quill-generator-reader").start()

    def _read(self, conn, generation: int, process) -> None:
        """Reader thread: hands each message to the event loop; EOF means the process died."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if not self._deliver(self._on_message, generation, message):
                break
        conn.close()
        process.join(5)  # reaped, so its exit code is known (EOF can come before the exit)
        self._deliver(self._on_death, generation, process.exitcode)

    def _deliver(self, callback, *args) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
            return True
        except RuntimeError:  # the event loop is closed: the program is ending
            return False

    def _on_message(self, generation: int, message: tuple) -> None:
        if generation != self._generation:
            return
        kind = message[0]
        if kind == "notice":
            self.on_notice(message[1])
        elif kind == "failed":  # it could not load the model: retrying will not help
            self._start_error = message[1]
        elif kind == "ready":
            self.info, self._failures, self.down_reason = message[1], 0, None
            self._ready.set()
            self._dispatch()
        else:  # "events": everything one run of steps produced, in one message
            for event in message[1]:
                self._on_event(*event)
            self._dispatch()

    def _on_event(self, kind: str, rid: int, text: str, filtered: int = 0, width: float = 1) -> None:
        pending = self._running.get(rid)
        if pending is None:
            return  # cancelled meanwhile
        read = self.vocab.normalisation.for_reading  # paragraphs as readers expect them
        if kind == "chunk":
            pending.streamed += text
            pending.events.put_nowait(StoryEvent(text=read(text)))
            return
        del self._running[pending.rid]
        if kind == "done":
            request = pending.request
            tail = text[len(pending.streamed):] if text.startswith(pending.streamed) else ""
            story = Story(read(text[len(request.context):]), len(read(request.start)), request,
                          time.monotonic() - pending.started, self.info.get("model", self.bundle.name),
                          self.info.get("card_hash", ""), filtered, width)
            log.info("story %d: %d characters, %.1f candidates a sentence, %.2f s", rid, len(story.written), width,
                     story.seconds)
            pending.events.put_nowait(StoryEvent(text=read(tail), story=story))
        else:
            pending.events.put_nowait(InvalidRequest(text))

    def _on_death(self, generation: int, code: int | None) -> None:
        if generation != self._generation or self._closing:
            return
        was_ready = self._ready.is_set()
        self._ready.clear()
        for pending in self._running.values():
            pending.events.put_nowait(GeneratorUnavailable(
                "the storyteller stopped unexpectedly while writing this story; please try again"))
        self._running.clear()
        if was_ready:
            self._failures = 0
        else:
            self._failures += 1
            self.down_reason = "the story generator could not start: " + (
                self._start_error or f"its process {describe_exit(code)}; see the bot's log")
        if self._start_error or self._failures > len(RESTART_DELAYS):
            log.error("%s", self.down_reason)
            for pending in self._waiting:
                pending.events.put_nowait(GeneratorUnavailable(self.down_reason))
            self._waiting.clear()
            self._down.set()
            return  # stays down until the next request tries once more
        log.error("generator process died (%s); restarting", describe_exit(code))
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS)) - 1] if self._failures else 0
        self._loop.call_later(delay, self._respawn, self._generation)

    def _respawn(self, generation: int) -> None:
        if generation == self._generation and not self._closing:
            self.restarts += 1
            self._spawn()

    # -- requests ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._ready.is_set() and self._waiting and len(self._running) < self.config.max_batch:
            pending = self._waiting.popleft()
            self._running[pending.rid] = pending
            pending.position = 0
            self._send(("start", pending.rid, pending.request))
        for i, pending in enumerate(self._waiting, 1):
            if pending.position != i:
                pending.position = i
                pending.events.put_nowait(StoryEvent(position=i))

    def _send(self, message: tuple) -> None:
        try:
            self._inbox.send(message)
        except (OSError, ValueError):
            pass  # the process is dying; _on_death fails the request

    def _cancel(self, pending: _Pending) -> None:
        if pending in self._waiting:
            self._waiting.remove(pending)
        elif self._running.pop(pending.rid, None) is not None:
            self._send(("cancel", pending.rid))  # frees its row before any later start
        self._dispatch()

    def prepare(self, request: StoryRequest) -> StoryRequest:
        """The request validated and normalised for this model, once: callers prepare it before they
        defer (a refusal is quick), and stream admits a prepared request as it is."""
        return request.validated(self.vocab, self.config)

    def _admit(self, request: StoryRequest) -> _Pending:
        request = request if request.prepared else self.prepare(request)
        if self._closing:
            raise GeneratorUnavailable("the storyteller is shutting down")
        if self._down.is_set():
            self._failures = len(RESTART_DELAYS)  # one more try, for later requests
            reason = self.down_reason
            self.restarts += 1
            self._spawn()
            raise GeneratorUnavailable(reason)
        full = len(self._running) >= self.config.max_batch or not self._ready.is_set()
        if full and len(self._waiting) >= self.config.queue_size:
            raise GeneratorBusy(len(self._waiting))
        pending = _Pending(next(self._ids), request)
        self._waiting.append(pending)
        self._dispatch()
        return pending

    async def stream(self, request: StoryRequest):
        """Yields StoryEvent: queue positions while waiting, then text chunks; the last carries
        the Story. Leaving the loop early (or being cancelled) frees the request's row at once."""
        pending = self._admit(request)
        deadline = time.monotonic() + self.config.timeout
        finished = False
        try:
            if pending.position:
                yield StoryEvent(position=pending.position)
            while True:
                try:  # what is already written is the reader's, however slowly it reads
                    event = pending.events.get_nowait()
                except asyncio.QueueEmpty:
                    try:  # the deadline is for the writing
                        event = await asyncio.wait_for(pending.events.get(), max(deadline - time.monotonic(), 0))
                    except asyncio.TimeoutError:
                        raise StoryTimeout(f"the story took longer than {self.config.timeout:g} s and was "
                                           f"stopped") from None
                if isinstance(event, Exception):
                    finished = True
                    raise event
                if event.story is not None:
                    finished = True
                if event.position or event.text or event.story:
                    yield event
                if finished:
                    return
        finally:
            if not finished:
                self._cancel(pending)

    async def generate(self, request: StoryRequest) -> Story:
        async for event in self.stream(request):
            if event.story is not None:
                return event.story
        raise GeneratorUnavailable("the story ended without text")  # unreachable by protocol
