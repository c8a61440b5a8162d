"""Characters <-> ids, and the text normalisation applied to corpora and prompts.

This module imports no Keras: the bot checks prompts with it.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

# Typographic variants -> one plain form. The shared corpus mixes curly and straight quotes;
# folding them gives the model one spelling of each and lets users type prompts on any keyboard.
TYPOGRAPHY = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "--", "\u2015": "--", "\u2012": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "", "\ufeff": "",
}
_TYPOGRAPHY_TABLE = str.maketrans(TYPOGRAPHY)


def normalise_line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalise_typography(text: str) -> str:
    return text.translate(_TYPOGRAPHY_TABLE)


_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Normalisation:
    """How text was normalised for a model. Applied once, where text comes in (a book, a prompt, a
    member's line); it is idempotent, so text that is already normalised passes through unchanged."""
    typography: bool = True  # curly quotes and dashes folded to plain ones
    paragraphs: bool = False  # one line per paragraph: every line break is a paragraph break

    def apply(self, text: str) -> str:
        text = normalise_line_endings(text)
        if self.typography:
            text = normalise_typography(text)
        if self.paragraphs:
            lines = (_WHITESPACE.sub(" ", line).strip() for line in text.split("\n"))
            body = "\n".join(line for line in lines if line)
            if not body:
                return ""
            # Breaks around the text mean something: a line break starts a paragraph (a member's line
            # in a tale written together begins with one), a trailing space leaves a word open.
            head, tail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            text = ("\n" if "\n" in head else "") + body + ("\n" if "\n" in tail else " " if tail else "")
        return text

    def for_reading(self, text: str) -> str:
        """Model text as readers expect it: in paragraph mode a blank line between paragraphs.
        `apply` reads it back to the same model text."""
        return text.replace("\n", "\n\n") if self.paragraphs else text

    def from_reading(self, text: str) -> str:
        """The model text that `for_reading` turned into `text` (its exact inverse, no normalising)."""
        return text.replace("\n\n", "\n") if self.paragraphs else text

    def to_dict(self) -> dict:
        return {"line_endings": "lf", "typography": self.typography,
                "line_breaks": "paragraphs" if self.paragraphs else "kept"}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        line_breaks = d.get("line_breaks", "kept")  # bundles before v2 kept the books' line breaks
        if line_breaks not in ("kept", "paragraphs"):
            raise ValueError(f"unknown line_breaks rule {line_breaks!r}")
        return cls(bool(d.get("typography", False)), line_breaks == "paragraphs")


class UnknownCharacters(ValueError):
    """A prompt holds characters the model never saw and that have no equivalent it knows."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"the model does not know these characters: {shown}")


@dataclass(frozen=True)
class Vocabulary:
    chars: tuple[str, ...]
    normalisation: Normalisation = Normalisation()

    @classmethod
    def from_text(cls, text: str, normalisation: Normalisation, min_count: int = 1) -> "Vocabulary":
        """Every character of `text` seen at least `min_count` times (rarer ones are folded or dropped
        by `fit`, so a few stray symbols do not each cost the model an output)."""
        counts: dict[str, int] = {}
        for c in text:
            counts[c] = counts.get(c, 0) + 1
        return cls(tuple(sorted(c for c, n in counts.items() if n >= min_count)), normalisation)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        index = self.index
        return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def fold(self, text: str) -> str:
        """Each character of normalised text that the model lacks folded to a plain form it knows, if any."""
        known = set(self.chars)
        return "".join(c if c in known else _fold(c, known) for c in text)

    def folds(self, text: str) -> tuple[str, ...]:
        """What `fold` changes in normalised text, as "à→a", in order of first use (to tell a member)."""
        known = set(self.chars)
        changed = dict.fromkeys(c for c in text if c not in known and _fold(c, known) != c)
        return tuple(f"{c}\u2192{_fold(c, known)}" for c in changed)

    def fit(self, text: str) -> tuple[str, int]:
        """Normalised text for training or evaluation: folded, with what is still unknown dropped (and counted)."""
        text = self.fold(text)
        known = set(self.chars)
        kept = "".join(c for c in text if c in known)
        return kept, len(text) - len(kept)

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` the model does not know, sorted."""
        return sorted(set(text) - set(self.chars))

    def normalised(self, text: str) -> str:
        """A member's text as the model reads it: normalised (StoryRequest.validated is the one
        place that does it) and folded; `unknown` names what is still missing."""
        return self.fold(self.normalisation.apply(text))

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars), "normalisation": self.normalisation.to_dict()},
                          ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        data = json.loads(text)
        chars = data["chars"]
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("'chars' must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("'chars' lists a character twice")
        return cls(tuple(chars), Normalisation.from_dict(data.get("normalisation", {})))


def _fold(c: str, known: set[str]) -> str:
    """The typographic plain form, else the letter without its accents (é -> e), if the model knows it."""
    for folded in (TYPOGRAPHY.get(c), unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()):
        if folded and all(f in known for f in folded):
            return folded
    return c
