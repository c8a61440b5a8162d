"""bench/: what the benchmarks measure, on known text and tiny bundles (their figures are the
benchmarks' own business, not the tests')."""
import json
import subprocess

import pytest


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
@pytest.mark.parametrize("option, name", [("check_words", "filter"), ("memory", "memory")])
def test_bench_generate_puts_each_switch_on_its_own_side(remembering_bundle, option, name, monkeypatch):
    """A generator whose switch is on is made slower on purpose: the side-by-side figures must say so,
    at one request and at 64 at once, and not mix up the sides."""
    import asyncio

    import bench.generate
    from model.client import StoryGenerator

    class SlowerWhenOn(StoryGenerator):
        async def generate(self, request):
            story = await super().generate(request)
            if getattr(self.config, option):
                await asyncio.sleep(0.3)
            return story

    monkeypatch.setattr(bench.generate, "StoryGenerator", SlowerWhenOn)
    result = asyncio.run(bench.generate._side_by_side(remembering_bundle, 100, option, rounds=2, wide_rounds=1))
    assert result[f"one_request_{name}_on_vs_off"] < 0.5
    assert result[f"aggregate_64_{name}_on_vs_off"] < 0.9
    assert result[f"one_request_{name}_on_chars_per_s"] < result[f"one_request_{name}_off_chars_per_s"]


def test_bench_generate_times_the_memory_in_the_engine_at_every_pinned_thread_count(remembering_bundle):
    import numba

    from bench.generate import memory_cost_in_the_engine

    result = memory_cost_in_the_engine(remembering_bundle, 64, rounds=1)
    assert set(result) == {f"engine_{rows}_rows_{threads}_threads_memory_on_vs_off"
                           for rows in (1, 64) for threads in {1, numba.config.NUMBA_NUM_THREADS}}
    assert all(0 < ratio < 10 for ratio in result.values())


def test_bench_generate_times_the_thread_chooser_against_each_count_pinned(remembering_bundle):
    import numba

    from bench.generate import threads_chosen_against_pinned

    result = threads_chosen_against_pinned(remembering_bundle, 64, rounds=2)
    ways = ["chosen", *(f"pinned_{n}" for n in {1, numba.config.NUMBA_NUM_THREADS})]
    assert set(result) == {f"one_row_{way}_threads_chars_per_s" for way in ways} | {"one_row_chosen_vs_best_pinned"}


@pytest.mark.slow
def test_bench_versus_runs_a_revision_beside_this_checkout(remembering_bundle):
    """HEAD against this working tree: two drivers in two checkouts, taking turns."""
    from bench.versus import ROOT, bench_versus

    result = bench_versus("HEAD", remembering_bundle, length=100, rounds=1, wide_rounds=1)
    for label in ("one_request", "aggregate_64"):
        assert result[f"{label}_this_chars_per_s"] > 0 and result[f"{label}_earlier_chars_per_s"] > 0
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert len(worktrees.splitlines()) == 1  # the earlier checkout is gone again
