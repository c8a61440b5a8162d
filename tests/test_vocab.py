"""model/vocab.py: the vocabulary, its file, and the one normalisation step (idempotent, so
paragraph breaks reach training, evaluation and continuations)."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.vocab import TYPOGRAPHY, Normalisation, UnknownCharacters, Vocabulary

RULES = [Normalisation(typography, paragraphs) for typography in (True, False) for paragraphs in (True, False)]
# Prose, dialogue, every kind of break and space, and the typography that folds.
PIECES = st.sampled_from(["Harry", "said", "Ron", ".", ",", '"Yes,"', "'", " ", "  ", "\t", "\n", "\n\n",
                          "\n \n", "\r\n", "\r", "\u2028", "\x0c", *TYPOGRAPHY])
TEXTS = st.lists(PIECES, max_size=40).map("".join)


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


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_every_rule_is_idempotent(text):
    for rule in RULES:
        once = rule.apply(text)
        assert rule.apply(once) == once, rule


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_reading_form_goes_back_to_the_same_model_text(text):
    for rule in RULES:
        model_text = rule.apply(text)
        reading = rule.for_reading(model_text)
        assert rule.from_reading(reading) == model_text
        assert rule.apply(reading) == model_text  # a member who pastes a tale back types the same prompt


def test_a_members_line_breaks_are_paragraphs():
    rule = Normalisation(paragraphs=True)
    assert rule.apply('It\nwas   hard\n\n\n"Yes," he said.\n') == 'It\nwas hard\n"Yes," he said.\n'
    assert rule.apply("Once upon a time. ") == "Once upon a time. "  # a word left open
    assert rule.apply("\n  Ron laughed.") == "\nRon laughed."  # a line that opens a paragraph
    assert rule.apply(" \n \t ") == ""
    assert Normalisation(paragraphs=False).apply("It\r\nwas\n\nwrapped.\n") == "It\nwas\n\nwrapped.\n"


def test_the_rule_is_recorded_and_prompts_follow_it():
    vocab = Vocabulary.from_text("ab c\n", Normalisation(paragraphs=True))
    data = json.loads(vocab.to_json())
    assert data["normalisation"]["line_breaks"] == "paragraphs"
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    assert vocab.normalised("a\nb\n\n c") == "a\nb\nc"  # a member's line break is a paragraph break
    assert vocab.normalisation.for_reading("a b\nc") == "a b\n\nc"  # a blank line between paragraphs
    old = {"chars": ["a", "\n"], "normalisation": {"line_endings": "lf", "typography": True}}
    assert Vocabulary.from_json(json.dumps(old)).normalisation == Normalisation(True, False)  # v1 bundles
    with pytest.raises(ValueError, match="line_breaks"):
        Normalisation.from_dict({"line_breaks": "sometimes"})
