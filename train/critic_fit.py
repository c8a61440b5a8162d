"""Fitting the sentence critic of a bundle (model.critic): `quill fit-critic --model DIR --corpus ...`.

The word model counts the training part of the books the bundle trained on (its held-out books and
the last `val_fraction` of every file left out).

The weights come from blind readers. `quill fit-critic --write-pairs FILE` writes pairs of
sentences the model wrote at the same place of a story (the server's temperature, the memory and the
default cast on); readers with a fresh context pick the better one of each pair without knowing
anything of the critic (train/critic/: 200 pairs from v4, three readers, one sheet each), and a
Bradley-Terry model of the features' differences fits the weights under which the readers' choice
scores higher. (Fitting them instead so that a book's own next sentence beats the model's
candidates learns the sampler, not quality: the books' sentences are less likely under the GRU than
samples at temperature 0.5, so that fit gave the GRU's score a weight of -10.6.)
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from model.bundle import load_network, write_json_atomic
from model.critic import (FEATURES, LONGEST, SPECIALS, TABLES_FILE, WEIGHTS_FILE, Candidate, Critic, WordModel,
                          form, is_capitalised, opens_sentence, tokens)
from model.engine import FusedEngine
from model.generator import LONGEST_SENTENCE
from model.memory import default_cast, initials_of, names_in, new_rows
from model.safety import shipped_filter
from model.sampler import sentence_end
from train.corpus import read_corpus, split

MIN_WORD, MIN_NGRAM, MIN_NAME = 3, 2, 3


def count_words(texts: list[str]) -> WordModel:
    """The word model of `texts`: words seen MIN_WORD times, pairs and triples MIN_NGRAM times."""
    streams = [tokens(t) for t in texts]
    capitalised, lower = Counter(), Counter()
    for stream in streams:
        previous = None
        for token in stream:
            if token[0].isalpha():
                if is_capitalised(token) and not opens_sentence(previous):
                    capitalised[token] += 1
                elif token.islower():
                    lower[token] += 1
            previous = token
    names = frozenset(w for w, c in capitalised.items() if c >= MIN_NAME and c >= lower[w.lower()])
    forms = Counter()
    for stream in streams:
        previous = None
        for token in stream:
            forms[form(token, previous, names)] += 1
            previous = token
    words = SPECIALS + tuple(sorted(w for w, c in forms.items() if c >= MIN_WORD and w not in SPECIALS))
    index = {w: i for i, w in enumerate(words)}
    size = len(words)
    unigrams = np.zeros(size, np.int64)
    pairs, triples = [], []
    for stream in streams:
        ids, previous = [], None
        for token in stream:
            ids.append(index.get(form(token, previous, names), 0))
            previous = token
        ids = np.array(ids, np.int64)
        unigrams += np.bincount(ids, minlength=size)
        pairs.append(ids[:-1] * size + ids[1:])
        triples.append((ids[:-2] * size + ids[1:-1]) * size + ids[2:])
    pair_keys, pair_counts = np.unique(np.concatenate(pairs), return_counts=True)
    triple_keys, triple_counts = np.unique(np.concatenate(triples), return_counts=True)
    followers = np.bincount(pair_keys // size, minlength=size)
    kept = pair_counts >= MIN_NGRAM
    pair_keys, pair_counts = pair_keys[kept], pair_counts[kept]
    contexts, per_context = np.unique(triple_keys // size, return_counts=True)
    at = np.minimum(np.searchsorted(contexts, pair_keys), len(contexts) - 1)
    pair_followers = np.where(contexts[at] == pair_keys, per_context[at], 0)
    kept = triple_counts >= MIN_NGRAM
    return WordModel(words, unigrams, followers.astype(np.int32), pair_keys, pair_counts.astype(np.int32),
                     pair_followers.astype(np.int32), triple_keys[kept], triple_counts[kept].astype(np.int32), names,
                     sentence_lengths(texts))


def sentence_lengths(texts: list[str]) -> np.ndarray:
    """log P(a sentence has n words) in `texts`, n = 0..LONGEST (the last: LONGEST or more), with
    one more of each length so that none is impossible."""
    counts = np.ones(LONGEST + 1)
    for text in texts:
        at = 0
        while (end := sentence_end(text, at)) is not None:
            counts[min(sum(t[0].isalpha() for t in tokens(text[at:end])), LONGEST)] += 1
            at = end
    return np.log(counts / counts.sum())


def candidates_for(engine: FusedEngine, network, vocab, contexts: list[str], per_place: int, temperature: float,
                   seed: int, cast: tuple[str, ...] = (), steps: int = 16) -> list[list[Candidate]]:
    """`per_place` sentences the model writes after each context, each cut at its first sentence end,
    with the tale's memory holding `cast` as a story's does."""
    prompts = [vocab.encode(c) for c in contexts for _ in range(per_place)]
    logits, state = engine.prime(prompts)
    memory = None
    if network.memory is not None:
        initials = np.array([initials_of(network.memory, vocab.index, names_in(c, cast), cast)
                             for c in contexts for _ in range(per_place)])
        entries = [vocab.encode(e) for e in cast]
        memory = new_rows(network.memory, prompts, [entries for _ in prompts], initials)
    rows = len(prompts)
    texts, scores = [""] * rows, [[] for _ in range(rows)]
    done = np.zeros(rows, bool)
    rng = np.random.default_rng(seed)
    settings = (np.full(rows, temperature), np.zeros(rows, np.int64), np.ones(rows))
    while not done.all():
        run = engine.generate(logits, state, rng.random((rows, steps)), *settings, memory)
        logits, state, memory = run.logits, run.state, run.memory
        for i in np.flatnonzero(~done):
            texts[i] += "".join(vocab.chars[j] for j in run.ids[i])
            scores[i].extend(run.scores[i])
            end = sentence_end(texts[i])
            if end is not None or len(texts[i]) >= LONGEST_SENTENCE:
                end = end or len(texts[i])
                texts[i], scores[i] = texts[i][:end], scores[i][:end]
                done[i] = True
    out = [Candidate(t, float(np.sum(s))) for t, s in zip(texts, scores)]
    return [out[i:i + per_place] for i in range(0, rows, per_place)]


def reading_pairs(model_dir, starts: tuple[str, ...], count: int, cast: tuple[str, ...], temperature: float = 0.5,
                  seed: int = 0, sentences: int = 8) -> list[dict]:
    """Pairs of sentences for blind readers: two the model wrote at the same place of a story from
    one of `starts` (the server's temperature, the memory and `cast` on), in random order."""
    from model.generator import usable_cast

    bundle, network = load_network(Path(model_dir))
    vocab, engine = bundle.vocab, FusedEngine(network)
    starts = [start for start in map(vocab.normalised, starts) if not vocab.unknown(start)]  # what it can write
    cast = usable_cast(cast, vocab)
    if not starts:
        raise ValueError("the model cannot write any of the starts")
    rng = np.random.default_rng(seed)
    tales = [starts[i % len(starts)] for i in range(count)]
    depth = rng.integers(0, sentences, size=count)  # how far into its story each pair comes
    for round_ in range(sentences):
        growing = [i for i in range(count) if depth[i] > round_]
        if not growing:
            break
        written = candidates_for(engine, network, vocab, [tales[i] for i in growing], 1, temperature,
                                 seed + 1000 + round_, cast)
        for i, [sentence] in zip(growing, written):
            tales[i] += ("" if tales[i].endswith((" ", "\n")) else " ") + sentence.text
    pairs = candidates_for(engine, network, vocab, tales, 2, temperature, seed + 1, cast)
    out = []
    for i, (tale, (a, b)) in enumerate(zip(tales, pairs)):
        out.append({"id": i, "tale": tale, "a": a.text, "b": b.text, "gru_a": a.gru, "gru_b": b.gru})
    return out


def fit_preferences(critic: Critic, pairs: list[dict], judged: dict[int, str], cast: tuple[str, ...],
                    l2: float = 1e-2) -> tuple[dict[str, float], dict]:
    """Weights under which the readers' choice in each pair scores higher: a logistic model of the
    difference of the two sentences' features (Bradley-Terry), fitted by Newton's method."""
    rows = []
    for pair in pairs:
        better = judged.get(pair["id"])
        if better not in ("a", "b"):
            continue
        f = critic.features(pair["tale"], [Candidate(pair["a"], pair["gru_a"]), Candidate(pair["b"], pair["gru_b"])],
                            cast)
        rows.append(f[0] - f[1] if better == "a" else f[1] - f[0])
    if len(rows) < 20:
        raise ValueError(f"only {len(rows)} judged pairs; the fit needs at least 20")
    x = np.array(rows)
    # Each row is "the preferred minus the other", so the model is p(y=1) = sigmoid(x w) for every row;
    # mirrored rows (y=0 for -x) make it symmetric without an intercept.
    x, y = np.concatenate([x, -x]), np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (y - p) - l2 * len(x) * w
        hessian = -(x.T * (p * (1 - p))) @ x - l2 * len(x) * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    agree = float(np.mean((x[:len(rows)] @ w) > 0))
    return dict(zip(FEATURES, w.round(6).tolist())), {"judged_pairs": len(rows), "agrees_with_readers": round(agree, 4)}


def fit_critic(model_dir, corpus_paths, pairs_file: Path, judgment_files: list[Path], val_fraction: float = 0.05,
               log=print) -> dict:
    started = time.monotonic()
    model_dir = Path(model_dir)
    bundle, _ = load_network(model_dir)
    vocab = bundle.vocab
    held_out = set(bundle.card.get("hyperparameters", {}).get("holdout_books", ()))
    files = [f for f in read_corpus(corpus_paths, vocab.normalisation, word_filter=shipped_filter())
             if f.name not in held_out]
    if not files:
        raise ValueError("no training books left in the corpus (every file is one of the bundle's held-out books)")
    texts = [split(vocab.fit(f.text)[0], val_fraction)[0] for f in files]
    log(f"counting words in {len(files)} books ({sum(map(len, texts)):,} characters)")
    words = count_words(texts)
    pairs = read_jsonl(pairs_file)
    judged = {int(j["id"]): j["better"] for path in judgment_files for j in read_jsonl(path)}
    weights, fit = fit_preferences(Critic(words, {name: 0.0 for name in FEATURES}), pairs, judged, default_cast())
    words.save(model_dir / TABLES_FILE)
    report = {"weights": weights, "fit": {
        **fit, "pairs": str(pairs_file), "judgments": [str(p) for p in judgment_files],
        "words": len(words.words), "word_pairs": int(len(words.bigram_keys)),
        "word_triples": int(len(words.trigram_keys)), "names": len(words.names), "books": [f.name for f in files],
        "val_fraction": val_fraction, "tables_mb": round((model_dir / TABLES_FILE).stat().st_size / 2**20, 1),
        "seconds": round(time.monotonic() - started)}}
    write_json_atomic(model_dir / WEIGHTS_FILE, report)
    return report


def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
