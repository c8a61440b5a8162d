"""model/critic.py and the sentence search it drives (model/generator.py), train/critic_fit.py."""
import json

import numpy as np
import pytest

from model.critic import Candidate, Critic, WordModel, broken_entries, broken_tags, flaws, other_quotes, strangers
from model.generator import GeneratorConfig, Scheduler, StoryRequest
from tests.conftest import BLOCKED, make_text
from tests.helpers import add, tell_all

WEIGHTS = {"gru_per_char": 0.5, "words_per_token": 0.4, "length_in_books": 0.5}
CAST = ("Harry Potter", "Severus Snape", "Diagon Alley", "the Sorting Hat", "Hogwarts", "the Hogwarts Express")


@pytest.fixture(scope="module")
def words():
    from train.critic_fit import count_words

    return count_words([make_text(400, seed=s) for s in range(3)] +
                       ["Harry said that the owl was old. The owl looked at Harry. " * 5,
                        "Down the alley, the sorting of the hat went on. " * 30])


@pytest.fixture(scope="module")
def critic(words):
    return Critic(words, WEIGHTS)


def test_the_word_model_knows_what_it_read_and_saves_whole(words, tmp_path):
    seen = words.ids("the owl looked".split())
    unseen = words.ids("the looked owl".split())
    context = words.ids(["said"])
    assert words.log_probs(seen, context).sum() > words.log_probs(unseen, context).sum()
    path = tmp_path / "critic.npz"
    words.save(path)
    again = WordModel.load(path)
    np.testing.assert_allclose(again.log_probs(seen, context), words.log_probs(seen, context))
    assert again.names == words.names and again.words == words.words


def test_a_name_is_a_class_so_the_cast_costs_no_more_than_a_known_name(words):
    context = words.ids("the owl looked at".split())
    cast = frozenset({"Crookshanks"})
    known = words.log_probs(words.ids(["Harry", "."], cast), context)
    stranger = words.log_probs(words.ids(["Crookshanks", "."], cast), context)
    np.testing.assert_allclose(known, stranger)


@pytest.mark.parametrize("sentence, broken", [
    ("He went to Diagon and back.", ["Diagon"]), ("The Sorting of Oz was there.", ["Sorting"]),
    ("He went to Diagone at once.", ["Diagone"]), ("They met in Diagon Alley.", []),
    ("Potter and Snape met.", []), ("Snape met the Sorting Hat.", []), ("The Hogwarts Express left Hogwarts.", []),
    ("Then the Weasleys came.", [])])
def test_broken_cast_entries(sentence, broken, words):
    found = broken_entries(sentence, CAST, words)
    assert [f.split()[0] for f in found] == broken, found


def test_a_broken_name_is_never_chosen_while_a_whole_one_is_there(critic):
    tale = "Harry walked along the street."
    candidates = [Candidate("He went to Diagon.", 0.0), Candidate("He went to Diagon Alley at last.", -40.0)]
    assert critic.choose(tale, candidates, CAST) == 1
    assert critic.choose(tale, candidates[::-1], CAST) == 0


@pytest.mark.parametrize("sentence, broken", [
    ('"No," said Hogwarts.', "a place or a thing speaks: said Hogwarts"),
    ('"No," said the Hogwarts Express.', "a place or a thing speaks: said Hogwarts Express"),
    ("And the Hogwarts said, 'Well?'", "a place or a thing speaks: Hogwarts said"),
    ('"Yes," said Madam.', "a title speaks without a name: said Madam"),
    ('"No," said Potter had done.', "the speaker tag runs on: said Potter had"),
    ("said the Dumbledore said", "the speaker tag runs on: said Dumbledore said"),
    ('"What?" asked Snape.', None), ('"Oh," said the Sorting Hat.', None), ('"Oh," said Madam Pomfrey.', None),
    ('"Yes," said Owl.', "an ordinary word speaks: said Owl"),  # "owl": common in lower case
    ("'Very well, Snape,' said Snape.", "the speaker calls himself by name: said Snape"),
    ("'Very well, Harry,' said Snape.", None),
    ('"Yes, McGonagall," said McGonagall.', "the speaker calls himself by name: said McGonagall"),
    ('"Well," said the Snape.', "a name takes 'the': said the Snape"), ('"Well," said the Potter twins.', None),
    ('"No," said the Professor.', None), ('"Yes," said Harry quietly.', None), ("He said to Hogwarts", None)])
