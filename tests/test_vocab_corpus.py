import numpy as np
import pytest

from model.vocab import Normalisation, UnknownCharacters, Vocabulary
from train.corpus import CorpusError, read_corpus, split
from train.dataset import build, windows


def test_vocab_round_trip_and_json():
    vocab = Vocabulary.from_text("Harry's wand.\n", Normalisation(paragraphs=True))
    ids = vocab.encode("wand. Harry")
    assert vocab.decode(ids) == "wand. Harry"
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab


def test_normalisation_folds_line_endings_and_typography():
    assert Normalisation().apply("\u201cYes,\u201d he said\u2014it\u2019s\r\nfine\u2026\r") == \
        '"Yes," he said--it\'s\nfine...\n'
    assert Normalisation(typography=False).apply("\u201cYes\u201d\r\n") == "\u201cYes\u201d\n"


def test_normalised_folds_known_equivalents_and_unknown_names_the_rest():
    vocab = Vocabulary.from_text("Harry's \"wand\" e", Normalisation())
    assert vocab.normalised("Harry\u2019s \u201cwand\u201d") == "Harry's \"wand\""
    assert vocab.normalised("\u00e9") == "e"  # an accent the model lacks folds to its plain letter
    unknown = vocab.unknown(vocab.normalised("Harry \u00df\u00df \U0001f409"))
    assert unknown == ["\u00df", "\U0001f409"]
    assert "'\u00df'" in str(UnknownCharacters(unknown))
    # What folding changed, to tell the member: each letter once, in order; the unknown ones are not folds.
    assert vocab.folds("Harry \u00df \U0001f409") == ()  # known letters, and ones with no plain form
    vocab = Vocabulary.from_text("Harry Potter", Normalisation())
    assert vocab.folds("H\u00e0rr\u00ff P\u00f6tt\u00e8r \u00e0") == ("\u00e0\u2192a", "\u00ff\u2192y", "\u00f6\u2192o",
                                                                        "\u00e8\u2192e")


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


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BAD_CORPORA = {
    "missing path": (lambda d: d / "missing.txt", "does not exist"),
    "empty file": (lambda d: _write(d / "empty.txt", b""), "is empty"),
    "binary file": (lambda d: _write(d / "bin.txt", b"\x89PNG\x00\x00\x01"), "looks binary"),
    "wrong encoding": (lambda d: _write(d / "latin.txt", "caf\u00e9 au lait".encode("latin-1")),
                       "latin.txt is not valid utf-8: byte 3"),
    "folder with no .txt": (lambda d: _write(d / "sub" / "notes.md", b"x").parent, "no .txt"),
}


@pytest.mark.parametrize("case", BAD_CORPORA)
def test_bad_corpus_gives_clear_error_and_leaves_no_output(tmp_path, case):
    from train.config import TrainConfig
    from train.loop import train

    make, message = BAD_CORPORA[case]
    bad = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=message):
        train([bad], out, TrainConfig(epochs=1))
    assert not out.exists()


def test_wrong_encoding_can_be_read_with_encoding_option(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    [f] = read_corpus([tmp_path], Normalisation(), encoding="latin-1")
    assert f.text == "caf\u00e9 au lait"
