"""The word filter: the one module that owns the blocked-word lists, the dictionary of real words,
and how words are matched.

Text is first folded, character by character, to the form words are matched in: lower case,
accents off ("é" -> "e", "æ" -> "ae"), Cyrillic and Greek look-alikes to Latin, full-width forms
to plain, invisible characters dropped, every apostrophe and dash made plain. In the folded text
three kinds of token are read, each case-insensitively with look-alike symbols mapped to letters
(0->o, 1->i, 3->e, 4->a, 5->s, 7->t, @->a, $->s, ! and | -> i):
- a word ("Nigger!", "n1gg3r");
- a joined word: words joined by - ' . _ * or ~ ("re-tard", "r'e't'a'r'd", "r.e-t.a-r.d");
- a spelled-out word: single characters apart by one to three of space . - _ * , ' ~ ("n i g g e r",
  "r,e,t,a,r,d", "r. e- t").
A word is blocked when it is a listed word or its plural (s; es after o), or when it is not a real
word (model/words.txt) and holds a listed word anywhere, with any letter repeated ("niiigger",
"xnigger", "niggerish"). Real words pass however they are made: with "god" listed, "good" and
"goddess" pass; "Scunthorpe"-style words pass as long as no listed word is inside them. A spelled-out
word is read the same way. A joined word is blocked when it reads as a listed word, or when it is not
a real word and a listed word runs across one of its joins, through a piece that is no real word
("grass-snake" and "dark-eyed" pass with "ass" and "darkey" listed).

Every step is linear in the text, so no text costs more than a few milliseconds
(`quill bench filter` measures the worst of several hostile forms).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHIPPED_LIST = Path(__file__).with_name("blocklist.txt")
DICTIONARY = Path(__file__).with_name("words.txt")  # real words: tools/dictionary.py writes it
MAX_WORD = 40  # longer blocked words are refused when added
LOOKALIKES = str.maketrans("013457@$!|", "oieastasii")
_W = "a-z0-9@$"  # the characters of a token, once folded
# A word: "!" and "|" only between others, so "Nigger!" ends at the "r".
# Possessive, and starting only where no token character stands before: every scan stays linear.
_WORD = rf"[{_W}]++(?:[!|][{_W}]++)*+"
_TOKEN = re.compile(rf"(?<![{_W}!|]){_WORD}")
_JOINED = re.compile(rf"(?<![{_W}!|]){_WORD}(?:[-'._*~,]{_WORD})++")
SPELLING_GAP = " \t\n.-_*,'~"  # what may stand between the letters of a spelled-out word
_SPELLED = re.compile(rf"(?<![{_W}])[{_W}](?:[{re.escape(SPELLING_GAP)}]{{1,3}}[{_W}])+(?![{_W}])")
_GAP_BEFORE = re.compile(rf"(?<![{_W}])[{_W}][{re.escape(SPELLING_GAP)}]{{1,3}}\Z")
_SPELLING = re.compile(f"[{re.escape(SPELLING_GAP)}]")
_JOINS = re.compile(r"[-'._*~,]")

# Letters NFKD does not take apart, look-alikes from other scripts, and punctuation of the same use.
_FOLDS = {
    "æ": "ae", "œ": "oe", "ß": "ss", "ø": "o", "đ": "d", "ð": "d", "ł": "l", "þ": "th", "ı": "i", "ħ": "h",
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ԛ": "q",
    "ԝ": "w", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y",
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
}


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    """One character (already lower case) in the form words are matched in."""
    if c in _FOLDS:
        return _FOLDS[c]
    if unicodedata.category(c) in ("Cf", "Mn", "Me"):  # zero-width and combining marks: invisible
        return ""
    plain = "".join(p for p in unicodedata.normalize("NFKD", c) if not unicodedata.combining(p)).lower()
    plain = "".join(_FOLDS.get(p, p) for p in plain)
    return plain if plain.isascii() and plain else c


def fold(text: str) -> tuple[str, list[int] | None]:
    """The folded text, and for each of its characters the index in `text` it came from (None when
    the two line up: plain ASCII)."""
    if text.isascii():
        return text.lower(), None
    out, origin = [], []
    for i, c in enumerate(text):
        piece = "".join(_fold_char(x) for x in c.lower())
        out.append(piece)
        origin.extend([i] * len(piece))
    return "".join(out), origin


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


def token_start(text: str, end: int, floor: int = 0) -> int:
    """A place at or before `end` (and not before `floor`) that no token reaching `end` starts
    before: the start of the unbroken run of characters holding text[end - 1], and of the
    spelled-out word it may end ("n i g g"). Scanning from here finds what scanning from `floor` would."""
    i = end
    while True:
        while i > floor and not text[i - 1].isspace():
            i -= 1
        # A spelled-out word goes on before a gap of one to three characters after a single one.
        window = max(floor, i - 6)
        folded, origin = fold(text[window:i])
        gap = _GAP_BEFORE.search(folded)
        if gap is None or (gap.start() == 0 and window > floor):  # the letter's left side is out of sight
            return i
        i = window + (origin[gap.start()] if origin else gap.start())


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
        folded, origin = fold(text)
        words = self.words
        found = [m.span() for m in _TOKEN.finditer(folded) if _word_blocked(words, m.group())]
        found += [m.span() for m in _JOINED.finditer(folded) if _joined_blocked(words, m.group())]
        found += [m.span() for m in _SPELLED.finditer(folded) if _word_blocked(words, _SPELLING.sub("", m.group()))]
        if origin is not None:
            found = [(origin[a], origin[b - 1] + 1) for a, b in found]
        return sorted(set(found))

    def prepare(self) -> "WordFilter":
        """Compile the list's pattern (tens of milliseconds for 500 words) and read the dictionary
        now, so that no later check pays for them: a bot calls this off its event loop."""
        if self.words:
            _hider(self.words)
            real_words()  # the dictionary too: read once, on the first check otherwise
        return self

    def find(self, text: str) -> list[str]:
        """The blocked words in `text`, as written there (empty when the text is clean)."""
        return [text[a:b] for a, b in self.spans(text)]

    def mask(self, text: str) -> str:
        """`text` with each blocked word's letters hidden: the last line of defence for display."""
        for a, b in reversed(_merged(self.spans(text))):
            text = text[:a] + "\u25a0" * (b - a) + text[b:]
        return text


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def forget_verdicts() -> None:
    """Drop the remembered verdicts on tokens (a benchmark measures the filter's first reading)."""
    _word_blocked.cache_clear()
    _joined_blocked.cache_clear()