def test_broken_speaker_tags(sentence, broken, words):
    assert broken_tags(sentence, CAST + ("Madam Pomfrey",), words) == ([broken] if broken else [])


def test_a_name_from_another_book_is_a_flaw_unless_the_tale_or_cast_holds_it(words):
    stranger = sorted(words.names - {w for entry in CAST for w in entry.split()})[0]
    assert strangers("Harry ran.", f"Then he met {stranger} at the gate.", CAST, words) == \
        [f"a name from another book: {stranger}"]
    assert strangers(f"Harry met {stranger}.", f"Then he saw {stranger} again.", CAST, words) == []  # the tale's
    assert strangers("Harry ran.", "Then he met Snape at the gate.", CAST, words) == []  # the cast's
    assert strangers("Harry ran.", f"{stranger} came.", CAST, words) == []  # opening a sentence: no name told


@pytest.mark.parametrize("tale, sentence, flawed", [
    ('Harry said, "Yes."', '"No," said Ron.', False), ('Harry said, "Yes."', "'No,' said Ron.", True),
    ("", "\"What do you want?' he asked.", True), ("", "Harry's owl and the students' hall.", False),
    ("'Yes,' said Harry.", "'It isn't,' said Ron.", False)])
def test_a_tale_keeps_to_one_kind_of_quotes(tale, sentence, flawed):
    assert bool(other_quotes(tale, sentence)) == flawed


def test_repeats_and_non_word_endings_are_flaws(words):
    assert flaws("the owl looked at the hall.", "And the owl looked at the door.", (), words)
    assert flaws("Harry ran.", "Then he saw the blorptastic", (), words)
    assert not flaws("Harry ran.", "Then he saw the castle.", (), words)
    for sentence, stutter in (("Then Snape of the Snape came.", "Snape of the Snape"), ("Lady Lady came.", "Lady Lady"),
                              ("So Harry and Harry ran.", "Harry and Harry")):
        assert f"a name said twice at once: {stutter}" in flaws("Harry ran.", sentence, (), words)
    assert not any("twice" in f for f in flaws("Harry ran.", "Mr Weasley and Mrs Weasley came.", (), words))


# -- the search --------------------------------------------------------------------------------
def write(engine, vocab, critic, requests, steps=16, width=4, max_batch=64):
    return tell_all(Scheduler(engine, vocab, steps_per_call=steps, critic=critic,
                              limits=GeneratorConfig(model=".", search_width=width, max_batch=max_batch)), requests)


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    from model.bundle import load_network
    from model.engine import FusedEngine, NumpyEngine

    bundle, network = load_network(tiny_bundle)
    return bundle.vocab, FusedEngine(network), NumpyEngine(network)


def test_the_same_seed_tells_the_same_story_with_search_on_whatever_its_company(tiny, critic):
    vocab, fused, _ = tiny
    requests = [StoryRequest("Harry", 300, 0.8, seed) for seed in range(6)]
    together, _ = write(fused, vocab, critic, requests)
    assert {width for _, _, width in together} == {4}
    alone = [write(fused, vocab, critic, [r])[0][0] for r in requests[:3]]
    assert alone == together[:3]
    plain, _ = write(fused, vocab, None, requests)  # no critic: no search, the story of before
    assert {width for _, _, width in plain} == {1}
    assert [t for t, *_ in plain] != [t for t, *_ in together]


