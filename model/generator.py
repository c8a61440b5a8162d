"""The story generator: requests, their validation, and the process that writes every story.

One process loads the bundle and serves all requests. Each request owns one row of the batch:
its state starts at zero, its prompt is primed in one call, then every step samples one
character for all active rows together. Rows join and leave between steps (continuous
batching). This module imports no Keras at import time; only the process does.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.memory import MAX_CAST, MemoryRows, check_entry, initials_of, names_in, new_rows
from model.safety import WordFilter, clean_word, shipped_words, token_start
from model.sampler import StoryEnd
from model.vocab import UnknownCharacters, Vocabulary


@dataclass(frozen=True)
class GeneratorConfig:
    model: Path
    max_batch: int = 64  # rows written at once
    queue_size: int = 32  # requests that may wait for a row; more -> GeneratorBusy
    max_length: int = 2000  # new characters a request may ask for
    max_prompt: int = 500  # characters of start, and of context, each
    max_temperature: float = 5.0
    timeout: float = 120.0  # seconds per request, waiting included
    flush_chars: int = 64  # stream a chunk when this much text is ready...
    flush_seconds: float = 0.1  # ...or this long after the last one
    steps_per_call: int = 16  # characters per row between looks at the inbox (joins, cancels)
    engine: str = "auto"  # auto: the device engine on a GPU, else the CPU one; or "cpu", "device"
    check_words: bool = True  # the word filter; only `quill bench filter` turns it off, to time it
    memory: bool = True  # the tale's memory, where the bundle has one (model.memory); benchmarks turn it off


class GeneratorError(Exception):
    """A request could not be served; the message is fit to show a user."""


class InvalidRequest(GeneratorError, ValueError):
    pass


class GeneratorBusy(GeneratorError):
    def __init__(self, waiting: int):
        self.waiting = waiting
        stories = "1 story is" if waiting == 1 else f"{waiting} stories are"
        super().__init__(f"the storyteller is busy: {stories} already waiting; try again shortly")


class GeneratorUnavailable(GeneratorError):
    pass


class StoryTimeout(GeneratorError):
    pass


@dataclass(frozen=True)
class StoryRequest:
    """`start` is a member's text, normalised once here; `context` is the tale so far, already model
    text (a tale's own words, never normalised again), primed before the start and not told again."""
    start: str
    length: int  # new characters to write after the start
    temperature: float = 0.5
    seed: int | None = None  # None: a random one, reported with the story
    top_k: int = 0
    top_p: float = 1.0
    blocked_words: tuple[str, ...] = ()  # the server's own, on top of the shipped list
    context: str = ""
    cast: tuple[str, ...] = ()  # names, places and things the memory holds before the tale (model.memory)

    @property
    def prime(self) -> str:
        """What the model reads before it writes."""
        return self.context + self.start

    def validated(self, vocab: Vocabulary, config: GeneratorConfig, normalised: bool = False) -> "StoryRequest":
        """A copy ready for the generator (prompt normalised, seed fixed), or InvalidRequest naming
        the field. Every field's type and range is checked, so no request can upset the process.
        `normalised`: the start already was (the process checking what the client validated)."""
        if not isinstance(self.start, str):
            raise InvalidRequest(f"the start text must be text (got {type(self.start).__name__})")
        temperature = _number("temperature", self.temperature)
        if not 0 < temperature <= config.max_temperature:
            raise InvalidRequest(f"temperature must be above 0 and at most {config.max_temperature:g} "
                                 f"(got {temperature:g})")
        if not _is_int(self.length) or not 1 <= self.length <= config.max_length:
            raise InvalidRequest(f"length must be a whole number from 1 to {config.max_length} (got {self.length!r:.40})")
        if not _is_int(self.top_k) or not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidRequest(f"top_k must be a whole number from 0 to {MAX_TOP_K} (got {self.top_k!r:.40})")
        top_p = _number("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise InvalidRequest(f"top_p must be above 0 and at most 1 (got {top_p:g})")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise InvalidRequest(f"seed must be a whole number from 0 to {MAX_SEED} (got {self.seed!r:.40})")
        if not isinstance(self.blocked_words, tuple) or not all(isinstance(w, str) for w in self.blocked_words):
            raise InvalidRequest("blocked_words must be a tuple of words")
        try:
            blocked = tuple(sorted({clean_word(w) for w in self.blocked_words}))
        except ValueError as e:
            raise InvalidRequest(f"blocked_words: {e}") from None
        if not isinstance(self.context, str):
            raise InvalidRequest(f"the context must be text (got {type(self.context).__name__})")
        if len(self.start) > config.max_prompt * 4:  # cheap guard before normalising
            raise InvalidRequest(f"the start text is {len(self.start):,} characters; the most is {config.max_prompt}")
        if len(self.context) > config.max_prompt:
            raise InvalidRequest(f"the context is {len(self.context):,} characters; the most is {config.max_prompt}")
        unknown = vocab.unknown(self.context)
        if unknown:
            raise InvalidRequest(f"the tale so far holds characters the model does not know: {' '.join(unknown)}")
        # A member's text is normalised here, once; the process checks it as it comes.
        start = self.start if normalised else vocab.normalised(self.start)
        if word_filter(blocked).spans(start):  # in general terms: the refusal is no echo
            raise InvalidRequest("the start text has a word that is not allowed here; please choose other words")
        unknown = vocab.unknown(start)
        if unknown:
            raise InvalidRequest(str(UnknownCharacters(unknown)))
        if not (start.strip() or self.context):  # invisible characters normalise away
            raise InvalidRequest("the start text is empty")
        if len(start) > config.max_prompt:  # measured as the model reads it ("…" is three dots)
            raise InvalidRequest(f"the start text is {len(start):,} characters; the most is {config.max_prompt}")
        cast = self._checked_cast(vocab, blocked, normalised)
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(2**31)
        return replace(self, start=start, temperature=temperature, top_p=top_p, seed=seed, blocked_words=blocked,
                       cast=cast)

    def _checked_cast(self, vocab: Vocabulary, blocked: tuple[str, ...], normalised: bool) -> tuple[str, ...]:
        if not isinstance(self.cast, tuple):
            raise InvalidRequest("the cast must be a tuple of entries")
        if len(self.cast) > MAX_CAST:
            raise InvalidRequest(f"the cast has {len(self.cast)} entries; the most is {MAX_CAST}")
        try:
            return tuple(checked_cast_entry(entry, vocab, blocked, normalised) for entry in self.cast)
        except InvalidRequest as e:
            raise InvalidRequest(f"cast: {e}") from None


def checked_cast_entry(entry, vocab: Vocabulary, blocked: tuple[str, ...] = (), normalised: bool = False) -> str:
    """A cast entry checked like a start: 1-40 characters the model knows, no blocked word (the
    shipped list's or the server's); normalised unless it was. InvalidRequest says what is wrong."""
    try:
        entry = check_entry(entry)  # its type and size, before normalising
        entry = entry if normalised else check_entry(vocab.normalised(entry))
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    if word_filter(tuple(blocked)).spans(entry):  # in general terms: the refusal is no echo
        raise InvalidRequest("the entry has a word that is not allowed here; please choose other words")
    unknown = vocab.unknown(entry)
    if unknown:
        raise InvalidRequest(str(UnknownCharacters(unknown)))
    return entry


def usable_cast(cast: tuple[str, ...], vocab: Vocabulary, blocked: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The entries this model can write and this server allows: a cast outlives models and lists (the
    default cast names Quidditch, which a model that never saw a "Q" cannot write)."""
    usable = []
    for entry in cast:
        try:
            usable.append(checked_cast_entry(entry, vocab, blocked))
        except InvalidRequest:
            continue
    return tuple(usable)


MAX_SEED = 2**63 - 1
MAX_TOP_K = 1_000_000


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value) -> float:
    """A finite real number as float, or InvalidRequest naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name} must be a number (got {type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:
        raise InvalidRequest(f"{name} is far too large") from None
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number (got {value})")
    return value


@dataclass(frozen=True)
class Story:
    text: str  # as readers see it: the start, then what was written (never the context)
    begins: int  # where in `text` the new writing begins
    request: StoryRequest
    seconds: float
    model: str
    card_hash: str
    filtered: int = 0  # times the filter stopped a blocked word and the model chose again

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def written(self) -> str:
        return self.text[self.begins:]


@lru_cache(maxsize=1024)
def word_filter(server_words: tuple[str, ...]) -> WordFilter:
    """The shipped list and a server's words (cached: a server's stories share one)."""
    return WordFilter(shipped_words() | frozenset(server_words))


MAX_FILTERED = 64  # a row the model keeps steering to blocked words ends where it stands


class _Row:
    def __init__(self, rid: int, request: StoryRequest, flush_seconds: float):
        self.rid, self.request = rid, request
        self.rng = np.random.default_rng(request.seed)
        self.text = request.prime
        self.primed = len(self.text)
        self.end = StoryEnd(request.length, self.primed)
        self.sent = len(request.context)  # characters already streamed: the context is not told again
        self.last_flush = time.monotonic() - flush_seconds  # the first word goes out at once
        self.filter = word_filter(request.blocked_words)
        self.checked = self.primed  # every complete word before here is clean
        self.banned: dict[int, set[int]] = {}  # position -> ids the filter took away there
        self.filtered = 0

    def blocked_at(self) -> int | None:
        """Where a blocked word that the new text completes begins (a word is complete once a
        character follows it); None when all is clean. The answer is the one a check after every
        character would give, so it does not depend on where runs end: a word can go on past a
        character that is not a letter ("weed!r", "re-tard", "a s s e t" reads "asset"), so the
        text is also read as it stood at each of those."""
        text = self.text
        begin = token_start(text, self.checked, self.primed)  # a word still being written, or spelled out
        ends = [end for end in range(self.checked + 1, len(text)) if not text[end - 1].isalnum()] + [len(text)]
        for end in ends:
            for a, b in self.filter.spans(text[begin:end]):
                if begin + b < end:
                    return begin + a
        self.checked = len(text)
        return None

    def rewind(self, position: int, banned_id: int) -> None:
        """Back to `position`, where `banned_id` may not be chosen again; the random stream too,
        so the same seed tells the same story whatever the run length or company."""
        self.banned.setdefault(position, set()).add(banned_id)
        self.filtered += 1
        self.text = self.text[:position]
        self.checked = position
        self.rng = np.random.default_rng(self.request.seed)
        self.rng.bit_generator.advance(position - self.primed)  # one draw per character


class Scheduler:
    """Continuous batching over an engine. Rows are kept compact: row i of every array is
    self.rows[i]. Each call to `advance` writes a short run of characters for every row in one
    engine call; rows join and leave between runs. A row that ends mid-run keeps only its text up
    to the end, so its story is the same whatever run length or company it had."""

    def __init__(self, engine, vocab: Vocabulary, flush_chars: int = 64, flush_seconds: float = 0.1,
                 steps_per_call: int = 16, limits: GeneratorConfig | None = None):
        self.engine, self.vocab = engine, vocab
        self.limits = limits or GeneratorConfig(model=Path("."))
        self.flush_chars, self.flush_seconds, self.steps_per_call = flush_chars, flush_seconds, steps_per_call
        self.chars = np.array(list(vocab.chars))
        self.letters = np.array([c.isalpha() for c in vocab.chars])
        self.rows: list[_Row] = []
        self.logits = np.zeros((0, engine.vocab_size), np.float32)
        self.state = engine.zero_state(0)
        self.settings = np.zeros((0, 3))  # temperature, top_k, top_p
        self.memory = None if engine.memory is None else MemoryRows.empty(engine.vocab_size)

    @property
    def active(self) -> int:
        return len(self.rows)

    def add(self, joining: list[tuple[int, StoryRequest]]) -> list[tuple]:
        """New rows with fresh zero states, their prompts primed together in one engine call.
        Returns ("error", rid, message) for a request whose prompt cannot be encoded."""
        errors, rows, prompts = [], [], []
        for rid, request in joining:
            try:  # the client validates requests; this guards the process against any it missed
                request.validated(self.vocab, self.limits, normalised=True)
                prompt = self.vocab.encode(request.prime)
                row = _Row(rid, request, self.flush_seconds)
            except (InvalidRequest, TypeError, ValueError, OverflowError) as e:
                errors.append(("error", rid, str(e) if isinstance(e, InvalidRequest) else f"invalid request: {e}"))
            else:
                prompts.append(prompt)
                rows.append(row)
        if rows:
            logits, state = self.engine.prime(prompts)
            logits = np.array(logits)  # writable: a device engine's may not be
            for j, row in enumerate(rows):
                self._mask(row, logits[j])
            self.rows += rows
            self.logits = np.concatenate([self.logits, logits])
            self.state = np.concatenate([self.state, state])
            self.settings = np.concatenate([self.settings, [[row.request.temperature, row.request.top_k,
                                                             row.request.top_p] for row in rows]])
            if self.memory is not None:
                self.memory = MemoryRows.concatenate([self.memory, self._remember(rows)])
        return errors

    def _remember(self, rows: list[_Row]) -> MemoryRows:
        """The memory of each row's tale so far: its cast, then its text. The names of the tale
        weigh more than the cast's among the initials a name may begin with."""
        memory = self.engine.memory
        casts = [[self.vocab.encode(entry) for entry in row.request.cast] for row in rows]
        initials = [initials_of(memory, self.vocab.index, names_in(row.request.prime, row.request.cast),
                                row.request.cast) for row in rows]
        return new_rows(memory, [self.vocab.encode(row.text) for row in rows], casts, np.array(initials))

    def _mask(self, row: _Row, logits: np.ndarray) -> None:
        """What the next draw of `row` may not be. A start that ends in a letter is a whole word:
        the tale goes on with a space or punctuation, never glued letters ("Snape" -> "Snaped").
        Where the filter rewound the row, the ids it took away. Masking the draw keeps the story
        deterministic per seed."""
        position = len(row.text)
        if position == row.primed and row.text[-1].isalpha():
            logits[self.letters] = -np.inf
        for i in row.banned.get(position, ()):
            logits[i] = -np.inf

    def _filter(self, i: int, row: _Row) -> bool:
        """Rewind row i if its new text completed a blocked word; True if it did."""
        at = row.blocked_at()
        if at is None:
            return False
        row.rewind(at, self.vocab.index[row.text[at]])
        if row.filtered > MAX_FILTERED:
            return False  # the caller ends the story here
        logits, state = self.engine.prime([self.vocab.encode(row.text)])
        logits = np.array(logits)
        self._mask(row, logits[0])
        if not (self.logits.flags.writeable and self.state.flags.writeable):  # a device engine's arrays
            self.logits, self.state = np.array(self.logits), np.array(self.state)
        self.logits[i], self.state[i] = logits[0], state[0]
        if self.memory is not None:
            self.memory = MemoryRows(*(np.array(a) for a in self.memory))  # writable: a device engine's may not be
            self.memory.replace_row(i, self._remember([row]))
        return True

    def cancel(self, rid: int) -> None:
        self._keep(np.array([row.rid != rid for row in self.rows], bool))

    def advance(self) -> list[tuple]:
        """Write the next characters of every row; returns ("chunk", rid, text) and
        ("done", rid, story, times the filter stepped in)."""
        if not self.rows:
            return []
        uniforms = np.stack([row.rng.random(self.steps_per_call) for row in self.rows])
        ids, _, self.logits, self.state, self.memory = self.engine.generate(
            self.logits, self.state, uniforms, self.settings[:, 0], self.settings[:, 1].astype(np.int64),
            self.settings[:, 2], self.memory)
        out, keep, now = [], np.ones(len(self.rows), bool), time.monotonic()
        for i, row in enumerate(self.rows):
            checked = len(row.text)
            row.text += "".join(self.chars[ids[i]])
            rewound = self.limits.check_words and self._filter(i, row)
            # A rewind keeps the text before the blocked word, and a sentence end there still ends
            # the story, as it would have in shorter runs.
            stop = len(row.text) if row.filtered > MAX_FILTERED else row.end.stop(row.text, min(checked, len(row.text)))
            if stop is not None:
                out.append(("done", row.rid, row.end.finish(row.text[:stop]), row.filtered))
                keep[i] = False
            elif rewound:
                continue  # it writes on from there in the next run
            elif now - row.last_flush >= self.flush_seconds or len(row.text) - row.sent >= self.flush_chars:
                # Stream whole words only: the hard length limit may still cut a partial one.
                upto = max(row.text.rfind(" "), row.text.rfind("\n")) + 1
                if upto > row.sent:
                    out.append(("chunk", row.rid, row.text[row.sent:upto]))
                    row.sent, row.last_flush = upto, now
        self._keep(keep)
        return out

    def _keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.rows = [row for row, k in zip(self.rows, keep) if k]
        self.logits, self.state, self.settings = self.logits[keep], self.state[keep], self.settings[keep]
        if self.memory is not None:
            self.memory = self.memory.take(keep)


def serve(config: GeneratorConfig, inbox, outbox) -> None:
    """The generator process: ("start", rid, request) / ("cancel", rid) / ("stop",) in;
    ("notice", text) / ("ready", info) / ("failed", reason) / ("events", [event, ...]) out, where an event is
    ("chunk", rid, text), ("done", rid, text, filtered) or ("error", rid, message)."""
    from model import kernels
    from model.bundle import load_network
    from model.engine import engine_kind, make_engine

    try:
        bundle, network = load_network(config.model, config.memory)
        if engine_kind(config.engine) == "cpu" and not kernels.compiled_already():
            outbox.send(("notice", "compiling the story engine, once (about 15 s)..."))
        engine = make_engine(network, config.max_batch, config.steps_per_call, config.engine)
    except Exception as e:  # tell the client why, instead of only dying
        outbox.send(("failed", str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"))
        return
    scheduler = Scheduler(engine, bundle.vocab, config.flush_chars, config.flush_seconds,
                          config.steps_per_call, config)
    outbox.send(("ready", {"model": bundle.name, "card_hash": bundle.card_hash, "engine": engine.name}))
    joining = []
    while True:
        try:
            while not (scheduler.active or joining) or inbox.poll():
                message = inbox.recv()  # blocks only while idle
                if message[0] == "stop":
                    return
                if message[0] == "cancel":
                    joining = [(rid, request) for rid, request in joining if rid != message[1]]
                    scheduler.cancel(message[1])
                else:
                    joining.append(message[1:])
            events = scheduler.add(joining) + scheduler.advance()
            if events:  # one message per run, not per row: each wakes the client's process
                outbox.send(("events", events))
            joining = []
        except (EOFError, BrokenPipeError, KeyboardInterrupt):
            return  # the client is gone
