"""Turning logits into characters: temperature, top-k, top-p, and where a story ends."""
from __future__ import annotations

import numpy as np

SENTENCE_ENDS = ".!?"
CLOSING_QUOTES = "\"')"
ABBREVIATIONS = frozenset({"Mr", "Mrs", "Ms", "Dr", "St"})  # a full stop after these ends no sentence
OVERRUN_SHARE, OVERRUN_MIN = 0.15, 40  # a story runs at most 15% (or 40 chars) past its target


# What a character is to a sentence's end, by id (sentence_classes): the engines stop a candidate
# row after the break that follows an end mark, or after the paragraph break that follows an end
# mark and a closing quote, as sentence_end reads it. A quote closed mid-paragraph runs on, since
# its speaker tag most often follows ('What?' asked Snape.).
OTHER, END_MARK, CLOSING, BREAK, PARAGRAPH = range(5)


def sentence_classes(chars: str) -> np.ndarray:
    return np.array([END_MARK if c in SENTENCE_ENDS else CLOSING if c in CLOSING_QUOTES else PARAGRAPH if c == "\n"
                     else BREAK if c.isspace() else OTHER for c in chars], np.int64)


def still_writing(xp, active, stop_at_end, before, drawn, classes):
    """After each row drew and read `drawn`: which rows go on (a row with `stop_at_end` stops after
    the break that ends a sentence; "Mr. " too, which the generator then lets go on), and each
    row's last two ids (-1: none). model.kernels.generate is this rule, row by row."""
    last, earlier = before[:, 1], before[:, 0]
    last_class = xp.where(last >= 0, xp.take(classes, xp.maximum(last, 0)), OTHER)
    earlier_class = xp.where(earlier >= 0, xp.take(classes, xp.maximum(earlier, 0)), OTHER)
    drawn_class = xp.take(classes, drawn)
    ends = stop_at_end & (
        (((drawn_class == BREAK) | (drawn_class == PARAGRAPH)) & (last_class == END_MARK))
        | ((drawn_class == PARAGRAPH) & (last_class == CLOSING) & (earlier_class == END_MARK)))
    moved = xp.stack([last, drawn], axis=1)
    return active & ~ends, xp.where(active[:, None], moved, before)


def sample_rows(logits, uniforms, temperature, top_k, top_p, xp=np, paragraph_id=-1):
    """Draw one id per row from the sampler's distribution (`distribution_rows`)."""
    return draw_rows(distribution_rows(logits, temperature, top_k, top_p, xp, paragraph_id), uniforms, xp)


def draw_rows(p, uniforms, xp=np):
    """One id per row from weights of any scale, with the row's uniform draw."""
    cdf = xp.cumsum(p, axis=1)
    return xp.argmax(cdf > uniforms[:, None] * cdf[:, -1:], axis=1)


def distribution_rows(logits, temperature, top_k, top_p, xp=np, paragraph_id=-1):
    """Each row's weights for the draw (not normalised). Each row uses only its own logits and
    settings (and its own uniform draw), so a row's choice never depends on which rows share the batch.

    temperature divides the logits (the seed recipe's "scaling"); top_k keeps the k likeliest
    (0: all); top_p keeps the smallest set whose probability reaches p (1: all). A paragraph break
    (`paragraph_id`, -1 for none) keeps the odds it has at temperature 1 against the likeliest
    character: a low temperature sharpens the choice of words, and would otherwise all but end
    paragraphs (v4 breaks 2.1 times per 1,000 characters at 0.5, the books 4.4).
    xp is numpy or keras.ops: the same steps run on the host and inside a compiled device loop
    (without branches on data, so they trace). model.kernels.row_distribution is this function for
    one row."""
    z = logits / temperature[:, None]  # float64 on the host, where temperature is float64
    vocab = z.shape[1]
    if paragraph_id >= 0:
        top = xp.max(logits, axis=1, keepdims=True)
        kept = logits + top * (1.0 / temperature[:, None] - 1.0)  # = top / T + (logit - top)
        z = xp.where(xp.arange(vocab)[None, :] == paragraph_id, kept, z)
    kth = xp.take_along_axis(xp.flip(xp.sort(z, axis=1), axis=1),
                             xp.clip(top_k - 1, 0, vocab - 1)[:, None], axis=1)
    limited = (top_k > 0) & (top_k < vocab)
    z = xp.where(limited[:, None] & (z < kth), -np.inf, z)
    p = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    p = p / xp.sum(p, axis=1, keepdims=True)
    sorted_p = xp.flip(xp.sort(p, axis=1), axis=1)
    before = xp.cumsum(sorted_p, axis=1) - sorted_p  # mass of the likelier ones
    smallest_kept = xp.min(xp.where(before < top_p[:, None], sorted_p, np.inf), axis=1, keepdims=True)
    return xp.where((top_p < 1.0)[:, None] & (p < smallest_kept), 0.0, p)


def sentence_end(text: str, since: int = 0) -> int | None:
    """Where the first sentence that ends after `since` is done: one character *after* its end,
    when that character is a space or a break (a paragraph break after a closing quote), so a
    closing quote after the full stop is kept and "Mr." mid-word is not an end. None when no
    sentence ends there yet."""
    for n in range(max(since + 1, 3), len(text) + 1):
        if text[n - 1].isspace() and _ends_sentence(text, n - 1):
            return n
    return None


def _ends_sentence(text: str, at: int) -> bool:
    """Whether text[:at] ends a sentence, text[at] being a break: an end mark, or an end mark and a
    closing quote before a paragraph break; not "Mr."."""
    before = text[at - 1]
    if before in CLOSING_QUOTES and at >= 2 and text[at - 2] in SENTENCE_ENDS:
        return at < len(text) and text[at] == "\n"
    if before not in SENTENCE_ENDS:
        return False
    word = text[max(0, at - 5):at - 1].rsplit(" ", 1)[-1].lstrip("\n\"'(")
    return not (before == "." and word in ABBREVIATIONS)


class StoryEnd:
    """Stop at the first sentence end once 90% of the `length` new characters are written, never more
    than 15% (or 40 characters, whichever is more) past it; with no sentence end in reach, at a word
    break. Positions count from the start of the text, whose first `begins` characters were given."""

    def __init__(self, length: int, begins: int = 0):
        self.begins = begins
        self.soft = begins + int(length * 0.9)
        self.hard = begins + length + max(OVERRUN_MIN, int(length * OVERRUN_SHARE))

    def stop(self, text: str, since: int = 0) -> int | None:
        """The length at which the story ends, looking only past the first `since` characters
        (those were checked before); None while it goes on."""
        for n in range(max(since + 1, self.soft, 2), len(text) + 1):
            if n >= self.hard:
                return n
            if text[n - 1].isspace() and n >= 2 and _ends_sentence(text, n - 1):  # as sentence_end reads one
                return n
        return None

    def finish(self, text: str) -> str:
        """The story as shown: where the hard limit stopped it mid-sentence, cut back to the last
        sentence end in its second half, else to the last whole word."""
        if len(text) >= self.hard and not text[-1].isspace():
            half = self.begins + (self.soft - self.begins) // 2
            ends = [n for n in range(half, len(text)) if text[n].isspace() and _ends_sentence(text, n)]
            cut = ends[-1] if ends else max(text.rfind(" "), text.rfind("\n"))
            if cut > self.begins:
                text = text[:cut]
        return text.rstrip()

