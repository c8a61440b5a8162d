"""The critic that chooses each sentence of a searched story (model.generator's sentence search).

A candidate sentence is read three ways:
- the GRU's own log-probability of its characters at temperature 1, with the tale's memory and cast
  mixed in as drawn (the engines score every character they draw), per character;
- a word trigram model of the training books (interpolated absolute discounting), per word, where a
  name is one class, `<name>`: a plain-English model would punish every rare name, and so erase the
  cast; names are the memory's business, and its odds are in the GRU's score;
- its length in words, as likely as the books make it (the log-probability of that length among the
  books' sentences: about 16 words on average).
The features are weighed by weights fitted to blind readers' choices between pairs of candidates
(train/critic_fit.py, `quill fit-critic`): fitted, not chosen.

Some candidates are never chosen while another is there: one that breaks a cast entry ("Diagon"
without "Alley", "the Sorting of Oz", or a cast word run on into a non-word, "Diagone"), one with a
speaker tag no book writes ("said Hogwarts", "said Madam.", "said Potter had"), one that brings in a
name from another book ("the Scarecrow"), one that quotes with other marks than the tale, one that
repeats a word 4-gram of the tale, and one that ends in a non-word.

The word model is compact count tables in the bundle's critic.npz (no Keras), the weights in
critic.json.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.memory import default_places
from model.safety import real_words

TABLES_FILE, WEIGHTS_FILE = "critic.npz", "critic.json"
UNKNOWN, NAME = "<unk>", "<name>"
SPECIALS = (UNKNOWN, NAME)
FEATURES = ("gru_per_char", "words_per_token", "length_in_books")
LONGEST = 80  # words: sentence lengths from here on share one bin
# Words, sentence ends, pauses, quotes and paragraph breaks: what a sentence is made of.
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[.!?]+|[,;:\"]|\n")
_OPENERS = {".", "!", "?", "\"", "\n"}  # after these, a capital opens a sentence and says nothing
TITLES = frozenset("Professor Madam Mr Mrs Miss Mister Sir Lord Lady Uncle Aunt Doctor Dr Master Mistress Saint".split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def is_capitalised(token: str) -> bool:
    return token[:1].isupper() and token != "I"


def opens_sentence(previous: str | None) -> bool:
    return previous is None or previous in _OPENERS or previous[-1] in ".!?"


def form(token: str, previous: str | None, names: frozenset[str], cast_words: frozenset[str] = frozenset()) -> str:
    """How the word model reads a token after `previous`: a name (a capitalised word mid-sentence,
    or one of `names` or `cast_words`) as the class `<name>`, any other word in lower case."""
    if token[0].isalpha():
        if is_capitalised(token) and (token in names or token in cast_words or not opens_sentence(previous)):
            return NAME
        return token.lower()
    return token


@dataclass(frozen=True)
class WordModel:
    """Counts of the training books' words, pairs and triples, with names as one class."""
    words: tuple[str, ...]  # id order: the specials first
    unigrams: np.ndarray  # (V,) counts
    followers: np.ndarray  # (V,) distinct words seen after each word
    bigram_keys: np.ndarray  # sorted u * V + v, pairs seen at least twice
    bigram_counts: np.ndarray
    bigram_followers: np.ndarray  # distinct words seen after each kept pair
    trigram_keys: np.ndarray  # sorted (u * V + v) * V + w, triples seen at least twice
    trigram_counts: np.ndarray
    names: frozenset[str]  # words the books write capitalised mid-sentence, more often than not
    lengths: np.ndarray  # (LONGEST + 1,) log-probability of a sentence of n words in the books
    discount: float = 0.75

    @property
    def size(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return _index(self.words)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, words=np.array(self.words), unigrams=self.unigrams, followers=self.followers,
                 bigram_keys=self.bigram_keys, bigram_counts=self.bigram_counts,
                 bigram_followers=self.bigram_followers, trigram_keys=self.trigram_keys,
                 trigram_counts=self.trigram_counts, names=np.array(sorted(self.names)), lengths=self.lengths,
                 discount=np.array(self.discount))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "WordModel":
        with np.load(path) as f:
            return cls(tuple(str(w) for w in f["words"]), f["unigrams"], f["followers"], f["bigram_keys"],
                       f["bigram_counts"], f["bigram_followers"], f["trigram_keys"], f["trigram_counts"],
                       frozenset(str(w) for w in f["names"]), f["lengths"], float(f["discount"]))

    def ids(self, text_tokens: list[str], cast_words: frozenset[str] = frozenset(),
            previous: str | None = None) -> np.ndarray:
        """Token ids, a name (a capitalised word mid-sentence, or a cast word) as the class `<name>`;
        a capitalised word opening a sentence is read in lower case unless it is a name."""
        index, out = self.index, []
        for token in text_tokens:
            out.append(index.get(form(token, previous, self.names, cast_words), index[UNKNOWN]))
            previous = token
        return np.array(out, np.int64)

    def log_probs(self, ids: np.ndarray, context: np.ndarray) -> np.ndarray:
        """log P(w | two words before) for each of `ids`, after `context` (natural logs)."""
        seq = np.concatenate([np.full(2, -1, np.int64), context[-2:], ids])[-(len(ids) + 2):]
        u, v, w = seq[:-2], seq[1:-1], seq[2:]
        size, d = self.size, self.discount
        total = float(self.unigrams.sum())
        p = (self.unigrams[w] + 1.0) / (total + size)
        # pairs: (v, w) after v
        known_v = v >= 0
        vv = np.where(known_v, v, 0)
        c_v = self.unigrams[vv].astype(np.float64)
        c_vw = _lookup(self.bigram_keys, self.bigram_counts, vv * size + w)
        followers = self.followers[vv]
        lam = np.where(followers > 0, d * followers / np.maximum(c_v, 1), 1.0)  # none seen after it: back off
        p2 = np.maximum(c_vw - d, 0) / np.maximum(c_v, 1) + lam * p
        p = np.where(known_v & (c_v > 0), p2, p)
        # triples: (u, v, w) after u v
        known_uv = known_v & (u >= 0)
        uv = np.where(known_uv, np.where(u >= 0, u, 0) * size + vv, 0)
        at = np.searchsorted(self.bigram_keys, uv)
        at = np.minimum(at, len(self.bigram_keys) - 1)
        found = known_uv & (self.bigram_keys[at] == uv)
        c_uv = np.where(found, self.bigram_counts[at], 0).astype(np.float64)
        c_uvw = _lookup(self.trigram_keys, self.trigram_counts, uv * size + w)
        followers = np.where(found, self.bigram_followers[at], 0)
        lam = np.where(followers > 0, d * followers / np.maximum(c_uv, 1), 1.0)
        p3 = np.maximum(c_uvw - d, 0) / np.maximum(c_uv, 1) + lam * p
        p = np.where(c_uv > 0, p3, p)
        return np.log(p)


