"""The word filter: the one module that owns the blocked-word lists, the dictionary of real words,
and how words are matched.

A token is read case-insensitively with look-alike symbols mapped to letters (0->o, 1->i, 3->e, 4->a,
5->s, 7->t, @->a, $->s, ! and | -> i). It is blocked when it is a listed word or its plural (s; es
after o), or when it is not a real word (model/words.txt) and holds a listed word anywhere, with any
letter repeated ("niiigger", "xnigger", "niggerish"). Real words pass however they are made: with
"god" listed, "good" and "goddess" pass; "Scunthorpe"-style words pass as long as no listed word is
inside them. Letters split by separators ("n.i.g.g.e.r", "n i g g e r") are read as one word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHIPPED_LIST = Path(__file__).with_name("blocklist.txt")
DICTIONARY = Path(__file__).with_name("words.txt")  # real words: train/dictionary.py writes it
LOOKALIKES = str.maketrans("013457@$!|", "oieastasii")
MAX_WORD = 40  # longer blocked words are refused when added
# A token: letters with look-alike symbols among them ("!" and "|" only between others, so
# "Nigger!" ends at the "r"); apostrophes and other punctuation end a word.
_TOKEN = re.compile(r"[a-z0-9@$]+(?:[!|][a-z0-9@$]+)*")
# Single characters joined by one separator each: "n.i.g.g.e.r", "n i g g e r", "n-i-g".
SEPARATORS = " .-_*"
_SPELLED = re.compile(r"(?<![a-z0-9@$])[a-z0-9@$]([ .\-_*])(?:[a-z0-9@$]\1)+[a-z0-9@$](?![a-z0-9@$])")


def runs(word: str) -> tuple[tuple[str, int], ...]:
    """'nigger' -> (('n', 1), ('i', 1), ('g', 2), ('e', 1), ('r', 1))."""
    out: list[list] = []
    for c in word:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return tuple((c, n) for c, n in out)


def clean_word(word: str) -> str:
    """A list entry as it is matched: lower case, letters only; ValueError names what is wrong."""
    word = word.strip().lower()
    if not word:
        raise ValueError("the word is empty")
    if len(word) > MAX_WORD:
        raise ValueError(f"the word is {len(word)} characters long; the most is {MAX_WORD}")
    if not re.fullmatch(r"[a-z]+", word):
        raise ValueError(f"{word!r} is not one word of the letters a-z (write the plain spelling; "
                         f"look-alike spellings are caught anyway)")
    return word


def _inside(token_runs, pattern: tuple[tuple[str, int], ...]) -> bool:
    """Whether the word of `pattern` is spelled anywhere in the token, each letter repeated at least
    as often as the word has it."""
    size = len(pattern)
    return any(all(c == want and n >= least for (c, n), (want, least) in zip(token_runs[j:j + size], pattern))
               for j in range(len(token_runs) - size + 1))


@dataclass(frozen=True)
class WordFilter:
    words: frozenset[str]

    @classmethod
    def of(cls, *word_lists) -> "WordFilter":
        return cls(frozenset(w for words in word_lists for w in words))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where blocked words are in `text`: (start, end) pairs in order."""
        if not self.words:
            return []
        lowered = text.lower()
        found = [m.span() for m in _TOKEN.finditer(lowered)
                 if re.search("[a-z]", m.group()) and self._blocked(m.group())]
        found += [m.span() for m in _SPELLED.finditer(lowered) if self._spelled(m.group()[::2])]
        return sorted(found)

    def find(self, text: str) -> list[str]:
        """The blocked words in `text`, as written there (empty when the text is clean)."""
        return [text[a:b] for a, b in self.spans(text)]

    def mask(self, text: str) -> str:
        """`text` with each blocked word's letters hidden: the last line of defence for display."""
        for a, b in reversed(self.spans(text)):
            text = text[:a] + "\u25a0" * (b - a) + text[b:]
        return text

    def _spelled(self, letters: str) -> bool:
        """Letters spelled out one by one hold no word boundaries: look for a blocked word anywhere."""
        return any(self._blocked(letters[i:j]) for i in range(len(letters)) for j in range(i + 1, len(letters) + 1))

    def _blocked(self, token: str) -> bool:
        token = token.translate(LOOKALIKES)
        if token in _plain_forms(self.words):
            return True
        if token in real_words():
            return False
        return hides_a_word(token, self.words)


@lru_cache(maxsize=256)
def _plain_forms(words: frozenset[str]) -> frozenset[str]:
    """The listed words as written and in the plural: blocked even where a dictionary has them."""
    return frozenset(form for w in words for form in (w, w + "s", *((w + "es",) if w.endswith("o") else ())))


def hides_a_word(token: str, words: frozenset[str]) -> bool:
    """Whether one of `words` is spelled anywhere in the (mapped, lower-case) token, with repeats."""
    token_runs = runs(token)
    return any(_inside(token_runs, pattern) for pattern in _patterns(words))


@lru_cache(maxsize=256)
def _patterns(words: frozenset[str]) -> tuple[tuple[tuple[str, int], ...], ...]:
    return tuple(runs(word) for word in sorted(words))


@lru_cache(maxsize=1)
def real_words() -> frozenset[str]:
    """The shipped dictionary: lower-case words of the training corpus and a standard word list."""
    return frozenset(DICTIONARY.read_text(encoding="utf-8").split())


@lru_cache(maxsize=1)
def shipped_words() -> frozenset[str]:
    return read_list(SHIPPED_LIST)


def read_list(path) -> frozenset[str]:
    """A list file: one word a line; blank lines and lines starting with # are skipped."""
    words = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                words.add(clean_word(line))
            except ValueError as e:
                raise ValueError(f"{path} line {number}: {e}") from None
    return frozenset(words)


def shipped_filter() -> WordFilter:
    return WordFilter(shipped_words())
