"""`quill bench train`: training throughput of our set-up next to the seed recipe's, in one run.

The seed recipe (the article): tf.data windows of 101 chars, shuffle(10000), batch 64, Adam,
Embedding(300) -> GRU(512) -> GRU(256) -> Dense, `model.fit`. It is rebuilt here only as the
baseline, so this module (not the trainer) may use TensorFlow.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from model.network import build_model
from model.vocab import Normalisation, Vocabulary
from train import dataset
from train.config import TrainConfig
from train.corpus import read_corpus
from train.loop import compile_model

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "bench" / "tinyshakespeare.txt"
SEED = TrainConfig()  # the seed recipe's hyper-parameters are the defaults
REPEATS = 3


def _corpus_text(paths) -> tuple[str, str]:
    if paths:
        return "".join(f.text for f in read_corpus(paths)), ", ".join(map(str, paths))
    if SHARED_BENCH.is_file():
        return "".join(f.text for f in read_corpus([SHARED_BENCH])), str(SHARED_BENCH)
    rng = np.random.default_rng(0)  # a clone without ../shared: throughput does not depend on the text
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz     .,\n"))
    return "".join(rng.choice(letters, 400_000)), "generated text"


def _seed_dataset(ids: np.ndarray, config: TrainConfig):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(ids).batch(config.seq_length + 1, drop_remainder=True)
    ds = ds.map(lambda chunk: (chunk[:-1], chunk[1:]))
    return ds.shuffle(10000).batch(config.batch_size, drop_remainder=True).repeat()


def _time_fit(model, data, steps: int, chars_per_step: int, batch_size: int | None) -> dict:
    """Median chars/s over REPEATS timed runs of `steps` steps, after a warm-up run."""
    fit = (lambda n: model.fit(data, steps_per_epoch=n, epochs=1, shuffle=False, verbose=0)) if batch_size is None else \
        (lambda n: model.fit(data[0][: n * batch_size], data[1][: n * batch_size], batch_size=batch_size,
                             epochs=1, shuffle=True, verbose=0))
    fit(2)
    rates = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fit(steps)
        rates.append(steps * chars_per_step / (time.perf_counter() - t))
    return {"chars_per_s": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


def bench_train(args) -> dict:
    text, source = _corpus_text(args.corpus)
    vocab = Vocabulary.from_text(text, Normalisation())
    ids = vocab.encode(text)
    ours = replace(SEED, batch_size=args.batch_size, units=tuple(args.units), embedding=args.embedding,
                   learning_rate=2e-3, clipnorm=5.0)
    result = {"backend": keras.backend.backend(), "corpus": source, "chars": len(text),
              "steps_per_run": args.steps, "repeats": REPEATS}

    x, y = dataset.windows(ids, ours.seq_length)
    need = (args.steps + 2) * ours.batch_size
    if len(x) < need:  # small corpora: tile windows so every timed run has full batches
        x, y = np.resize(x, (need, x.shape[1])), np.resize(y, (need, y.shape[1]))
    variants = {"quill": {}, "quill_jit": {"jit_compile": True}, "quill_bf16": {"precision": "mixed_bfloat16"}}
    for name, opts in variants.items():
        keras.mixed_precision.set_global_policy(opts.get("precision", "float32"))
        model = build_model(len(vocab), ours.embedding, ours.units)
        compile_model(model, ours)
        if opts.get("jit_compile"):
            model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=True)
        result[name] = {"batch_size": ours.batch_size, "units": list(ours.units), **opts,
                        **_time_fit(model, (x, y), args.steps, ours.batch_size * ours.seq_length,
                                    ours.batch_size)}
    keras.mixed_precision.set_global_policy("float32")

    if keras.backend.backend() == "tensorflow":
        model = build_model(len(vocab), SEED.embedding, SEED.units)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        result["seed"] = {"batch_size": SEED.batch_size, "units": list(SEED.units), "pipeline": "tf.data",
                          **_time_fit(model, _seed_dataset(ids, SEED), args.steps * ours.batch_size // SEED.batch_size,
                                      SEED.batch_size * SEED.seq_length, None)}
        for name in variants:
            result[f"ratio_{name}_vs_seed"] = round(result[name]["chars_per_s"] / result["seed"]["chars_per_s"], 2)
    else:
        result["seed"] = "needs the TensorFlow backend (the seed recipe uses tf.data)"

    if args.epochs:
        result["validation"] = _validation_per_epoch(text, vocab, ours, args.epochs)
    return result


def _validation_per_epoch(text: str, vocab: Vocabulary, ours: TrainConfig, epochs: int) -> dict:
    """Validation loss (nats) after each epoch, seed recipe vs ours, on the same split."""
    from train.corpus import CorpusFile

    files = [CorpusFile("bench", "", text)]
    out = {}
    for name, config in (("seed", SEED), ("quill", ours)):
        (tx, ty), val, _, _ = dataset.build(files, vocab, config.seq_length, config.val_fraction)
        keras.utils.set_random_seed(0)
        model = compile_model(build_model(len(vocab), config.embedding, config.units), config)
        t = time.perf_counter()
        history = model.fit(tx, ty, batch_size=config.batch_size, epochs=epochs, validation_data=val,
                            shuffle=True, verbose=0).history
        out[name] = {"val_loss_nats": [round(v, 4) for v in history["val_loss"]],
                     "seconds": round(time.perf_counter() - t, 1)}
    return out
