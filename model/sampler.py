"""Turning logits into characters: temperature, top-k, top-p, and where a story ends."""
from __future__ import annotations

import numpy as np

SENTENCE_ENDS = ".!?"
CLOSING_QUOTES = "\"')"
OVERRUN = 200  # a story never runs more than this past its target


def sample_rows(logits: np.ndarray, uniforms: np.ndarray, temperature: np.ndarray,
                top_k: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """Draw one id per row. Each row uses only its own logits, settings and uniform draw, so a
    row's choice never depends on which other rows share the batch.

    temperature divides the logits (the seed recipe's "scaling"); top_k keeps the k likeliest
    (0: all); top_p keeps the smallest set whose probability reaches p (1: all)."""
    z = logits.astype(np.float64) / temperature[:, None]
    rows = np.arange(len(z))
    limited = (top_k > 0) & (top_k < z.shape[1])
    if limited.any():
        kth = -np.sort(-z, axis=1)[rows, np.clip(top_k - 1, 0, z.shape[1] - 1)]
        z = np.where(limited[:, None] & (z < kth[:, None]), -np.inf, z)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    nucleus = top_p < 1.0
    if nucleus.any():
        sorted_p = -np.sort(-p, axis=1)
        before = np.cumsum(sorted_p, axis=1) - sorted_p  # mass of the likelier ones
        smallest_kept = np.where(before < top_p[:, None], sorted_p, np.inf).min(axis=1)
        p = np.where(nucleus[:, None] & (p < smallest_kept[:, None]), 0.0, p)
    cdf = np.cumsum(p, axis=1)
    return np.argmax(cdf > (uniforms * cdf[:, -1])[:, None], axis=1)


class StoryEnd:
    """Stop at the first sentence end once 90% of the target is written, never mid-word,
    never past target + OVERRUN."""

    def __init__(self, target: int):
        self.target = target
        self.soft = int(target * 0.9)

    def done(self, text: str) -> bool:
        n = len(text)
        if n >= self.target + OVERRUN:
            return True
        if n < self.soft or n < 2:
            return False
        last, before = text[-1], text[-2]
        # Done one character *after* the sentence end, when that character is a space/newline,
        # so a closing quote after the full stop is kept and "Mr." mid-word is not a break.
        if last.isspace():
            return before in SENTENCE_ENDS or (before in CLOSING_QUOTES and n >= 3
                                               and text[-3] in SENTENCE_ENDS)
        return False

    def finish(self, text: str) -> str:
        """The story as shown: cut back to the last whole word if the hard limit stopped it."""
        if len(text) >= self.target + OVERRUN and not text[-1].isspace():
            cut = max(text.rfind(" "), text.rfind("\n"))
            if cut > 0:
                text = text[:cut]
        return text.rstrip()