def _lookup(keys: np.ndarray, counts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(len(wanted))
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, counts[at], 0).astype(np.float64)


@lru_cache(maxsize=4)
def _index(words: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(words)}


@dataclass(frozen=True)
class Candidate:
    """A sentence a row wrote: its text and the sum of its characters' scores (Run.scores)."""
    text: str
    gru: float


class Critic:
    def __init__(self, words: WordModel, weights: dict[str, float]):
        self.words, self.weights = words, weights
        self.vector = np.array([weights[name] for name in FEATURES])

    @classmethod
    def load(cls, bundle_path: Path) -> "Critic | None":
        """The bundle's critic, or None when it has none (`quill fit-critic` makes one)."""
        tables, weights = Path(bundle_path) / TABLES_FILE, Path(bundle_path) / WEIGHTS_FILE
        if not tables.is_file() or not weights.is_file():
            return None
        return cls(WordModel.load(tables), json.loads(weights.read_text(encoding="utf-8"))["weights"])

    def features(self, tale: str, candidates: list[Candidate], cast: tuple[str, ...] = ()) -> np.ndarray:
        """(candidates, FEATURES) for sentences that each follow `tale`."""
        cast_words = cast_words_of(cast)
        before = tokens(tale[-200:])
        context = self.words.ids(before, cast_words)
        out = np.zeros((len(candidates), len(FEATURES)))
        for i, c in enumerate(candidates):
            said = tokens(c.text)
            ids = self.words.ids(said, cast_words, before[-1] if before else None)
            words = max(1, sum(t[0].isalpha() for t in said))
            out[i] = (c.gru / max(1, len(c.text)),
                      float(self.words.log_probs(ids, context).mean()) if len(ids) else -20.0,
                      self.words.lengths[min(words, LONGEST)])
        return out

    def scores(self, tale: str, candidates: list[Candidate], cast: tuple[str, ...] = ()) -> np.ndarray:
        """Each candidate's score, higher is better; -inf for one that must not be chosen."""
        values = self.features(tale, candidates, cast) @ self.vector
        for i, c in enumerate(candidates):
            if flaws(tale, c.text, cast, self.words):
                values[i] = -math.inf
        return values

    def choose(self, tale: str, candidates: list[Candidate], cast: tuple[str, ...] = ()) -> int:
        """The index of the candidate to keep (the first, where all have flaws: a story goes on)."""
        values = self.scores(tale, candidates, cast)
        return int(np.argmax(values)) if np.isfinite(values).any() else 0


