"""The tale's memory (model.memory) and the cast: the rule, its three engines, fitting, and stories."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from model import kernels
from model.memory import (LONGEST, LOWER, UPPER, Memory, MemoryConfig, feed_rows, mix_rows, names_in, new_rows,
                          predict_rows)

CHARS = list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,'\n")


def config(weight=0.6, **changes) -> MemoryConfig:
    return MemoryConfig(weights=(tuple([0.0] + [weight] * LONGEST),) * 2, **changes)


def encode(text: str) -> np.ndarray:
    return np.array([CHARS.index(c) for c in text], np.int64)


def rows_for(memory, texts, casts=None):
    casts = casts or [()] * len(texts)
    return new_rows(memory, [encode(t) for t in texts], [[encode(e) for e in cast] for cast in casts],
                    np.zeros((len(texts), len(CHARS))))


def brute_matches(held: list[int], memory: Memory) -> list[int]:
    """For each earlier end j: how many characters up to j equal the text's end (a separator
    matches one non-letter and ends the count), counted up to LONGEST."""
    letters = {UPPER, LOWER}
    end, out = len(held) - 1, []
    for j in range(end):
        n = 0
        while n < LONGEST and j - n >= 0:
            a, b = held[j - n], held[end - n]
            if a == memory.separator and memory.classes[b] not in letters:
                n += 1
                break
            if a != b:
                break
            n += 1
        out.append(n)
    return out


def test_match_lengths_are_the_longest_common_suffixes():
    memory = Memory(config(), CHARS)
    rng = np.random.default_rng(0)
    alphabet = "ab A.'"
    for _ in range(20):
        text = "".join(rng.choice(list(alphabet), 60))
        rows = rows_for(memory, [text[:30]], [("Ab a", "bA")])  # the numba feed
        for c in text[30:]:  # then the numpy one
            rows = feed_rows(np, memory, rows, encode(c))
            length = int(rows.length[0])
            assert rows.matches[0, :length - 1].tolist() == brute_matches(rows.history[0, :length].tolist(), memory)


@pytest.mark.parametrize("names_only", [True, False])
def test_the_one_row_kernels_are_the_batch_rule(names_only):
    memory = Memory(config(0.4, names_only=names_only, name_share=0.7), CHARS)
    rng = np.random.default_rng(1)
    texts = ["Then Harry Potter met Harry", "said Hermione and Herm", "the owl, the Owl. The ow", "A"]
    rows = rows_for(memory, texts, [("Harry Potter", "Hermione"), ("Hermione",), (), ("Albus",)])
    rows = rows._replace(initials=rng.random((4, len(CHARS))))
    for step in range(40):
        logits = rng.normal(size=(4, len(CHARS))) * 3
        logits[rng.random(logits.shape) < 0.1] = -np.inf
        p = rng.random((4, len(CHARS)))
        following, weight, name_start = predict_rows(np, memory, rows)
        mixed = mix_rows(np, memory, p, logits, following, weight, name_start, rows.initials)
        for b in range(4):
            one = kernels.predict_row(rows.history[b], rows.matches[b], rows.length[b], rows.run_start[b],
                                      memory.classes, memory.weights, names_only, memory.name_weight)
            assert (one[1], one[2]) == (weight[b], name_start[b])
            assert one[1] == 0 or one[0] == following[b]  # a silent memory predicts nothing
            row_p = p[b].copy()
            kernels.mix_row(row_p, logits[b].astype(np.float32), one[0], one[1], one[2], rows.initials[b],
                            memory.classes, memory.name_share)
            np.testing.assert_allclose(row_p, mixed[b], rtol=1e-5, atol=1e-9)
        ids = rng.integers(0, len(CHARS), 4)
        fed = feed_rows(np, memory, rows, ids)
        for b in range(4):
            history, matches = rows.history[b].copy(), rows.matches[b].copy()
            length, run_start = kernels.feed_row(history, matches, rows.length[b], rows.run_start[b], ids[b],
                                                 memory.classes, memory.separator)
            assert (length, run_start) == (fed.length[b], fed.run_start[b])
            np.testing.assert_array_equal(matches, fed.matches[b])
            np.testing.assert_array_equal(history, fed.history[b])
        rows = fed


def test_names_are_finished_and_end_their_word_but_entries_do_not_run_on():
    memory = Memory(config(0.5), CHARS)
    cast = ("Sirius Black", "Remus Lupin", "Hogwarts")
    index = {c: i for i, c in enumerate(CHARS)}

    def predict(text):
        following, weight, name_start = predict_rows(np, memory, rows_for(memory, [text], [cast]))
        ends = memory.classes[following[0]] not in (LOWER, UPPER)  # a non-letter or a separator: the word ends
        return ("end" if ends else CHARS[following[0]]), weight[0], name_start[0]

    assert predict("then the dog saw Si") == ("r", memory.name_weight, False)  # a name begun mid-sentence
    assert predict("then the dog saw Sirius") == ("end", memory.name_weight, False)  # ends its word
    assert predict("then the dog saw Sirius ")[:2] == ("B", 0.5)  # the next word of the entry, fitted weight
    assert predict("then the dog saw Sirius Black ")[1] == 0.0  # not on into "Remus Lupin"
    assert predict("Then the")[1] == 0.0  # lower-case prose: the model's own
    assert predict("Dog. Hog")[1] == 0.5  # a sentence's first word: the fitted weight only
    assert predict("then the dog saw ")[2]  # a name may begin here
    p = np.full((1, len(CHARS)), 1.0 / len(CHARS))
    logits = np.zeros((1, len(CHARS)))
    mixed = mix_rows(np, memory, p, logits, np.array([index["r"]]), np.array([0.9]), np.array([False]),
                     np.zeros((1, len(CHARS))))[0]
    assert mixed[index["r"]] == pytest.approx(0.1 / len(CHARS) + 0.9)
    ended = mix_rows(np, memory, p, logits, np.array([memory.separator]), np.array([0.9]), np.array([False]),
                     np.zeros((1, len(CHARS))))[0]
    letters = np.isin(memory.classes[:len(CHARS)], (LOWER, UPPER))
    assert ended[letters].sum() == pytest.approx(0.1 * letters.mean())
    logits[0, index["r"]] = -np.inf  # ruled out (a start's whole word, the filter): the memory cannot bring it back
    masked = mix_rows(np, memory, p, logits, np.array([index["r"]]), np.array([0.9]), np.array([False]),
                      np.zeros((1, len(CHARS))))[0]
    np.testing.assert_allclose(masked, p[0])


def test_a_name_start_keeps_the_capitals_odds_and_gives_the_initials_their_share():
    memory = Memory(config(0.5, name_share=0.6), CHARS)
    capitals = memory.classes[:len(CHARS)] == UPPER
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, len(CHARS)))
    p = np.exp(logits / 0.5)
    p /= p.sum()  # a low temperature's distribution: fewer capitals than at 1
    initials = np.zeros((1, len(CHARS)))
    initials[0, CHARS.index("S")] = 1.0
    mixed = mix_rows(np, memory, p, logits, np.array([0]), np.array([0.0]), np.array([True]), initials)[0]
    at_one = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert mixed[capitals].sum() == pytest.approx(at_one[capitals].sum())
    own_s = p[0, CHARS.index("S")] / p[0, capitals].sum()
    assert mixed[CHARS.index("S")] == pytest.approx(at_one[capitals].sum() * (0.4 * own_s + 0.6))


def test_the_starts_names_are_found_and_outrank_the_cast():
    cast = ("Harry Potter", "the Great Hall")
    assert names_in("Hermione opened the book and", cast) == ["Hermione"]
    assert names_in("Harry Potter", cast) == ["Harry", "Potter"]  # everyday words, but the cast's
    assert names_in("Once upon a time", cast) == [] and names_in('"Yes," said Ron.', ()) == ["Ron"]
    from model.memory import initials_of

    memory = Memory(config(start_weight=40.0), CHARS)
    shares = initials_of(memory, {c: i for i, c in enumerate(CHARS)}, ["Snape"], ("Harry Potter", "Hagrid"))
    assert shares[CHARS.index("S")] == pytest.approx(40 / 42) and shares.sum() == pytest.approx(1.0)


def test_fit_weight_finds_the_likeliest_mixture():
    from train.memory_fit import fit_weight

    p = np.full(1000, 0.5)
    v = np.r_[np.ones(800), np.zeros(200)]
    assert fit_weight(p, v) == pytest.approx(0.6, abs=1e-3)  # 0.8 / (1 + w) = 0.2 / (1 - w)
    assert fit_weight(p, np.zeros(1000)) == 0.0 and fit_weight(p, np.ones(1000)) == 0.999


# -- bundles, engines and stories ----------------------------------------------------------------


@pytest.mark.slow
def test_fit_memory_writes_memory_json_and_eval_scores_it(remembering_bundle, tiny_bundle, tiny_corpus, capsys):
    import cli
    from model.bundle import read_metadata

    capsys.readouterr()
    memory = read_metadata(remembering_bundle).memory
    assert memory is not None and memory.names_only and memory.fitted["window"] == 2000
    assert read_metadata(remembering_bundle).card_hash != read_metadata(tiny_bundle).card_hash
    assert cli.main(["eval", "--model", str(remembering_bundle), "--corpus", str(tiny_corpus), "--memory",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["memory"]
    assert result["with_memory"]["bits_per_word"] <= result["without_memory"]["bits_per_word"]
    assert cli.main(["eval", "--model", str(tiny_bundle), "--corpus", str(tiny_corpus), "--memory"]) == 2
    assert "no memory.json" in capsys.readouterr().err


def test_a_damaged_memory_json_is_named(remembering_bundle, tmp_path):
    from model.bundle import BundleError, read_metadata

    broken = tmp_path / "broken"
    shutil.copytree(remembering_bundle, broken)
    (broken / "memory.json").write_text('{"weights": [1, 2]}')
    with pytest.raises(BundleError, match="memory.json is corrupted"):
        read_metadata(broken)


@pytest.fixture(scope="module")
def talking(tiny_bundle):
    """The tiny network with a memory that speaks often, and its vocabulary."""
    from model.bundle import load_network

    bundle, network = load_network(tiny_bundle)
    return bundle.vocab, replace(network, memory=Memory(config(0.7, name_share=0.8), bundle.vocab.chars))


def test_the_engines_agree_with_the_memory_on(talking):
    from model.engine import FusedEngine, NumpyEngine

    vocab, network = talking
    reference, fused = NumpyEngine(network), FusedEngine(network)
    texts = ["Harry looked at Hermione and the owl. Then Har", "Snape said to Ron"] * 5  # 10 rows: threads too
    prompts = [vocab.encode(t) for t in texts]
    logits, state = reference.prime(prompts)
    cast = [[vocab.encode("Dumbledore"), vocab.encode("Hermione")]] * len(texts)
    initials = np.zeros((len(texts), len(vocab)))
    initials[:, vocab.index["D"]] = 1.0
    rows = new_rows(network.memory, prompts, cast, initials)
    uniforms = np.random.default_rng(3).random((len(texts), 30))
    settings = (np.full(len(texts), 0.8), np.zeros(len(texts), np.int64), np.ones(len(texts)))
    want = reference.generate(logits, state, uniforms, *settings, rows)
    got = fused.generate(logits, state, uniforms, *settings, rows)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    for mine, theirs in zip(got.memory, want.memory):
        np.testing.assert_array_equal(mine, theirs)
    plain = reference.generate(logits, state, uniforms, *settings)
    assert (plain.ids != want.ids).any()  # the memory did speak


@pytest.mark.slow
def test_the_device_engine_agrees_with_the_memory_on(talking):
    pytest.importorskip("keras")
    from model.engine import DeviceEngine, NumpyEngine

    vocab, network = talking
    reference, device = NumpyEngine(network), DeviceEngine(network, rows=4, steps=8)
    prompts = [vocab.encode(t) for t in ("Harry looked at Hermione and Har", "Snape said to Ron")]
    logits, state = reference.prime(prompts)
    rows = new_rows(network.memory, prompts, [[vocab.encode("Hermione")]] * 2, np.zeros((2, len(vocab))))
    uniforms = np.random.default_rng(4).random((2, 8))
    settings = (np.full(2, 0.8), np.zeros(2, np.int64), np.ones(2))
    want = reference.generate(logits, state, uniforms, *settings, rows)
    got = device.generate(logits, state, uniforms, *settings, rows)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    np.testing.assert_array_equal(got.memory.length, want.memory.length)


def test_stories_stay_deterministic_streamed_and_filtered_with_the_memory_on(weedy_bundle):
    from model.bundle import load_network
    from model.engine import FusedEngine
    from model.generator import StoryRequest
    from tests.conftest import BLOCKED
    from tests.test_safety import write

    bundle, network = load_network(weedy_bundle)
    vocab = bundle.vocab
    engine = FusedEngine(replace(network, memory=Memory(config(0.7), vocab.chars)))
    cast = ("Harry", "Snape", "Ron")
    requests = [StoryRequest("Harry saw the", 300, 1.5, seed, blocked_words=(BLOCKED,), cast=cast)
                for seed in range(12)]
    runs = [write(engine, vocab, requests, steps) for steps in (1, 7, 16)]
    assert sum(filtered for _, filtered in runs[0][0]) > 0  # the filter rewound rows, and their memory with them
    assert runs[0][0] == runs[1][0] == runs[2][0]
    assert [write(engine, vocab, [r])[0][0] for r in requests[:3]] == runs[2][0][:3]  # whatever company
    for (text, _), streamed in zip(*runs[2]):
        assert text.startswith(streamed) and BLOCKED not in text.lower()


@pytest.mark.parametrize("cast, message", [
    (["Harry"], "tuple"), (("Harry",) * 61, "61 entries"), (("H" * 41,), "41 characters"),
    (("   ",), "empty"), (("Harry \u2603",), "'\u2603'"), (("Harry nigger",), "not allowed here"), ((7,), "text"),
])
def test_the_cast_of_a_request_is_checked_like_a_start(tiny_bundle, cast, message):
    from model.bundle import read_metadata
    from model.generator import GeneratorConfig, InvalidRequest, StoryRequest, usable_cast

    vocab, config = read_metadata(tiny_bundle).vocab, GeneratorConfig(model=tiny_bundle)
    with pytest.raises(InvalidRequest, match=message):
        StoryRequest("Harry", 100, cast=cast).validated(vocab, config)
    assert StoryRequest("Harry", 100, cast=("Harry  Snape",)).validated(vocab, config).cast == ("Harry Snape",)
    assert usable_cast(("Harry", "Quidditch", "Snape"), vocab, ("snape",)) == ("Harry",)  # no Q; a server's word
