"""The tale's memory, and the cast a server's stories draw on: the one module that owns their rule.

A match model over the tale so far, as PAQ-style compressors use: it finds the longest earlier
occurrence of the text's end (up to LONGEST characters) and predicts what followed it. The sampler
mixes that in before it draws, with one uniform per character as before:

    p' = (1 - w(L)) p + w(L) target

where L is the match length, w per length is fitted on validation text (train/memory_fit.py) and
stored in the bundle's memory.json (at least `name_weight` within a word of a name), and target is
the predicted letter, or, where the earlier occurrence's word ended, the model's own choice among
characters that end a word: not letters, nor an apostrophe (a completed name ends its word, "Snape"
never runs on into "Snapes" or "Ron't", and the model still picks its comma or full stop).

Names only (`names_only`): the memory speaks only inside a run of capitalised words ("Professor
McGonagall"), and only when the match covers the whole run and the boundary before it, so it
finishes names and leaves ordinary prose to the model. Copying whole sentences made stories loop.

The cast: entries the memory holds before the tale, as if the tale had named them, each between
separators (a separator matches any character that is not a letter, and a match through it starts
there: "Sirius Black" does not run on into the next entry). Where the model begins a
capitalised word mid-sentence, it keeps its temperature-1 odds of a capital, and the names' initials
get `name_share` of them; the start's own names weigh `start_weight` cast entries, so they come
back before the cast crowds them out.

`feed_rows`, `predict_rows` and `mix_rows` are the rule for a batch of rows in numpy or keras.ops
(the reference and device engines); model.kernels runs the same steps for one row (CPU engine).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

LONGEST = 32  # match lengths count up to this; `weights` has one entry per length 0..LONGEST
HISTORY = 8192  # characters a row's memory holds: cast, tale so far, start and new text
ENTRY_CHARS = 40  # the longest cast entry
MAX_CAST = 60  # entries a cast may hold
DEFAULT_CAST_FILE = Path(__file__).with_name("cast.txt")
# Character classes. A separator (id vocab) and an empty cell (id vocab + 1) are OTHER.
OTHER, LOWER, UPPER, SPACE, PAUSE, JOIN = range(6)
PAUSES = ",;:"
JOINS = "'"  # goes on within a word ("don't"): no end for a name, whose word would run on ("Ron't")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z]*")
# Common words that open sentences: capitalised there, yet no one's name.
SENTENCE_OPENERS = frozenset("""a after all an and as at but by every for from he her here his how i if in it its
long my no not now of oh on once one our she so some that the their then there these they this those to up we
what when where which while who why with yes you your""".split())


@dataclass(frozen=True)
class MemoryConfig:
    """What a bundle's memory.json holds."""
    # w for match lengths 0..LONGEST (w[.][0] = 0: no match): [0] at large, [1] within a run of
    # capitalised words that began mid-sentence, where a capital almost always means a name
    weights: tuple[tuple[float, ...], tuple[float, ...]]
    names_only: bool = True
    # How stories use it, chosen by measurement (quill bench story), not fitted:
    name_share: float = 0.6  # of the capital letters' mass at a mid-sentence word start
    start_weight: float = 40.0  # one of the start's names weighs this many cast entries
    name_weight: float = 0.995  # the least weight within a word of a name begun mid-sentence
    fitted: dict = field(default_factory=dict)  # on what text, and the bits it saved

    def __post_init__(self):
        if len(self.weights) != 2 or any(len(ws) != LONGEST + 1 or not all(0.0 <= w < 1.0 for w in ws)
                                         for ws in self.weights):
            raise ValueError(f"weights must be two lists of {LONGEST + 1} numbers from 0 up to 1")
        if not 0.0 <= self.name_share <= 1.0 or self.start_weight <= 0 or not 0.0 <= self.name_weight < 1.0:
            raise ValueError("name_share must be from 0 to 1, start_weight above 0 and name_weight from 0 up to 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> "MemoryConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return cls(weights=tuple(tuple(float(w) for w in ws) for ws in data["weights"]),
                   names_only=bool(data["names_only"]),
                   name_share=float(data["name_share"]), start_weight=float(data["start_weight"]),
                   name_weight=float(data["name_weight"]),
                   fitted=dict(data.get("fitted", {})))


class Memory:
    """A config with the tables an engine reads: each id's class and the weights as arrays."""

    def __init__(self, config: MemoryConfig, chars: list[str]):
        self.config = config
        self.vocab_size = len(chars)
        self.separator, self.empty = len(chars), len(chars) + 1
        self.classes = np.array([_class(c) for c in chars] + [OTHER, OTHER], np.int64)
        self.weights = np.array(config.weights, np.float64).ravel()  # [mid-sentence name * (LONGEST + 1) + length]
        self.names_only, self.name_share, self.name_weight = config.names_only, config.name_share, config.name_weight


def _class(c: str) -> int:
    if c.isalpha():
        return UPPER if c.isupper() else LOWER
    return SPACE if c == " " else PAUSE if c in PAUSES else JOIN if c in JOINS else OTHER


class MemoryRows(NamedTuple):
    """Each row's memory, one row per story (like the engines' states)."""
    history: np.ndarray  # (rows, HISTORY) ids; separators and empty cells past the end
    matches: np.ndarray  # (rows, HISTORY) how many characters up to j match the end (j < length - 1)
    length: np.ndarray  # (rows,) characters held
    run_start: np.ndarray  # (rows,) where the run of capitalised words at the end begins; -1: none
    initials: np.ndarray  # (rows, vocab) share of each capital among the names' initials

    def take(self, keep) -> "MemoryRows":
        return MemoryRows(*(a[keep] for a in self))

    def replace_row(self, i: int, other: "MemoryRows") -> None:
        for mine, theirs in zip(self, other):
            mine[i] = theirs[0]

    @staticmethod
    def concatenate(parts: list["MemoryRows"]) -> "MemoryRows":
        return MemoryRows(*(np.concatenate(arrays) for arrays in zip(*parts)))

    @staticmethod
    def empty(vocab_size: int) -> "MemoryRows":
        return MemoryRows(np.zeros((0, HISTORY), np.int32), np.zeros((0, HISTORY), np.int32), np.zeros(0, np.int64),
                          np.zeros(0, np.int64), np.zeros((0, vocab_size), np.float64))


def new_rows(memory: Memory, texts: list[np.ndarray], casts: list[list[np.ndarray]],
             initials: np.ndarray) -> MemoryRows:
    """Rows that hold each cast (entries between separators) and then read each text (ids)."""
    from model import kernels

    rows = len(texts)
    history = np.full((rows, HISTORY), memory.empty, np.int32)
    matches = np.zeros((rows, HISTORY), np.int32)
    length, run_start = np.zeros(rows, np.int64), np.full(rows, -1, np.int64)
    for b, (ids, cast) in enumerate(zip(texts, casts)):
        held = [memory.separator]
        for entry in cast:
            held += [*entry.tolist(), memory.separator]
        if len(held) + len(ids) > HISTORY:
            raise ValueError(f"the memory holds {HISTORY} characters; this tale and cast have {len(held) + len(ids)}")
        history[b, :len(held)] = held  # no match can end in the cast: only the tale's end is matched
        length[b] = len(held)
        length[b], run_start[b] = kernels.feed_text(history[b], matches[b], length[b], run_start[b],
                                                    np.asarray(ids, np.int64), memory.classes, memory.separator)
    return MemoryRows(history, matches, length, run_start, np.asarray(initials, np.float64).reshape(rows, -1))


def _matches(xp, memory: Memory, held, c):
    """Whether each held character matches c: the same character, or a separator where c is no letter."""
    letter = (xp.take(memory.classes, c) == LOWER) | (xp.take(memory.classes, c) == UPPER)
    return (held == c[:, None]) | ((held == memory.separator) & ~letter[:, None])


def feed_rows(xp, memory: Memory, rows: MemoryRows, ids) -> MemoryRows:
    """Each row reads one more character: every earlier end that matched the text's end and is
    followed by the new character now matches one longer; the others drop to 0."""
    history, matches, length, run_start, initials = rows
    positions = xp.arange(HISTORY)[None, :]
    before = xp.concatenate([xp.zeros_like(matches[:, :1]), matches[:, :-1]], axis=1)
    # A separator begins a match but ends what came before it: entries do not run on into each other.
    grown = xp.where(history == memory.separator, 1, xp.minimum(before + 1, LONGEST))
    matches = _int32(xp, xp.where(_matches(xp, memory, history, ids) & (positions < length[:, None]), grown, 0))
    previous = xp.take_along_axis(history, (length - 1)[:, None], axis=1)[:, 0]
    run_start = next_run_start(xp, run_start, length, xp.take(memory.classes, previous), xp.take(memory.classes, ids))
    history = _int32(xp, xp.where(positions == length[:, None], ids[:, None], history))
    return MemoryRows(history, matches, length + 1, run_start, initials)


def _int32(xp, a):
    return a.astype(np.int32) if xp is np else xp.cast(a, "int32")


def next_run_start(xp, run_start, position, before, now):
    """The run of capitalised words after a character of class `now` at `position`, after one of
    class `before`. A capital after a non-letter starts a run, or goes on with the run it follows
    across one space; letters within a word keep it, a small letter starting a word ends it; a space
    after a letter keeps it (another capitalised word may follow); anything else ends it."""
    in_word = (before == LOWER) | (before == UPPER)
    upper = xp.where(in_word | ((before == SPACE) & (run_start >= 0)), run_start, position)
    kept = xp.where(in_word, run_start, -1)
    return xp.where(now == UPPER, upper, xp.where((now == LOWER) | (now == SPACE), kept, -1))


def predict_rows(xp, memory: Memory, rows: MemoryRows):
    """Per row: the predicted next id (the separator for "the word ends"), its weight w (0: the
    memory is silent; the table of names that began mid-sentence, or the other), and whether a
    name may begin here (a word start mid-sentence)."""
    history, matches, length, run_start, initials = rows
    positions = xp.arange(HISTORY)[None, :]
    score = matches * HISTORY + positions  # the longest match, and of those the latest
    best = xp.argmax(xp.where(matches > 0, score, -1), axis=1)
    longest = xp.max(matches, axis=1)
    following = xp.take_along_axis(history, (best + 1)[:, None], axis=1)[:, 0]
    covered = longest >= length - run_start + 1
    speaks = (longest > 0) & (covered & (run_start >= 0) if memory.names_only else True)
    before_run = xp.take_along_axis(history, xp.maximum(run_start - 1, 0)[:, None], axis=1)[:, 0]
    before_space = xp.take(memory.classes, xp.take_along_axis(history, xp.maximum(run_start - 2, 0)[:, None],
                                                              axis=1)[:, 0])
    in_name = ((run_start >= 2) & (xp.take(memory.classes, before_run) == SPACE)
               & ((before_space == LOWER) | (before_space == PAUSE)))
    last = xp.take_along_axis(history, xp.maximum(length - 1, 0)[:, None], axis=1)[:, 0]
    in_word = (xp.take(memory.classes, last) == LOWER) | (xp.take(memory.classes, last) == UPPER)
    fitted = xp.take(memory.weights, xp.where(in_name, LONGEST + 1, 0) + longest)
    # Within a name's word a story commits to it: fitted weights hedge between the names a book
    # has, and half a name ("Hogwar") is no word.
    weight = xp.where(speaks, xp.where(in_name & in_word, xp.maximum(fitted, memory.name_weight), fitted), 0.0)
    before_last = xp.take_along_axis(history, xp.maximum(length - 2, 0)[:, None], axis=1)[:, 0]
    word_start = (xp.take(memory.classes, last) == SPACE) & (
        (xp.take(memory.classes, before_last) == LOWER) | (xp.take(memory.classes, before_last) == PAUSE))
    return following, weight, word_start & (weight == 0)


def mix_rows(xp, memory: Memory, p, logits, following, weight, name_start, initials):
    """The draw's weights (rows, vocab; any scale) after the memory and the cast have spoken. A
    character the logits rule out (-inf: a start's whole word, the filter's rewind) stays out."""
    classes = memory.classes[:memory.vocab_size]
    allowed = logits > -np.inf
    p = p / xp.sum(p, axis=1, keepdims=True)
    capital = (classes == UPPER)[None, :]
    # A name may begin: capitals keep their temperature-1 mass, and the initials take a share of it.
    initials = xp.where(allowed, initials, 0.0)
    named = name_start & (xp.sum(initials, axis=1) > 0)
    initials = initials / xp.maximum(xp.sum(initials, axis=1, keepdims=True), 1e-30)
    odds = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    capitals_mass = xp.sum(xp.where(capital, odds, 0.0), axis=1, keepdims=True) / xp.sum(odds, axis=1, keepdims=True)
    in_capitals = xp.sum(xp.where(capital, p, 0.0), axis=1, keepdims=True)
    share = xp.where(in_capitals > 0, memory.name_share, 1.0)
    as_capital = capitals_mass * ((1 - share) * p / xp.maximum(in_capitals, 1e-30) + share * initials)
    as_other = (1 - capitals_mass) * p / xp.maximum(1 - in_capitals, 1e-30)
    p = xp.where(named[:, None], xp.where(capital, as_capital, as_other), p)
    # The memory: its character, or where the earlier word ended, the model's choice of a word's end.
    letters = (classes == LOWER) | (classes == UPPER)
    ends_word = (xp.take(memory.classes, following) != LOWER) & (xp.take(memory.classes, following) != UPPER)
    ids = xp.arange(memory.vocab_size)[None, :]
    word_ends = ~letters & (classes != JOIN)
    endings = xp.where(word_ends[None, :], p, 0.0)
    ending_mass = xp.sum(endings, axis=1, keepdims=True)
    target = xp.where(ends_word[:, None], endings / xp.maximum(ending_mass, 1e-30),
                      xp.where(ids == following[:, None], 1.0, 0.0))
    usable = xp.where(ends_word, ending_mass[:, 0] > 0,
                      xp.take_along_axis(allowed, xp.minimum(following, memory.vocab_size - 1)[:, None], axis=1)[:, 0])
    weight = xp.where(usable, weight, 0.0)[:, None]
    return (1 - weight) * p + weight * target


# The cast ------------------------------------------------------------------------------------------

PLACES_MARK = "# Places and things"  # in model/cast.txt: the entries after it are no people


@lru_cache(maxsize=1)
def default_cast() -> tuple[str, ...]:
    """The wizarding cast a new server starts with (model/cast.txt, one entry a line)."""
    lines = DEFAULT_CAST_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@lru_cache(maxsize=1)
def default_places() -> frozenset[str]:
    """The default cast's places and things (model/cast.txt, after PLACES_MARK): entries that never
    speak. An entry a server adds is of no known kind."""
    text = DEFAULT_CAST_FILE.read_text(encoding="utf-8")
    after = text.split(PLACES_MARK, 1)[1].split("\n", 1)[1]
    return frozenset(line.strip() for line in after.splitlines() if line.strip() and not line.startswith("#"))


def check_entry(entry: str) -> str:
    """A cast entry as stored: trimmed, single-spaced; ValueError names what is wrong. (Blocked
    words and unknown characters are the generator's and the bot's checks, against their lists.)"""
    if not isinstance(entry, str):
        raise ValueError(f"a cast entry must be text (got {type(entry).__name__})")
    entry = " ".join(entry.split())
    if not entry:
        raise ValueError("the cast entry is empty")
    if len(entry) > ENTRY_CHARS:
        raise ValueError(f"the cast entry is {len(entry)} characters; the most is {ENTRY_CHARS}")
    if not any(c.isalpha() for c in entry):
        raise ValueError("a cast entry needs a letter")
    return entry


def names_in(text: str, cast: tuple[str, ...]) -> list[str]:
    """The names a start (or tale) holds: its capitalised words, but for common words that open a
    sentence ("The", "Once"; not "Hermione")."""
    names = []
    for m in _CAPITALISED.finditer(text):
        word = m.group()
        before = text[:m.start()].rstrip(" \"'(")
        opens = not before or before[-1] in ".!?\n"
        if len(word) > 1 and not (opens and word.lower() in SENTENCE_OPENERS) and word not in names:
            names.append(word)
    return names


def initials_of(memory: Memory, index: dict[str, int], start_names: list[str], cast: tuple[str, ...]) -> np.ndarray:
    """Each capital's share of the names' initials: a cast entry's first capital counts once, a name
    of the start `start_weight` times."""
    weights = np.zeros(memory.vocab_size, np.float64)
    for name, weight in [(n, memory.config.start_weight) for n in start_names] + [(e, 1.0) for e in cast]:
        capital = next((c for c in name if c.isupper()), None)
        if capital in index:
            weights[index[capital]] += weight
    total = weights.sum()
    return weights / total if total else weights
