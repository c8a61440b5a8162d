"""The story generator: requests, their validation, and the process that writes every story.

One process loads the bundle and serves all requests. Each request owns one row of the batch:
its state starts at zero, its prompt is primed in one call, then every step samples one
character for all active rows together. Rows join and leave between steps (continuous
batching). On a CPU neither this module nor the process imports Keras or TensorFlow: the process
reads the bundle's weights with h5py and writes with the numba engine (a GPU's device engine
runs on Keras).
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.critic import Candidate, Critic
from model.memory import ENTRY_CHARS, MAX_CAST, MemoryRows, check_entry, initials_of, names_in, new_rows
from model.safety import WordFilter, clean_word, shipped_words, token_start
from model.sampler import SENTENCE_ENDS, StoryEnd, sentence_end
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
    search_width: int = 8  # most candidates per sentence, where the bundle has a critic (1: no search)


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
    folded: tuple[str, ...] = ()  # set by validated: the start's letters the model writes plainer ("à→a")
    prepared: bool = False  # set by validated: the client admits it as it is (StoryGenerator.prepare)

    @property
    def prime(self) -> str:
        """What the model reads before it writes."""
        return self.context + self.start

    def validated(self, vocab: Vocabulary, config: GeneratorConfig) -> "StoryRequest":
        """A copy ready for the generator (prompt normalised, seed fixed), or InvalidRequest naming
        the field. The client's one pass (StoryGenerator.prepare): every field's type and range."""
        temperature, top_p = self._checked_fields(config)
        try:
            blocked = tuple(sorted({clean_word(w) for w in self.blocked_words}))
        except ValueError as e:
            raise InvalidRequest(f"blocked_words: {e}") from None
        if len(self.start) > config.max_prompt * 4:  # cheap guard before normalising
            raise InvalidRequest(f"the start text is {len(self.start):,} characters; the most is {config.max_prompt}")
        unknown = vocab.unknown(self.context)
        if unknown:
            raise InvalidRequest(f"the tale so far holds characters the model does not know: {' '.join(unknown)}")
        # A member's text is normalised here, once.
        applied = vocab.normalisation.apply(self.start)
        start, folded = vocab.fold(applied), vocab.folds(applied)
        if word_filter(blocked).spans(start):  # in general terms: the refusal is no echo
            raise InvalidRequest("the start text has a word that is not allowed here; please choose other words")
        unknown = vocab.unknown(start)
        if unknown:
            raise InvalidRequest(str(UnknownCharacters(unknown)))
        if not (start.strip() or self.context):  # invisible characters normalise away
            raise InvalidRequest("the start text is empty")
        if len(start) > config.max_prompt:  # measured as the model reads it ("…" is three dots)
            raise InvalidRequest(f"the start text is {len(start):,} characters; the most is {config.max_prompt}")
        if len(self.cast) > MAX_CAST:
            raise InvalidRequest(f"the cast has {len(self.cast)} entries; the most is {MAX_CAST}")
        try:
            cast = tuple(checked_cast_entry(entry, vocab, blocked) for entry in self.cast)
        except InvalidRequest as e:
            raise InvalidRequest(f"cast: {e}") from None
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(MAX_SEED + 1)
        return replace(self, start=start, temperature=temperature, top_p=top_p, seed=seed, blocked_words=blocked,
                       cast=cast, folded=folded, prepared=True)

    def guarded(self, vocab: Vocabulary, config: GeneratorConfig) -> None:
        """The process's guard on its pipe, cheap: a prepared request whose fields have their types
        and ranges and whose text the model can encode, or InvalidRequest. What the client's pass
        did (normalising, the filter) is trusted, not done again."""
        if self.prepared is not True:
            raise InvalidRequest("the request was not prepared (StoryGenerator.prepare)")
        self._checked_fields(config)
        if self.seed is None or len(self.start) > config.max_prompt or len(self.cast) > MAX_CAST or \
                not all(0 < len(entry) <= ENTRY_CHARS for entry in self.cast):
            raise InvalidRequest("the request is not as prepared")
        unknown = vocab.unknown(self.prime + "".join(self.cast))
        if unknown:
            raise InvalidRequest(str(UnknownCharacters(unknown)))

    def _checked_fields(self, config: GeneratorConfig) -> tuple[float, float]:
        """Every field's type, and the numbers' ranges (InvalidRequest names the field); returns
        the temperature and top_p as floats."""
        for name in ("start", "context"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequest(f"the {name} must be text (got {type(getattr(self, name)).__name__})")
        for name in ("blocked_words", "cast"):
            if not isinstance(getattr(self, name), tuple) or not all(isinstance(w, str) for w in getattr(self, name)):
                raise InvalidRequest(f"{name} must be a tuple of text")
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
        if len(self.context) > config.max_prompt:
            raise InvalidRequest(f"the context is {len(self.context):,} characters; the most is {config.max_prompt}")
        return temperature, top_p


def checked_cast_entry(entry, vocab: Vocabulary, blocked: tuple[str, ...] = ()) -> str:
    """A cast entry checked like a start: 1-40 characters the model knows, no blocked word (the
    shipped list's or the server's), normalised. InvalidRequest says what is wrong."""
    try:
        entry = check_entry(vocab.normalised(check_entry(entry)))  # its type and size, before normalising and after
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


MAX_SEED = 2**31 - 1  # seeds a member may give, and the range random ones are drawn from
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
    width: float = 1  # candidates the critic chose each sentence from, on average (1: no search)

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


GATHER_SECONDS = 0.003  # how long the process waits for the next request of a burst
LONGEST_SENTENCE = 300  # characters a candidate may write before it must stop
LATE = 100  # once one candidate has ended its sentence, the others may write this much longer


class _Row:
    """One row of the batch: a story being written, or one of its candidates for the next
    sentence (`search` is then the story's _Search)."""

    def __init__(self, rid: int, request: StoryRequest, flush_seconds: float):
        self.rid, self.request = rid, request
        self.stream = (request.seed,)  # where its random draws come from
        self.rng = np.random.default_rng(self.stream)
        self.text = request.prime
        self.primed = len(self.text)
        self.drawn_from = self.primed  # the position of its stream's first draw
        self.end = StoryEnd(request.length, self.primed)
        self.sent = len(request.context)  # characters already streamed: the context is not told again
        self.last_flush = time.monotonic() - flush_seconds  # the first word goes out at once
        self.filter = word_filter(request.blocked_words)
        self.checked = self.primed  # every complete word before here is clean
        self.banned: dict[int, set[int]] = {}  # position -> ids the filter took away there
        self.filtered = 0
        self.width = 1  # candidates for the next sentence (1: no search)
        self.widths: list[int] = []  # candidates each sentence was chosen from
        self.sentences = 0  # sentences chosen so far
        self.search: _Search | None = None
        self.sentence_start = self.primed
        self.scores: list[float] = []  # a candidate's characters' scores, from sentence_start

    def candidate(self, number: int, search: "_Search") -> "_Row":
        """A copy that writes the next sentence from here, drawing from its own stream (derived
        from the story's seed, the sentence and its number)."""
        row = copy.copy(self)
        row.banned = {position: set(ids) for position, ids in self.banned.items()}
        row.search, row.scores = search, list(self.scores)
        row.stream = (self.request.seed, self.sentences, number)
        row.rng, row.drawn_from = np.random.default_rng(row.stream), len(self.text)
        return row

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
        self.sentence_start = min(self.sentence_start, position)
        self.scores = self.scores[:position - self.sentence_start]
        self.drawn_from = min(self.drawn_from, position)
        self.reposition()

    def reposition(self) -> None:
        """The random stream at the draw for the next character: one draw per character."""
        self.rng = np.random.default_rng(self.stream)
        self.rng.bit_generator.advance(len(self.text) - self.drawn_from)


@dataclass
class _Search:
    """A story row waiting while its candidates write the next sentence."""
    story: _Row
    waiting: int  # candidates still writing
    done: list = field(default_factory=list)  # (number, row, end, arrays) of those that finished
    longest: int = LONGEST_SENTENCE  # characters a candidate may write; less once the first has ended


class Batch:
    """The rows being written and their aligned arrays: row i of each array is rows[i]. Only this
    class adds, keeps, replaces or forks rows, so no caller aligns arrays by hand."""

    def __init__(self, engine):
        self.engine = engine
        self.rows: list[_Row] = []
        self.logits = np.zeros((0, engine.vocab_size), np.float32)
        self.state = engine.zero_state(0)
        self.temperature, self.top_p = np.zeros(0), np.zeros(0)
        self.top_k = np.zeros(0, np.int64)
        self.memory = None if engine.memory is None else MemoryRows.empty(engine.vocab_size)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: list[_Row], logits, state, memory: MemoryRows | None) -> None:
        self.rows += rows
        self.logits = np.concatenate([self.logits, logits])
        self.state = np.concatenate([self.state, state])
        self.temperature = np.concatenate([self.temperature, [r.request.temperature for r in rows]])
        self.top_k = np.concatenate([self.top_k, np.array([r.request.top_k for r in rows], np.int64)])
        self.top_p = np.concatenate([self.top_p, [r.request.top_p for r in rows]])
        if self.memory is not None:
            self.memory = MemoryRows.concatenate([self.memory, memory])

    def arrays(self, i: int) -> tuple:
        """Row i's logits, state and memory, as one-row arrays (to park it, or to fork it)."""
        memory = None if self.memory is None else self.memory.take(np.array([i]))
        return self.logits[i:i + 1].copy(), self.state[i:i + 1].copy(), memory

    def fork(self, i: int, rows: list[_Row]) -> None:
        """New rows that go on from where row i stands."""
        logits, state, memory = self.arrays(i)
        n = len(rows)
        self.add(rows, np.repeat(logits, n, 0), np.repeat(state, n, 0),
                 None if memory is None else memory.take(np.zeros(n, np.int64)))

    def keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.rows = [row for row, k in zip(self.rows, keep) if k]
        self.logits, self.state = self.logits[keep], self.state[keep]
        self.temperature, self.top_k, self.top_p = self.temperature[keep], self.top_k[keep], self.top_p[keep]
        if self.memory is not None:
            self.memory = self.memory.take(keep)

    def replace(self, i: int, logits, state, memory: MemoryRows | None) -> None:
        """Row i starts again from these (one-row) arrays."""
        if not (self.logits.flags.writeable and self.state.flags.writeable):  # a device engine's arrays
            self.logits, self.state = np.array(self.logits), np.array(self.state)
        self.logits[i], self.state[i] = logits[0], state[0]
        if self.memory is not None:
            self.memory = MemoryRows(*(np.array(a) for a in self.memory))  # writable: a device engine's may not be
            self.memory.replace_row(i, memory)

    def run(self, steps: int, index: dict[str, int]):
        """Up to `steps` characters for every row, each from its own stream; a candidate stops after
        its sentence's end (its later ids are -1). The arrays move on. A Run."""
        uniforms = np.stack([row.rng.random(steps) for row in self.rows])
        stop_at_end = np.array([row.search is not None for row in self.rows], bool)
        before = np.array([[-1] * (2 - len(row.text[-2:])) + [index[c] for c in row.text[-2:]] for row in self.rows],
                          np.int64).reshape(-1, 2)
        run = self.engine.generate(self.logits, self.state, uniforms, self.temperature, self.top_k, self.top_p,
                                   self.memory, (stop_at_end, before))
        self.logits, self.state, self.memory = run.logits, run.state, run.memory
        return run


