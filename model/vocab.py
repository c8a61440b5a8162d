"""Characters <-> ids, and the text normalisation applied to corpora and prompts.

This module imports no Keras: the bot checks prompts with it.
"""
from __future__ import annotations

import json
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


def normalise(text: str, typography: bool) -> str:
    text = normalise_line_endings(text)
    return normalise_typography(text) if typography else text


class UnknownCharacters(ValueError):
    """A prompt holds characters the model never saw and that have no equivalent it knows."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"the model does not know these characters: {shown}")


@dataclass(frozen=True)
class Vocabulary:
    chars: tuple[str, ...]
    typography: bool = True  # whether training text was typography-normalised

    @classmethod
    def from_text(cls, text: str, typography: bool) -> "Vocabulary":
        return cls(tuple(sorted(set(text))), typography)

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

    def prepare(self, text: str) -> str:
        """Normalise a prompt to this vocabulary or raise UnknownCharacters naming what is left."""
        text = normalise_line_endings(text)
        known = set(self.chars)
        # Fold a character only where the model lacks it and knows its plain form.
        text = "".join(c if c in known else _fold(c, known) for c in text)
        unknown = sorted({c for c in text if c not in known})
        if unknown:
            raise UnknownCharacters(unknown)
        return text

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars),
                           "normalisation": {"line_endings": "lf",
                                             "typography": self.typography}},
                          ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        data = json.loads(text)
        chars = data["chars"]
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("'chars' must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("'chars' lists a character twice")
        return cls(tuple(chars), bool(data.get("normalisation", {}).get("typography", False)))


def _fold(c: str, known: set[str]) -> str:
    folded = TYPOGRAPHY.get(c)
    return folded if folded is not None and all(f in known for f in folded) else c
