"""Issue 16: one normalisation step, idempotent, so paragraph breaks reach training, evaluation and
continuations."""
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.vocab import TYPOGRAPHY, Normalisation
from train.corpus import read_corpus

RULES = [Normalisation(typography, paragraphs) for typography in (True, False) for paragraphs in (True, False)]
# Prose, dialogue, every kind of break and space, and the typography that folds.
PIECES = st.sampled_from(["Harry", "said", "Ron", ".", ",", '"Yes,"', "'", " ", "  ", "\t", "\n", "\n\n",
                          "\n \n", "\r\n", "\r", "\u2028", "\x0c", *TYPOGRAPHY])
TEXTS = st.lists(PIECES, max_size=40).map("".join)


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


def three_paragraph_book(folder, paragraphs=3):
    text = "\n\n".join(f"Paragraph {i}. " + "The owl flew over the hall and the boys\nwatched it go. " * 20
                       for i in range(paragraphs)) + "\n"
    (folder / "book.txt").write_text(text, encoding="utf-8")
    return folder


def test_corpus_text_is_already_normalised(tmp_path):
    [book] = read_corpus([three_paragraph_book(tmp_path)], Normalisation(paragraphs=True))
    assert book.text.count("\n") == 2  # three paragraphs, hard wraps gone
    assert Normalisation(paragraphs=True).apply(book.text) == book.text


def test_training_windows_hold_the_paragraph_breaks(tmp_path, tiny_config):
    from train import dataset
    from train.loop import load_corpus

    config = replace(tiny_config, seq_length=20, val_fraction=0.1)
    vocab, files, _, _ = load_corpus([three_paragraph_book(tmp_path)], config, log=lambda *a: None)
    (train_x, train_y), _, _, _ = dataset.build(files, vocab, config.seq_length, config.val_fraction)
    assert (train_y == vocab.index["\n"]).sum() == 2  # both breaks are targets the model learns


def test_eval_scores_the_paragraph_breaks(tmp_path, tiny_bundle, capsys):
    import cli

    three_paragraph_book(tmp_path)
    assert cli.main(["eval", "--corpus", str(tmp_path), "--model", str(tiny_bundle), "--part", "all", "--window", "20",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["paragraph_breaks"] == 2
    assert result["story_window"]["window"] == 2000 and result["story_window"]["paragraph_breaks"] == 1



def test_reader_measures_on_known_text():
    from bench.story import measure, repeated_4gram_share, sentence_words

    assert repeated_4gram_share("a b c d a b c d".split()) == (1, 5)
    assert sentence_words('"Yes," said Ron. It was late! Was it?') == [3, 3, 2]
    story = "The owl flew.\nThe owl flew. Zzkq went home."
    figures = measure([story], {"the", "owl", "flew", "went", "home"})
    assert figures["paragraph_breaks_per_1000_chars"] == round(1000 / len(story), 2)
    assert figures["real_word_rate"] == round(8 / 9, 4) and figures["mean_sentence_words"] == 3.0


def test_name_and_cast_measures_on_known_text():
    from bench.story import capitalised_mid_sentence, copies_itself, measure, top_name_per_100_words

    assert capitalised_mid_sentence('"Yes," said Ron. Then I met Snape.\nHe left.') == (["Ron", "Snape"], 9)
    assert copies_itself("x" * 31) and not copies_itself("abcdefghijklmnopqrstuvwxyz0123456789")
    assert top_name_per_100_words("Then Snape met Snape and Snape and Ron went home now", set()) == 300 / 11
    stories = ["then Snape saw the wand and Hogwarts.", "the owl flew over the hall home."]
    figures = measure(stories, {"the"}, ["Snape", "Harry"], ("Hogwarts",), [("Snape",), ("Harry",)])
    assert figures["name_recall"] == 0.5 and figures["stories_naming_the_start"] == "1 of 2"
    assert figures["cast_presence"] == 1.0  # "wand" and "Hogwarts"; "owl" is a wizarding word too
    assert figures["cast_per_1000_words"] == round(1000 * 3 / 14, 1)


@pytest.mark.slow
def test_bench_story_compares_bundles_on_the_same_stories(tiny_bundle, remembering_bundle, tiny_corpus, capsys):
    import cli

    assert cli.main(["bench", "story", "--model", str(remembering_bundle), "--against", str(tiny_bundle),
                     "--corpus", str(tiny_corpus), "--starts", "Harry", "Snape looked", "The owl", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stories"] == 9 and result["starts"] == 3 and result["stories_whose_start_names_someone"] == 6
    assert 3 < result["books"]["paragraph_breaks_per_1000_chars"] < 30  # the tiny corpus breaks every 5 sentences
    off, on, other = result["models"]  # memory off and on; the bundle without a memory, off only
    assert (off["memory_and_cast"], on["memory_and_cast"], other["memory_and_cast"]) == (False, True, False)
    timing = ("bundle", "seconds_per_story_median")
    assert {k: v for k, v in off.items() if k not in timing} == {k: v for k, v in other.items() if k not in timing}
    for figures in (off, on):  # the same starts and seeds: the same stories, when the memory is off
        assert 0 < figures["real_word_rate"] <= 1 and 0 <= figures["repeated_4gram_share"] <= 1
        assert 0 <= figures["name_recall"] <= 1 and 0 <= figures["copying_30_chars"] <= 1


@pytest.mark.slow
def test_bench_generate_times_the_filter_and_the_memory_on_and_off_side_by_side(remembering_bundle):
    import asyncio

    from bench.generate import _side_by_side

    for option, name in (("check_words", "filter"), ("memory", "memory")):
        result = asyncio.run(_side_by_side(remembering_bundle, 100, option, rounds=2, wide_rounds=1))
        for label in ("one_request", "aggregate_64"):
            on, off = result[f"{label}_{name}_on_chars_per_s"], result[f"{label}_{name}_off_chars_per_s"]
            assert on > 0 and off > 0
            assert result[f"{label}_{name}_on_vs_off"] == pytest.approx(on / off, rel=0.01)

def test_bench_generate_times_the_memory_in_the_engine_at_pinned_thread_counts(remembering_bundle):
    from bench.generate import memory_cost_in_the_engine

    result = memory_cost_in_the_engine(remembering_bundle, 64, rounds=1)
    assert {key.split("_rows_")[0] for key in result} == {"engine_1", "engine_64"}
    assert all(ratio > 0 for ratio in result.values())
