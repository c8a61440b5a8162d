"""train/dataset.py: training windows, shifted by one, never crossing into validation, with the
paragraph breaks in them."""
from dataclasses import replace

import numpy as np

from model.vocab import Normalisation, Vocabulary
from tests.conftest import three_paragraph_book
from train.corpus import read_corpus, split
from train.dataset import build, windows


def test_windows_are_shifted_by_one():
    ids = np.arange(21, dtype=np.int32)
    x, y = windows(ids, 5)
    assert x.shape == y.shape == (4, 5)
    assert (y == x + 1).all()
    assert x[1, 0] == 5  # consecutive windows share the seam character


def test_no_window_crosses_into_validation(tmp_path):
    (tmp_path / "a.txt").write_text("ab" * 950 + "xy" * 50)
    (tmp_path / "b.txt").write_text("cd" * 950 + "xy" * 50)
    files = read_corpus([tmp_path], Normalisation(paragraphs=True))
    assert split(files[0].text, 0.05)[1] == "xy" * 50
    vocab = Vocabulary.from_text("".join(f.text for f in files), Normalisation(paragraphs=True))
    (tx, ty), (vx, vy), train_chars, val_chars = build(files, vocab, 10, 0.05)
    held_out = vocab.encode("xy")
    assert not np.isin(tx, held_out).any() and not np.isin(ty, held_out).any()
    assert np.isin(vx, held_out).all() and np.isin(vy, held_out).all()
    assert (train_chars, val_chars) == (3800, 200)


def test_training_windows_hold_the_paragraph_breaks(tmp_path, tiny_config):
    from train import dataset
    from train.loop import load_corpus

    config = replace(tiny_config, seq_length=20, val_fraction=0.1)
    vocab, files, _, _ = load_corpus([three_paragraph_book(tmp_path)], config, log=lambda *a: None)
    (train_x, train_y), _, _, _ = dataset.build(files, vocab, config.seq_length, config.val_fraction)
    assert (train_y == vocab.index["\n"]).sum() == 2  # both breaks are targets the model learns
