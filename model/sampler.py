"""Turning logits into characters: temperature, top-k, top-p, and where a story ends."""
from __future__ import annotations

import numpy as np

SENTENCE_ENDS = ".!?"
CLOSING_QUOTES = "\"')"
OVERRUN = 200  # a story never runs more than this past its target


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float,
                top_k: int = 0, top_p: float = 1.0) -> int:
    """Draw one id from a row of logits. Temperature divides the logits as in the seed recipe."""
    z = logits.astype(np.float64) / temperature
    if top_k and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p  # smallest set reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(p.size, p=p))


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


def write_story(engine, vocab, start: str, length: int, temperature: float, seed: int,
                top_k: int = 0, top_p: float = 1.0) -> str:
    """One story on one row: prime the prompt, then sample until StoryEnd says stop."""
    rng = np.random.default_rng(seed)
    ids = vocab.encode(vocab.prepare(start))
    logits, state = engine.prime(ids, engine.zero_state(1))
    end, text = StoryEnd(length), start
    while not end.done(text):
        nxt = sample_next(logits[0], rng, temperature, top_k, top_p)
        text += vocab.chars[nxt]
        logits, state = engine.step([nxt], state)
    return end.finish(text)
