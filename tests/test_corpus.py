"""train/corpus.py: books read as prose (front matter, headings and hard wraps gone), blocked
paragraphs dropped, rare characters folded, bad corpora refused clearly."""
import pytest

from model.vocab import Normalisation, Vocabulary
from tests.conftest import three_paragraph_book
from train.corpus import CorpusError, read_corpus


PROSE = ("The owl flew over the hall. It was late, and the boys had gone to bed long ago. Nobody saw "
         "it but the old porter, who said nothing at all about it to anyone in the morning. ")
BOOK = f"""THE SCHOOL BOOK

by

A. WRITER


CONTENTS

    I. The Hall
   II. The Owl

[Illustration: THE OWL]


CHAPTER I

The Hall


{PROSE}It
was a hard-wrapped
line.

"Yes," said Harry.
  "No," said Ron.

[Illustration: HARRY AND RON]

{PROSE * 3}

THE END


PUBLISHERS' ADVERTISEMENTS

Fine books for boys, bound in cloth, price three shillings.
"""


def test_corpus_is_cleaned_and_reflowed(tmp_path):
    (tmp_path / "book.txt").write_text(BOOK)
    [book] = read_corpus([tmp_path], Normalisation(paragraphs=True))
    lines = book.text.split("\n")
    assert lines[0] == PROSE + "It was a hard-wrapped line."  # front matter and heading gone, reflowed
    assert lines[1] == '"Yes," said Harry. "No," said Ron.'  # only blank lines end a paragraph
    assert lines[2] == (PROSE * 3).strip()
    assert len(lines) == 3  # the caption, THE END and the advertisement are gone
    assert book.dropped["front_matter"] > 0 and book.dropped["back_matter"] > 0
    assert book.dropped["captions_and_headings"] > 0


def test_keep_line_breaks_cleans_the_same_words(tmp_path):
    (tmp_path / "book.txt").write_text(BOOK)
    [flowing] = read_corpus([tmp_path], Normalisation(paragraphs=True))
    [kept] = read_corpus([tmp_path], Normalisation(paragraphs=False))
    assert "It\nwas a hard-wrapped\nline." in kept.text
    assert kept.text.split() == flowing.text.split()  # bits per word compare across the two


def test_blocked_paragraphs_are_dropped(tmp_path):
    from model.safety import WordFilter

    (tmp_path / "a.txt").write_text(f"{PROSE}\n\nThe grumbleweed was here.\n\n{PROSE}")
    [f] = read_corpus([tmp_path], Normalisation(paragraphs=True), word_filter=WordFilter.of(["grumbleweed"]))
    assert "grumbleweed" not in f.text and f.text.count("owl") == 2
    assert f.dropped["blocked_words"] == len("The grumbleweed was here.")


def test_rare_characters_are_folded_or_dropped():
    vocab = Vocabulary.from_text("e" * 30 + "x" * 30 + "\u00e9" + "#", Normalisation(), min_count=25)
    assert vocab.chars == ("e", "x")
    assert vocab.fit("\u00e9x#") == ("ex", 1)


def test_corpus_text_is_already_normalised(tmp_path):
    [book] = read_corpus([three_paragraph_book(tmp_path)], Normalisation(paragraphs=True))
    assert book.text.count("\n") == 2  # three paragraphs, hard wraps gone
    assert Normalisation(paragraphs=True).apply(book.text) == book.text


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
