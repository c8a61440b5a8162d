"""Issue 8: text as prose, cleaning, held-out books, bits per word, quill eval, recipes, warm starts."""
import json

import numpy as np
import pytest

from model.vocab import Normalisation, Vocabulary
from train.corpus import read_corpus

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


def test_rare_characters_are_folded_or_dropped():
    vocab = Vocabulary.from_text("e" * 30 + "x" * 30 + "\u00e9" + "#", Normalisation(), min_count=25)
    assert vocab.chars == ("e", "x")
    assert vocab.fit("\u00e9x#") == ("ex", 1)


def test_epoch_order_covers_every_window_once_per_pass():
    from train.loop import epoch_order

    epochs = [epoch_order(10, 4, e, seed=3) for e in range(5)]  # 20 windows: two passes
    seen = np.concatenate(epochs)
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert (epoch_order(10, 4, 2, seed=3) == epochs[2]).all()  # a resumed run takes the same windows


def test_schedule_sets_each_epochs_rate():
    from train.config import TrainConfig

    config = TrainConfig(learning_rate=0.5, schedule=((2, 0.01), (3, 0.001))).check()
    assert [config.learning_rate_at(e) for e in range(5)] == [0.01, 0.01, 0.001, 0.001, 0.001]
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule=((3, 0.01), (2, 0.001))).check()


@pytest.mark.slow
def test_held_out_books_and_bits_per_word_on_the_card(tiny_corpus, tiny_config, tmp_path):
    from dataclasses import replace

    from train.loop import train

    out = tmp_path / "held"
    train([tiny_corpus], out, replace(tiny_config, epochs=1, holdout_books=("two.txt",)), log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert [c["file"] for c in card["corpus"]] == ["one.txt"]
    unseen = card["unseen_books"]
    assert unseen["files"] == ["two.txt"] and unseen["chars"] > 1000
    assert unseen["bits_per_word"] == pytest.approx(unseen["bits_per_char"] * unseen["chars"] / unseen["words"],
                                                    rel=5e-3)
    assert 3 < unseen["bits_per_word"] < 60 and card["val_bits_per_word"] > card["val_bpc"]
    with pytest.raises(ValueError, match="not in the corpus: nope.txt"):
        train([tiny_corpus], tmp_path / "x", replace(tiny_config, holdout_books=("nope.txt",)))


@pytest.mark.slow
def test_quill_eval_reports_bits_per_char_and_word(tiny_bundle, tiny_corpus, capsys, tmp_path):
    from cli import main

    assert main(["eval", "--model", str(tiny_bundle), "--corpus", str(tiny_corpus), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(tiny_bundle), "--corpus", str(tiny_corpus), "--part", "val", "--json"]) == 0
    val = json.loads(capsys.readouterr().out)
    card = json.loads((tiny_bundle / "card.json").read_text())
    assert val["chars"] < whole["chars"] / 5 and whole["files"] == 2
    # The validation part is what training validated on (fresh-state windows of the same length).
    assert val["bits_per_char"] == pytest.approx(card["val_bpc"], abs=0.05)
    for result in (whole, val):
        assert result["bits_per_word"] == pytest.approx(
            result["bits_per_char"] * result["chars"] / result["words"], rel=5e-3)
    assert main(["eval", "--model", str(tiny_bundle), "--corpus", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_quill_eval_window_gives_the_model_more_context(tiny_bundle, tiny_corpus, capsys):
    from cli import main

    base = ["eval", "--model", str(tiny_bundle), "--corpus", str(tiny_corpus), "--json"]
    assert main(base) == 0
    short = json.loads(capsys.readouterr().out)
    assert main(base + ["--window", "400"]) == 0
    long = json.loads(capsys.readouterr().out)
    assert (short["window"], long["window"]) == (json.loads((tiny_bundle / "card.json").read_text())
                                                 ["hyperparameters"]["seq_length"], 400)
    # Fewer characters are predicted from a fresh state, so each costs fewer bits on average.
    assert long["bits_per_char"] < short["bits_per_char"]
    assert main(base + ["--window", "1"]) == 2
    assert "--window must be at least 2 characters, not 1" in capsys.readouterr().err


@pytest.mark.slow
def test_recipe_file_trains_with_its_corpus_and_options(tiny_corpus, tmp_path, capsys):
    from cli import main

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'corpus = ["{tiny_corpus}"]\nseq_length = 40\nbatch_size = 32\nembedding = 8\n'
                      f'units = [16]\nepochs = 3\nschedule = [[1, 0.01], [3, 0.002]]\nmax_steps = 4\n')
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "r"), "--epochs", "2"]) == 0
    card = json.loads((tmp_path / "r" / "card.json").read_text())
    assert card["hyperparameters"]["units"] == [16] and card["hyperparameters"]["epochs"] == 2
    assert card["recipe"] == str(recipe)  # the card points to the file that reproduces it
    assert card["history"][0]["learning_rate"] == pytest.approx(0.01)
    # A recipe's run resumes with the same recipe (its lists are the saved config's tuples).
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "r"), "--resume", "--epochs", "2"]) == 0
    recipe.write_text("colour = 3\n")
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "bad")]) == 2
    assert "unknown training option(s): colour" in capsys.readouterr().err


def test_shipped_recipe_names_real_options():
    from pathlib import Path

    from train.config import TrainConfig, read_recipe

    for path in Path("train/recipes").glob("*.toml"):
        options, corpus = read_recipe(path)
        assert corpus and TrainConfig.from_dict(options).check()


def test_init_from_a_bundle_starts_from_its_weights(tiny_bundle, tiny_config, tmp_path):
    from model.bundle import load_bundle
    from model.network import build_model
    from train.loop import init_weights

    source = load_bundle(tiny_bundle)
    vocab = Vocabulary(source.vocab.chars[1:] + ("\u00a3",), source.vocab.normalisation)  # one lost, one new
    model = build_model(len(vocab), **tiny_config.architecture())
    info = init_weights(model, tiny_bundle, vocab)
    assert (info["chars_matched"], info["chars_new"]) == (len(vocab) - 1, 1)
    for name in ("gru_0", "gru_1"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), source.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    ours, theirs = model.get_layer("embedding").get_weights()[0], source.model.get_layer("embedding").get_weights()[0]
    np.testing.assert_array_equal(ours[:-1], theirs[1:])  # rows follow their characters
    bias = model.get_layer("logits").get_weights()[1]
    assert bias[-1] == source.model.get_layer("logits").get_weights()[1].min()
    wider = build_model(len(vocab), tiny_config.embedding, (64, 32))
    with pytest.raises(ValueError, match="architecture must match|has shapes"):
        init_weights(wider, tiny_bundle, vocab)