def cast_words_of(cast: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t for entry in cast for t in tokens(entry) if is_capitalised(t))


@dataclass(frozen=True)
class _TaleSoFar:
    tokens: tuple[str, ...]
    capitalised: frozenset[str]
    last_words: tuple[str, ...]  # its last three words, lower case
    four_grams: frozenset[tuple[str, ...]]  # of its words, lower case
    quote_mark: str | None  # the first quotation mark it uses


@lru_cache(maxsize=8)
def _read(tale: str) -> _TaleSoFar:
    """What the flaws read of the tale so far: once for all of a sentence's candidates, not once each."""
    said = tokens(tale)
    lower = [t.lower() for t in said if t[0].isalpha()]
    return _TaleSoFar(tuple(said), frozenset(t for t in said if is_capitalised(t)), tuple(lower[-3:]),
                      frozenset(tuple(lower[i:i + 4]) for i in range(len(lower) - 3)),
                      next((m.group() for m in _QUOTES.finditer(tale)), None))


def flaws(tale: str, sentence: str, cast: tuple[str, ...], words: WordModel) -> list[str]:
    """Why a sentence must not be chosen: broken cast entries, a broken speaker tag, a name from
    another book, quotes of the other kind, a repeated word 4-gram of the tale, a name said twice
    at once, an ending in a non-word. Empty when it may be."""
    found = (broken_entries(sentence, cast, words) + broken_tags(sentence, cast, words)
             + strangers(tale, sentence, cast, words) + other_quotes(tale, sentence))
    said = [t.lower() for t in tokens(sentence) if t[0].isalpha()]
    before = _read(tale)
    joined = [*before.last_words, *said]
    if any(tuple(joined[i:i + 4]) in before.four_grams for i in range(len(joined) - 3)) or \
            len({tuple(said[i:i + 4]) for i in range(len(said) - 3)}) < len(said) - 3:
        found.append("repeats four words of the tale")
    found += [f"a name said twice at once: {m.group()}" for m in _STUTTER.finditer(sentence)]
    last = [t for t in tokens(sentence) if t[0].isalpha()][-1:]
    if last and not is_capitalised(last[0]) and last[0].lower() not in real_words():
        found.append(f"ends in a non-word: {last[0]}")
    return found


# A name said twice at once: "Longbottom of the Longbottom", "Lady Lady", "Ron and Ron". The books
# do it 4.6 times in a million words ("Mugger of Mugger"); the model, in a story of a few.
_STUTTER = re.compile(r"\b([A-Z][A-Za-z]+)(?: (?:of|and|in|with|to|at))?(?: the)? \1\b")


