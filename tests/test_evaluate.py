"""train/evaluate.py and `quill eval`: bits per character and per word, on held-out books and at a
story's length, paragraph breaks scored."""
import json

import pytest

from tests.conftest import three_paragraph_book


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


def test_eval_scores_the_paragraph_breaks(tmp_path, tiny_bundle, capsys):
    import cli

    three_paragraph_book(tmp_path)
    assert cli.main(["eval", "--corpus", str(tmp_path), "--model", str(tiny_bundle), "--part", "all", "--window", "20",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["paragraph_breaks"] == 2
    assert result["story_window"]["window"] == 2000 and result["story_window"]["paragraph_breaks"] == 1
