"""Fitting and scoring the tale's memory (model.memory) on text the model did not train on.

Each window is read from a fresh state and an empty memory, as a story is. At every character the
memory either is silent or predicts, with match length L; the mixture (1 - w) p + w target scores
the true next character. w per L maximises the likelihood of validation text (a concave problem in
one number per length, solved by bisection); lengths seen too rarely to fit take the shorter length's
weight. `quill fit-memory` writes the result into the bundle's memory.json, `quill eval --memory`
scores a bundle with and without it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from model import kernels
from model.memory import JOIN, LONGEST, LOWER, UPPER, Memory, MemoryConfig
from model.vocab import Vocabulary
from train import dataset
from train.evaluate import LN2

FEWEST_EVENTS = 200  # a length seen fewer times than this takes the shorter length's weight


def events(model, vocab: Vocabulary, texts: list[str], window: int, names_only: bool, batch_size: int = 12) -> dict:
    """Per predicted character: the index into the weights the memory speaks with (0: silent), the model's
    probability p of the true character, and the target's v; plus the words, for bits per word."""
    import keras

    memory = Memory(MemoryConfig(weights=((0.0,) * (LONGEST + 1),) * 2, names_only=names_only), vocab.chars)
    word_ends = ~np.isin(memory.classes[:len(vocab)], (LOWER, UPPER, JOIN))
    lengths, p_true, v_true, words, chars = [], [], [], 0.0, 0
    for text in texts:
        text, _ = vocab.fit(text)
        if len(text) <= window:
            continue
        x, y = dataset.windows(vocab.encode(text), window)
        for i in range(0, len(x), batch_size):
            logits = keras.ops.convert_to_numpy(model.predict_on_batch(x[i:i + batch_size])).astype(np.float64)
            p = np.exp(logits - logits.max(axis=2, keepdims=True))
            p /= p.sum(axis=2, keepdims=True)
            for row, (ids, targets) in enumerate(zip(x[i:i + batch_size], y[i:i + batch_size])):
                following, spoken = kernels.match_lengths(ids.astype(np.int64), memory.classes, memory.separator,
                                                          names_only)
                probs = p[row]
                true = probs[np.arange(len(targets)), targets]
                ends_word = ~np.isin(memory.classes[following], (LOWER, UPPER))
                endings = probs[:, word_ends].sum(axis=1)
                v = np.where(ends_word, np.where(word_ends[targets], true / np.maximum(endings, 1e-300), 0.0),
                             (following == targets).astype(np.float64))
                lengths.append(spoken), p_true.append(true), v_true.append(v)
        chars += y.size
        words += len(text.split()) * y.size / len(text)
    if not lengths:
        raise ValueError(f"the text is too short: no window of {window + 1} characters")
    return {"lengths": np.concatenate(lengths), "p": np.concatenate(p_true), "v": np.concatenate(v_true),
            "words": words, "chars": chars}


def fit_weight(p: np.ndarray, v: np.ndarray) -> float:
    """The w in [0, 0.999] that maximises sum(log((1 - w) p + w v)): its derivative falls with w."""
    def slope(w):
        return float(np.sum((v - p) / ((1 - w) * p + w * v)))

    low, high = 0.0, 0.999
    if slope(low) <= 0:
        return 0.0
    if slope(high) >= 0:
        return high
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if slope(mid) > 0 else (low, mid)
    return round((low + high) / 2, 4)


def fit_weights(found: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """One weight per length, in each of the two tables (model.memory.MemoryConfig.weights)."""
    tables = []
    for table in range(2):
        weights = [0.0]
        for length in range(1, LONGEST + 1):
            at = found["lengths"] == table * (LONGEST + 1) + length
            weights.append(fit_weight(found["p"][at], found["v"][at]) if at.sum() >= FEWEST_EVENTS else weights[-1])
        tables.append(tuple(weights))
    return tuple(tables)


def score(found: dict, weights) -> dict:
    """Bits per character and per word without the memory and with these weights."""
    w = np.asarray(weights).ravel()[found["lengths"]]
    without = -np.log(np.maximum(found["p"], 1e-300)).sum()
    with_memory = -np.log(np.maximum((1 - w) * found["p"] + w * found["v"], 1e-300)).sum()
    figures = {}
    for name, nats in (("without_memory", without), ("with_memory", with_memory)):
        figures[name] = {"bits_per_char": round(nats / found["chars"] / LN2, 4),
                         "bits_per_word": round(nats / found["words"] / LN2, 3)}
    figures["memory_spoke"] = round(float(np.mean(w > 0)), 4)
    return figures


def fit(model, vocab: Vocabulary, texts: list[str], window: int, base: MemoryConfig | None = None,
        names_only: bool = True) -> MemoryConfig:
    """Weights fitted on `texts`; the cast settings are kept from `base` (or the defaults)."""
    found = events(model, vocab, texts, window, names_only)
    weights = fit_weights(found)
    base = base or MemoryConfig(weights=weights)
    return replace(base, weights=weights, names_only=names_only,
                   fitted={"window": window, "chars": found["chars"], **score(found, weights)})


def evaluate(model, vocab: Vocabulary, texts: list[str], config: MemoryConfig, window: int) -> dict:
    return {"window": window, "names_only": config.names_only,
            **score(events(model, vocab, texts, window, config.names_only), config.weights)}
