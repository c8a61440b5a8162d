"""Bits per character and bits per word of a model on text, with the model's own normalisation.

Bits per character depend on how the text was normalised (a reflowed book has fewer characters
than a hard-wrapped one); bits per word divide the same total by the number of words, which
reflowing does not change, so they compare across bundles.
"""
from __future__ import annotations

import math

import numpy as np

from model.vocab import Vocabulary
from train import dataset

LN2 = math.log(2)  # nats per bit: every bits-per-char and per-word figure divides by it
STORY_WINDOW = 2000  # a story is read from a fresh state over up to this many characters


def total_nats(model, ids: np.ndarray, seq_length: int, batch_size: int) -> tuple[float, int]:
    """Summed loss over every predicted character of fresh-state windows (as validation measures)."""
    import keras

    x, y = dataset.windows(ids, seq_length)
    total = 0.0
    for i in range(0, len(x), batch_size):
        rows = len(x[i:i + batch_size])
        batch = np.zeros((batch_size, seq_length), x.dtype)  # one shape: compiled once
        batch[:rows] = x[i:i + batch_size]
        logits = model.predict_on_batch(batch)[:rows]
        total += float(np.sum(keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(y[i:i + batch_size], logits, from_logits=True))))
    return total, y.size


def evaluate_texts(model, vocab: Vocabulary, texts: list[str], seq_length: int = 100,
                   batch_size: int = 256) -> dict:
    """Texts already cleaned and normalised the model's way (not again here); unknown characters
    are dropped (counted)."""
    nats = predicted = chars = words = unknown = breaks = 0
    for text in texts:
        text, dropped = vocab.fit(text)
        unknown += dropped
        if len(text) <= seq_length:
            continue
        n, p = total_nats(model, vocab.encode(text), seq_length, batch_size)
        nats, predicted = nats + n, predicted + p
        breaks += text[1:p + 1].count("\n")  # the targets: every character after the first
        # The few characters past the last whole window are not scored: count their words out too.
        chars, words = chars + p, words + len(text.split()) * p / len(text)
    if not predicted:
        raise ValueError(f"the text is too short: no window of {seq_length + 1} characters")
    bpc = nats / predicted / LN2
    return {"bits_per_char": round(bpc, 4), "bits_per_word": round(nats / LN2 / words, 3),
            "nats_per_char": round(nats / predicted, 4), "chars": chars, "words": round(words),
            "paragraph_breaks": breaks,
            "unknown_chars_dropped": unknown}


def evaluate_story_lengths(model, vocab: Vocabulary, texts: list[str], seq_length: int) -> dict:
    """The scores at the training window and, nested, at a story's length (fewer rows per batch, so
    the longer windows take the same memory); text too short for a story's window says so there."""
    try:
        story = evaluate_texts(model, vocab, texts, STORY_WINDOW, max(1, 256 * seq_length // STORY_WINDOW))
    except ValueError as e:
        story = {"skipped": str(e)}
    return {**evaluate_texts(model, vocab, texts, seq_length), "story_window": {"window": STORY_WINDOW, **story}}