def strangers(tale: str, sentence: str, cast: tuple[str, ...], words: WordModel) -> list[str]:
    """Names from other books: capitalised words mid-sentence that the books use as names and that
    neither the cast nor the tale so far holds ("the Scarecrow", "Polly", "Oz"). The tale's people
    are the memory's and the cast's; a stranger pulls it into another book."""
    before = _read(tale)
    known = before.capitalised | cast_words_of(cast)
    said, found = tokens(sentence), []
    for i, token in enumerate(said):
        if token in words.names and token not in known and token not in TITLES and \
                not opens_sentence(said[i - 1] if i else (before.tokens[-1] if before.tokens else None)):
            found.append(f"a name from another book: {token}")
    return found


# Quotation marks: a double quote, or a single one that opens before a word or closes after a
# pause or an end (an apostrophe inside or after a word is neither).
_QUOTES = re.compile(r"\"|(?:^|(?<=[\s(]))'(?=[A-Za-z])|(?<=[.,!?;:])'(?=\s|$)")


def other_quotes(tale: str, sentence: str) -> list[str]:
    """A sentence that quotes with the other marks than the tale already does ("...' after "...),
    or with both at once: a book keeps to one kind."""
    kinds = [m.group() for m in _QUOTES.finditer(sentence)]
    used = _read(tale).quote_mark
    if used and any(k != used for k in kinds) or not used and len(set(kinds)) > 1:
        return [f"quotes with other marks than the tale: {' '.join(dict.fromkeys(kinds))}"]
    return []


# A speaker tag: a verb of speech, its speaker (perhaps "the" and capitalised words), then a pause
# or an end. In the books' 32,000 tags ("said Harry", "asked the King") the speaker is followed
# by one of RUN_ON in 12: "said Potter had said" and "said He was" are the model's, not English.
SPEECH = frozenset("said asked cried answered replied shouted whispered exclaimed remarked called began".split())
TAG_ENDS = frozenset({",", ".", "!", "?", ";", ":", "\"", ""})  # what ends a tag ("said the Peeves," but not "the Weasley twins")
RUN_ON = frozenset("had was were is has said asked did would could will".split())


def broken_tags(sentence: str, cast: tuple[str, ...], words: WordModel) -> list[str]:
    """Speaker tags that make no sense: a place or a thing of the cast speaks ("said Hogwarts"), a
    name takes "the" ("said the Peeves."), a title speaks without its name ("said Madam."), an ordinary word speaks ("said No"), a speaker
    calls himself by name ("'Very well, Snape,' said Snape"), or the tag runs on into a verb ("said
    Potter had")."""
    places = _place_words(cast)
    said, found = tokens(sentence), []
    quoted = {t for t in tokens(" ".join(re.findall(r"[\"'](?=\S)([^\"']+?)(?<=\S)[\"']", sentence))) if is_capitalised(t)}
    for i, token in enumerate(said):
        if token not in SPEECH:
            continue
        before = i
        while before > 0 and is_capitalised(said[before - 1]):
            before -= 1
        if places & set(said[before:i]):  # "And the Hogwarts said"
            found.append(f"a place or a thing speaks: {' '.join(said[before:i])} {token}")
            continue
        j = i + 1 + (said[i + 1:i + 2] == ["the"])
        speaker = []
        while j < len(said) and is_capitalised(said[j]):
            speaker.append(said[j])
            j += 1
        after = said[j] if j < len(said) else ""
        if not speaker:
            continue
        named = said[i + 1] != "the"
        if places & set(speaker):
            found.append(f"a place or a thing speaks: {token} {' '.join(speaker)}")
        elif not named and after in TAG_ENDS and set(speaker) <= _people_words(cast) - TITLES:
            found.append(f"a name takes 'the': {token} the {' '.join(speaker)}")
        elif named and speaker[-1] in TITLES:
            found.append(f"a title speaks without a name: {token} {' '.join(speaker)}")
        elif named and not any(namelike(w, words) for w in speaker):
            found.append(f"an ordinary word speaks: {token} {' '.join(speaker)}")
        elif named and quoted & set(speaker) - TITLES:
            found.append(f"the speaker calls himself by name: {token} {' '.join(speaker)}")
        elif after in RUN_ON:
            found.append(f"the speaker tag runs on: {token} {' '.join(speaker)} {after}")
    return found