@lru_cache(maxsize=65536)
def _word_blocked(words: frozenset[str], token: str) -> bool:
    """A word or a spelled-out word (folded, lower case): listed, or a non-word hiding a listed word."""
    token = token.translate(LOOKALIKES)
    if not re.search("[a-z]", token):
        return False
    if token in _plain_forms(words):
        return True
    return token not in real_words() and hides_a_word(token, words)


@lru_cache(maxsize=16384)
def _joined_blocked(words: frozenset[str], token: str) -> bool:
    """Words joined by - ' . _ * ~ or a comma with no space ("re-tard", "ret,ard"): listed as one;
    or a non-word with a listed word running across a join, unless every piece that word touches is
    a real word ("dark-eyed" and "two-pointed" pass with "darkey" and "wop" listed; "xnig-ger" does
    not)."""
    pieces = [p.translate(LOOKALIKES) for p in _JOINS.split(token)]
    whole = "".join(pieces)
    if whole in _plain_forms(words):
        return True
    if whole in real_words() or not hides_a_word(whole, words):
        return False
    bounds, at = [], 0  # (start, end) of each piece in `whole`
    for piece in pieces:
        bounds.append((at, at + len(piece)))
        at += len(piece)
    for a, b in occurrences(whole, words):
        touched = [pieces[i] for i, (p, q) in enumerate(bounds) if p < b and a < q]
        if len(touched) > 1 and not all(piece in real_words() for piece in touched):
            return True
    return False


@lru_cache(maxsize=256)
def _plain_forms(words: frozenset[str]) -> frozenset[str]:
    """The listed words as written and in the plural: blocked even where a dictionary has them."""
    return frozenset(form for w in words for form in (w, w + "s", *((w + "es",) if w.endswith("o") else ())))


def _run(c: str, n: int) -> str:
    return re.escape(c) + ("++" if n == 1 else f"{{{n},}}+")


def _pattern(word: str) -> str:
    """'nigger' -> 'n+i+g{2,}e+r+', the word with any letter repeated, written so that a scan stays
    linear: it starts only where a run of its first letter starts, and takes each run whole
    (possessive), which loses nothing because the runs of a word differ from their neighbours."""
    word_runs = runs(word)
    return f"(?<!{re.escape(word[0])})" + "".join(_run(c, n) for c, n in word_runs)


@lru_cache(maxsize=256)
def _hider(words: frozenset[str]) -> re.Pattern:
    """One pattern for all of `words`, grouped by their first run: one scan a token, trying at each
    place only the words that begin with the letter there."""
    groups: dict[tuple[str, int], list[str]] = {}
    for word in sorted(words):
        (c, n), *rest = runs(word)
        groups.setdefault((c, n), []).append("".join(_run(*r) for r in rest))
    return re.compile("|".join(f"(?<!{re.escape(c)}){_run(c, n)}(?:{'|'.join(tails)})"
                               for (c, n), tails in sorted(groups.items())))


@lru_cache(maxsize=16384)
def _finder(word: str) -> re.Pattern:
    """The word's pattern, looking ahead, so that each start of it is found with its longest end."""
    return re.compile(f"(?=({_pattern(word)}))")


def hides_a_word(token: str, words: frozenset[str]) -> bool:
    """Whether one of `words` is spelled anywhere in the (mapped, lower-case) token, with repeats."""
    return bool(words) and _hider(words).search(token) is not None


def occurrences(token: str, words: frozenset[str]):
    """Every (start, end) where a listed word is spelled in the token, with repeats: for each start
    of each word, its longest end."""
    letters = set(token)
    for word in words:
        if letters.issuperset(word):
            for m in _finder(word).finditer(token):
                yield m.start(1), m.end(1)


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
