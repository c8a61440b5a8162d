"""Windows for training: input = chars [i, i+L), target = chars [i+1, i+L+1), never across files
and never across the train/validation cut."""
from __future__ import annotations

import numpy as np

from model.vocab import Vocabulary
from train.corpus import CorpusError, CorpusFile, split


def windows(ids: np.ndarray, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows of seq_length+1 chars, sharing one char at the seam so that every
    transition in the text is a training target exactly once."""
    n = (len(ids) - 1) // seq_length
    if n <= 0:
        empty = np.zeros((0, seq_length), np.int32)
        return empty, empty
    idx = np.arange(n)[:, None] * seq_length + np.arange(seq_length + 1)[None, :]
    chunk = ids[idx]
    return chunk[:, :-1], chunk[:, 1:]


def build(files: list[CorpusFile], vocab: Vocabulary, seq_length: int, val_fraction: float):
    """(train_x, train_y), (val_x, val_y), train chars, val chars."""
    parts = {"train": ([], []), "val": ([], [])}
    sizes = {"train": 0, "val": 0}
    for f in files:
        for name, text in zip(("train", "val"), split(f.text, val_fraction)):
            x, y = windows(vocab.encode(text), seq_length)
            parts[name][0].append(x)
            parts[name][1].append(y)
            sizes[name] += len(text)
    out = {}
    for name, (xs, ys) in parts.items():
        x, y = np.concatenate(xs), np.concatenate(ys)
        if not len(x):
            raise CorpusError(f"the corpus is too small: its {name} text ({sizes[name]} chars) holds no "
                              f"window of {seq_length + 1} chars; lower --seq-length or add text"
                              + (" or raise --val-fraction" if name == "val" else ""))
        out[name] = (x, y)
    return out["train"], out["val"], sizes["train"], sizes["val"]