@lru_cache(maxsize=64)
def _people_words(cast: tuple[str, ...]) -> frozenset[str]:
    """The capitalised words of the cast's names that take no "the" ("Peeves", "Potter"; not "the
    Sorting Hat", nor a place)."""
    return frozenset(w for entry in set(cast) - default_places() if not entry.lower().startswith("the ")
                     for w in tokens(entry) if is_capitalised(w))


@lru_cache(maxsize=64)
def _place_words(cast: tuple[str, ...]) -> frozenset[str]:
    """The capitalised words of the cast's places and things (model/cast.txt marks them)."""
    return frozenset(w for entry in default_places() & set(cast) for w in tokens(entry) if is_capitalised(w))


COMMON = 20  # a word the books use this often in lower case is an ordinary word, not a name


def namelike(word: str, words: WordModel) -> bool:
    """A title, a word the books use as a name, or one that is no ordinary word ("Severus", "Snape")."""
    if word in TITLES or word in words.names:
        return True
    at = words.index.get(word.lower())
    return at is None or words.unigrams[at] < COMMON


_KINDS: dict = {}


def _entry_kinds(cast: tuple[str, ...], words: WordModel) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """For each capitalised word of a multi-word entry that cannot stand alone, the entries it
    belongs to; and every cast word (for run-ons). A person's name ("Harry Potter", "Professor
    McGonagall": every word namelike) lets its words stand alone; a place or a thing ("the Sorting
    Hat", "Diagon Alley", "Nearly Headless Nick") does not, except words that are entries of their
    own ("Hogwarts" in "the Hogwarts Express")."""
    key = (cast, id(words))
    if key not in _KINDS:
        singles = {entry for entry in cast if len(entry.split()) == 1}
        bound: dict[str, list[str]] = {}
        for entry in cast:
            entry_words = [t for t in tokens(entry) if t[0].isalpha()]
            if len(entry_words) < 2 or not entry.lower().startswith("the ") and all(
                    namelike(w, words) for w in entry_words):
                continue
            for w in entry_words:
                if is_capitalised(w) and w not in singles and w not in TITLES:
                    bound.setdefault(w, []).append(entry)
        every = frozenset(w for entry in cast for w in tokens(entry) if is_capitalised(w))
        if len(_KINDS) > 256:
            _KINDS.clear()
        _KINDS[key] = ({w: tuple(e) for w, e in bound.items()}, every)
    return _KINDS[key]


def broken_entries(sentence: str, cast: tuple[str, ...], words: WordModel) -> list[str]:
    """Cast entries the sentence breaks: a word of a place's or a thing's name without the rest
    ("Diagon" alone, "the Sorting of Oz"), or a cast word run on into a non-word ("Diagone")."""
    if not cast:
        return []
    bound, every = _entry_kinds(tuple(cast), words)
    found = []
    whole = [m.span() for entry in cast for m in re.finditer(rf"(?<![A-Za-z]){re.escape(entry)}(?![a-z])", sentence,
                                                           re.IGNORECASE if entry.lower().startswith("the ") else 0)]
    for m in re.finditer(r"[A-Za-z]+", sentence):
        word = m.group()
        if not is_capitalised(word) or any(a <= m.start() < b for a, b in whole):
            continue
        if word in bound:
            found.append(f"{word} without the rest of {bound[word][0]}")
        elif (word not in every and word.lower() not in real_words() and word not in words.names
              and not any(word in (w + "s", w + "es") for w in every)):  # "the Weasleys"
            stem = next((w for w in every if len(w) >= 4 and word.startswith(w[:max(4, len(w) - 2)])), None)
            if stem:
                found.append(f"{word} runs on from {stem}")
    return found