class Scheduler:
    """Continuous batching over an engine (its rows are a Batch). Each call to `advance` writes a
    short run of characters for every row in one engine call; rows join and leave between runs. A
    row that ends mid-run keeps only its text up to the end, so its story is the same whatever run
    length or company it had.

    Sentence search: with a critic, a story at a sentence start while rows are free gets a width
    K > 1: it forks into K candidate rows that share its state, memory, cast and word
    list and run in the same batch as every other row; each stops right after its sentence's end
    (inside the engine) or at a cap, and waits. When all K have, the critic keeps
    one: it becomes the story's row, its sentence is streamed, the others are dropped. K is chosen
    at each sentence from the rows a full batch leaves each story, so a busy generator gives 1: no
    search, and the story goes on as stories did before. The same seed tells the same story at the
    same widths (alone, always)."""

    def __init__(self, engine, vocab: Vocabulary, flush_chars: int = 64, flush_seconds: float = 0.1,
                 steps_per_call: int = 16, limits: GeneratorConfig | None = None, critic: Critic | None = None):
        self.engine, self.vocab, self.critic = engine, vocab, critic
        self.limits = limits or GeneratorConfig(model=Path("."))
        self.flush_chars, self.flush_seconds, self.steps_per_call = flush_chars, flush_seconds, steps_per_call
        self.chars = np.array(list(vocab.chars))
        self.letters = np.array([c.isalpha() for c in vocab.chars])
        self.batch = Batch(engine)
        self.searching: list[_Search] = []

    @property
    def rows(self) -> list[_Row]:
        return self.batch.rows

    @property
    def active(self) -> int:
        return len(self.batch) + len(self.searching)

    @property
    def stories(self) -> int:
        return sum(row.search is None for row in self.batch.rows) + len(self.searching)

    def width_for(self, joining: int = 0) -> int:
        """Candidates for a story's next sentence now (with `joining` more stories): the rows a full
        batch leaves each story, at most the configured width; 1 without a critic."""
        if self.critic is None or self.limits.search_width < 2:
            return 1
        return max(1, min(self.limits.search_width, self.limits.max_batch // max(1, self.stories + joining)))

    def add(self, joining: list[tuple[int, StoryRequest]]) -> list[tuple]:
        """New rows with fresh zero states, their prompts primed together in one engine call.
        Returns ("error", rid, message) for a request whose prompt cannot be encoded."""
        errors, rows, prompts = [], [], []
        for rid, request in joining:
            try:  # the client validated it (StoryGenerator.prepare); this guards the pipe
                request.guarded(self.vocab, self.limits)
                prompt = self.vocab.encode(request.prime)
                row = _Row(rid, request, self.flush_seconds)
            except (InvalidRequest, TypeError, ValueError, OverflowError) as e:
                errors.append(("error", rid, str(e) if isinstance(e, InvalidRequest) else f"invalid request: {e}"))
            else:
                prompts.append(prompt)
                rows.append(row)
        if rows:
            width = self.width_for(len(rows))
            logits, state = self.engine.prime(prompts)
            logits = np.array(logits)  # writable: a device engine's may not be
            for j, row in enumerate(rows):
                row.width = width
                self._mask(row, logits[j])
            first = len(self.batch)
            self.batch.add(rows, logits, state, None if self.batch.memory is None else self._remember(rows))
            for j, row in enumerate(rows):  # forks join at the end: the rows' own places stay
                if row.width > 1:
                    self._fork(first + j)
            self._drop_parked()
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

    def _fork(self, i: int) -> None:
        """Story row i parks, and its candidates for the next sentence join the batch."""
        story = self.batch.rows[i]
        search = _Search(story, story.width)
        story.search = search  # parked: dropped from the batch by _drop_parked
        self.batch.fork(i, [story.candidate(n, search) for n in range(story.width)])
        self.searching.append(search)

    def _drop_parked(self) -> None:
        self.batch.keep(np.array([not (row.search is not None and row.search.story is row) for row in self.rows],
                                 bool))

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
        self.batch.replace(i, logits, state, None if self.batch.memory is None else self._remember([row]))
        return True

    def cancel(self, rid: int) -> None:
        self.searching = [s for s in self.searching if s.story.rid != rid]
        self.batch.keep(np.array([row.rid != rid for row in self.rows], bool))

    def advance(self) -> list[tuple]:
        """Write the next characters of every row; returns ("chunk", rid, text) and
        ("done", rid, story, times the filter stepped in, candidates per sentence)."""
        if not self.rows:
            return []
        run = self.batch.run(self.steps_per_call, self.vocab.index)
        out, keep, now = [], np.ones(len(self.rows), bool), time.monotonic()
        for i, row in enumerate(self.rows):
            checked = len(row.text)
            written = run.ids[i][run.ids[i] >= 0]
            row.text += "".join(self.chars[written])
            row.scores += run.scores[i][:len(written)].tolist()
            if len(written) < self.steps_per_call:  # a candidate that stopped: one draw a character, still
                row.reposition()
            rewound = self.limits.check_words and self._filter(i, row)
            if row.search is not None:
                keep[i] = not self._candidate_done(i, row, checked)
                continue
            # A rewind keeps the text before the blocked word, and a sentence end there still ends
            # the story, as it would have in shorter runs.
            stop = len(row.text) if row.filtered > MAX_FILTERED else row.end.stop(row.text, min(checked, len(row.text)))
            if stop is not None:
                out.append(self._done(row, row.end.finish(row.text[:stop])))
                keep[i] = False
            elif rewound:
                continue  # it writes on from there in the next run
            elif now - row.last_flush >= self.flush_seconds or len(row.text) - row.sent >= self.flush_chars:
                # Stream whole words only: the hard length limit may still cut a partial one.
                upto = max(row.text.rfind(" "), row.text.rfind("\n")) + 1
                if upto > row.sent:
                    out.append(("chunk", row.rid, row.text[row.sent:upto]))
                    row.sent, row.last_flush = upto, now
        finished = [s for s in self.searching if s.waiting == 0]
        self.batch.keep(keep)
        for search in finished:
            self.searching.remove(search)
            out += self._choose(search)
        return out

    def _candidate_done(self, i: int, row: _Row, checked: int) -> bool:
        """Whether candidate row i has finished its sentence (or must stop); if so it waits in its search."""
        search = row.search
        end = sentence_end(row.text, max(row.sentence_start, min(checked, len(row.text)) - 2))
        stop = row.end.stop(row.text, min(checked, len(row.text)))
        if end is None and stop is None and len(row.text) - row.sentence_start < search.longest \
                and row.filtered <= MAX_FILTERED:
            return False
        if end is None or (stop is not None and stop < end):
            end = stop if stop is not None else len(row.text)
        elif search.longest == LONGEST_SENTENCE:
            # The first whole sentence sets how long the others may take: counted in characters,
            # so the same seed still tells the same story.
            search.longest = min(LONGEST_SENTENCE, end - row.sentence_start + LATE)
        search.done.append((row.stream[2], row, end, self.batch.arrays(i)))
        search.waiting -= 1
        return True

    def _choose(self, search: _Search) -> list[tuple]:
        """The critic keeps one candidate: its sentence is the story's, and the story goes on from
        its row (or ends there)."""
        story = search.story
        done = sorted(search.done, key=lambda d: d[0])
        tale = story.text[:story.sentence_start]
        sentences = [Candidate(row.text[row.sentence_start:end], float(np.sum(row.scores[:end - row.sentence_start])))
                     for _, row, end, _ in done]
        ended = [sentence_end(row.text[:end + 1], row.sentence_start) is not None or
                 row.text[end - 1:end] in SENTENCE_ENDS for _, row, end, _ in done]
        values = self.critic.scores(tale, sentences, story.request.cast)
        values = np.where(ended, values, np.where(np.isfinite(values), values - 1e6, values))  # whole sentences first
        best = int(np.argmax(values)) if np.isfinite(values).any() else 0
        _, row, end, arrays = done[best]
        # Every candidate row points at its search: let go of the parked arrays now, not at the
        # garbage collector's next full pass (by then they are tens of MB of fragmented heap).
        search.done.clear()
        row.search, row.sentences, row.stream = None, story.sentences + 1, story.stream
        row.widths = story.widths + [story.width]
        sentence_text = row.text[:end]
        stop = row.end.stop(sentence_text, row.sentence_start)
        if row.filtered > MAX_FILTERED or stop is not None:
            return [self._done(row, row.end.finish(sentence_text[:stop or len(sentence_text)]))]
        out = [("chunk", row.rid, sentence_text[row.sent:])] if end > row.sent else []
        row.scores = row.scores[end - row.sentence_start:]  # of any characters written past the end
        row.sent = row.sentence_start = end
        self.batch.add([row], *arrays)
        row.width = self.width_for()
        if row.width > 1:
            self._fork(len(self.batch) - 1)
            self._drop_parked()
        else:  # a busy generator: the story goes on without search
            row.stream, row.drawn_from = (row.request.seed, row.sentences), len(row.text)
            row.reposition()
        return out

    def _done(self, row: _Row, text: str) -> tuple:
        """The story's end, with the candidates its sentences were chosen from on average (those
        written on without search count 1)."""
        plain, at = 0, row.sentence_start
        while (at := sentence_end(text, at)) is not None:
            plain += 1
        widths = row.widths + [1] * max(plain, 0 if row.widths else 1)
        return "done", row.rid, text, row.filtered, round(sum(widths) / len(widths), 2)


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
    critic = Critic.load(config.model) if config.search_width > 1 else None
    scheduler = Scheduler(engine, bundle.vocab, config.flush_chars, config.flush_seconds,
                          config.steps_per_call, config, critic)
    outbox.send(("ready", {"model": bundle.name, "card_hash": bundle.card_hash, "engine": engine.name}))
    joining = []
    while True:
        try:
            # A burst of requests is admitted together (waiting up to GATHER_SECONDS for the next of
            # it), so that each story's width is chosen knowing how many came.
            while not (scheduler.active or joining) or inbox.poll(GATHER_SECONDS if joining else 0):
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