@pytest.mark.slow
def test_every_engine_tells_the_same_searched_story(tiny, tiny_bundle, critic):
    vocab, fused, reference = tiny
    requests = [StoryRequest("Hermione", 200, 0.8, seed) for seed in range(3)]
    told = write(fused, vocab, critic, requests)[0]
    assert told == write(reference, vocab, critic, requests)[0]
    pytest.importorskip("keras")
    from model.bundle import load_network
    from model.engine import DeviceEngine

    device = DeviceEngine(load_network(tiny_bundle)[1], rows=16, steps=16)
    assert told == write(device, vocab, critic, requests, max_batch=12)[0]


def test_only_chosen_whole_sentences_are_streamed(tiny, critic):
    import re

    vocab, fused, _ = tiny
    stories, chunks = write(fused, vocab, critic, [StoryRequest("Ron", 400, 0.8, seed) for seed in range(4)])
    for (text, *_), streamed in zip(stories, chunks):
        assert text.startswith(streamed)
        assert re.search(r"[.!?][\"')]?\s$", streamed), streamed[-20:]  # a sentence ends each chunk


def test_the_width_narrows_under_load_and_widens_again(tiny, critic):
    vocab, fused, _ = tiny
    scheduler = Scheduler(fused, vocab, critic=critic, limits=GeneratorConfig(model=".", search_width=8, max_batch=16))
    add(scheduler, [(1, StoryRequest("Harry", 900, 0.8, 1))])
    assert scheduler.rows[0].search.story.width == 8
    add(scheduler, [(rid, StoryRequest("Ron", 1500, 0.8, rid)) for rid in range(2, 18)])
    assert {s.story.width for s in scheduler.searching if s.story.rid > 1} == {1} or \
        {row.width for row in scheduler.rows if row.rid > 1} == {1}
    done = {}
    while scheduler.active:
        done.update({rid: rest[-1] for kind, rid, _, *rest in scheduler.advance() if kind == "done"})
    assert done[1] < 8 and {done[rid] for rid in range(2, 18)} == {1}  # story 1 narrowed once the others came
    add(scheduler, [(99, StoryRequest("Harry", 100, 0.8, 1))])
    assert scheduler.searching[0].story.width == 8


@pytest.fixture(scope="module")
def weedy_critic(weedy_bundle):
    from train.critic_fit import count_words

    sentences = [f"Harry saw the {BLOCKED}.", "Snape looked at the castle.", "The owl flew over the hall."]
    return Critic(count_words([" ".join(sentences * 50)]), WEIGHTS)


def test_no_candidate_lets_a_blocked_word_through(weedy_bundle, weedy_critic):
    from model.bundle import load_network
    from model.engine import FusedEngine
    from model.safety import WordFilter

    bundle, network = load_network(weedy_bundle)
    requests = [StoryRequest("Harry saw the", 200, 1.5, seed, blocked_words=(BLOCKED,)) for seed in range(40)]
    stories, streamed = write(FusedEngine(network), bundle.vocab, weedy_critic, requests)
    words = WordFilter.of([BLOCKED])
    assert not any(words.find(text) for text, *_ in stories)
    assert not any(words.find(text) for text in streamed)
    assert sum(filtered for _, filtered, _ in stories) > 0  # candidates did want it


def test_fit_critic_writes_a_critic_fitted_to_judged_pairs(tiny_bundle, tiny_corpus, tmp_path):
    import shutil

    import cli

    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    pairs = tmp_path / "pairs.jsonl"
    assert cli.main(["fit-critic", "--model", str(bundle), "--write-pairs", str(pairs), "--count", "30",
                     "--json"]) == 0
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(rows) == 30 and all(r["a"] and r["b"] and r["tale"] for r in rows)
    # a reader who likes short sentences
    (tmp_path / "judged-1.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "better": "a" if len(r["a"]) < len(r["b"]) else "b"}) + "\n" for r in rows))
    assert cli.main(["fit-critic", "--model", str(bundle), "--corpus", str(tiny_corpus), "--pairs", str(pairs),
                     "--json"]) == 0
    fitted = Critic.load(bundle)
    assert fitted.weights["length_in_books"] != 0
    report = json.loads((bundle / "critic.json").read_text())
    assert report["fit"]["judged_pairs"] == 30 and report["fit"]["agrees_with_readers"] > 0.5
