"""The training loop: validation every epoch, checkpoints, early stopping, resume, time budget.

Backend-neutral Keras 3 (no tf.*), so KERAS_BACKEND=jax trains on a GPU machine without TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from model.bundle import MODEL_FILE, load_bundle, save_bundle, write_json_atomic
from model.network import build_model
from model.safety import WordFilter, read_list, shipped_filter
from model.vocab import Normalisation, Vocabulary
from train import dataset
from train.config import TrainConfig
from train.corpus import CorpusError, read_corpus, split
from train.evaluate import LN2, STORY_WINDOW, evaluate_story_lengths

CHECKPOINTS = "checkpoints"
LAST, BEST, STATE = "last.keras", "best.weights.h5", "state.json"
EPOCH = "epoch-{}.weights.h5"  # kept for the last --average-epochs epochs


def compile_model(model, config: TrainConfig):
    optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm or None)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _save_atomic(path: Path, save) -> None:
    # Keras picks the format from the suffix, so the temp name keeps it.
    tmp = path.with_name(f".tmp-{path.name}")
    save(tmp)
    os.replace(tmp, path)


class Progress(keras.callbacks.Callback):
    """One status line: epoch, step, loss, chars/s, ETA; a summary line per epoch."""

    def __init__(self, chars_per_step: int, steps_per_epoch: int, stream=sys.stderr):
        super().__init__()
        self.chars_per_step, self.steps, self.stream = chars_per_step, steps_per_epoch, stream
        self.tty = stream.isatty()
        self.last_print = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch + 1, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last_print < (0.5 if self.tty else 30):
            return
        self.last_print = now
        done = batch + 1
        rate = done * self.chars_per_step / max(now - self.start, 1e-9)
        eta = (self.steps - done) * self.chars_per_step / max(rate, 1e-9)
        line = (f"epoch {self.epoch} step {done}/{self.steps} loss {logs['loss']:.4f} "
                f"{rate:,.0f} chars/s ETA {eta:.0f}s")
        print(("\r" + line + "\x1b[K") if self.tty else line, end="" if self.tty else "\n",
              file=self.stream, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.tty:
            print(file=self.stream)


class Checkpointer(keras.callbacks.Callback):
    """Every epoch: full checkpoint (with optimizer) + state; best weights by validation loss;
    early stopping; the time budget and --max-steps stop mid-epoch."""

    def __init__(self, out: Path, state: dict, config: TrainConfig, started: float, steps_per_epoch: int):
        super().__init__()
        self.dir, self.state, self.config = out / CHECKPOINTS, state, config
        self.started, self.steps_per_epoch = started, steps_per_epoch
        self.wall_before = state.get("wall_seconds", 0.0)  # earlier sessions of a resumed run
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.steps_done = time.monotonic(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done = batch + 1
        self.state["steps"] += 1
        c = self.config
        if c.max_steps and self.state["steps"] >= c.max_steps:
            self.state["stopped"] = f"--max-steps {c.max_steps} reached"
        elif c.minutes and time.monotonic() - self.started >= c.minutes * 60:
            self.state["stopped"] = f"--minutes {c.minutes:g} budget reached"
        else:
            return
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        s = self.state
        val = float(logs["val_loss"])
        record = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": val,
                  "val_bpc": val / LN2, "seconds": round(time.monotonic() - self.epoch_start, 1),
                  "steps": self.steps_done, "partial": self.steps_done < self.steps_per_epoch,
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        s["history"].append(record)
        s["epoch"] = epoch + 1
        s["wall_seconds"] = self.wall_before + time.monotonic() - self.started  # kept if the run is killed
        improved = s["best"] is None or val < s["best"]["val_loss"]
        if improved:
            s["best"] = record
            _save_atomic(self.dir / BEST, self.model.save_weights)
        elif epoch + 1 - s["best"]["epoch"] >= self.config.patience:
            s["stopped"] = f"early stop: no better validation loss for {self.config.patience} epochs"
            self.model.stop_training = True
        if self.config.average_epochs > 1:
            _save_atomic(self.dir / EPOCH.format(epoch + 1), self.model.save_weights)
            (self.dir / EPOCH.format(epoch + 1 - self.config.average_epochs)).unlink(missing_ok=True)
        _save_atomic(self.dir / LAST, self.model.save)
        write_json_atomic(self.dir / STATE, s)
        print(f"epoch {epoch + 1}: loss {record['loss']:.4f}  val {val:.4f} nats = {val / LN2:.3f} bits/char"
              f"{'  (best)' if improved else ''}  {record['seconds']:.0f}s", file=sys.stderr, flush=True)


def describe_device() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)}"
    if backend == "tensorflow":
        import tensorflow as tf  # only to name the device on the card
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')}"
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def versions() -> dict:
    out = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        out[module] = __import__(module).__version__
    return out


def word_filter_for(config: TrainConfig) -> WordFilter | None:
    if config.blocklist == "none":
        return None
    return shipped_filter() if config.blocklist == "shipped" else WordFilter(read_list(config.blocklist))


def load_corpus(corpus_paths, config: TrainConfig, log=print):
    """(vocabulary, training files, held-out books), every text cleaned and fitted to the vocabulary."""
    normalisation = Normalisation(typography=not config.keep_typography, paragraphs=not config.keep_line_breaks)
    files = read_corpus(corpus_paths, normalisation, config.encoding, word_filter_for(config))
    missing = sorted(set(config.holdout_books) - {f.name for f in files})
    if missing:
        raise CorpusError(f"--holdout-books names files that are not in the corpus: {', '.join(missing)}")
    held = [f for f in files if f.name in config.holdout_books]
    files = [f for f in files if f.name not in config.holdout_books]
    if not files:
        raise CorpusError("every corpus file is held out: nothing is left to train on")
    vocab = Vocabulary.from_text("".join(f.text for f in files), normalisation, config.min_char_count)
    fitted = [replace(f, text=vocab.fit(f.text)[0]) for f in files]
    dropped = Counter()
    for f in files + held:
        dropped.update(f.dropped)
    dropped["rare_chars"] = sum(len(f.text) for f in files) - sum(len(f.text) for f in fitted)
    log(f"cleaning removed {', '.join(f'{v:,} chars of {k}' for k, v in dropped.items())}")
    return vocab, fitted, held, dict(dropped)


def epoch_order(n_windows: int, per_epoch: int, epoch: int, seed: int) -> np.ndarray:
    """Window indices of 0-based `epoch`: consecutive slices of one seeded shuffle per pass over the
    data, so epochs shorter than a pass still see every window once per pass, and resume is exact."""
    parts, pos, end = [], epoch * per_epoch, (epoch + 1) * per_epoch
    while pos < end:
        rounds, offset = divmod(pos, n_windows)
        take = min(end - pos, n_windows - offset)
        parts.append(np.random.default_rng([seed, rounds]).permutation(n_windows)[offset:offset + take])
        pos += take
    return np.concatenate(parts)


def average_last_epochs(model, out: Path, state: dict, config: TrainConfig, val_x, val_y) -> dict | None:
    """Put the mean of the last --average-epochs epochs' weights in the model and validate it.
    Late in a run the weights wander around a minimum; their mean sits nearer it (as in SWA)."""
    epochs = list(range(state["epoch"] - config.average_epochs + 1, state["epoch"] + 1))
    paths = [out / CHECKPOINTS / EPOCH.format(e) for e in epochs]
    if config.average_epochs < 2 or epochs[0] < 1 or not all(p.is_file() for p in paths):
        return None
    weights = []
    for path in paths:
        model.load_weights(path)
        weights.append(model.get_weights())
    model.set_weights([np.mean(layer, axis=0) for layer in zip(*weights)])
    val = float(model.evaluate(val_x, val_y, batch_size=config.batch_size, verbose=0))
    return {"epochs": epochs, "val_loss": val, "val_bpc": val / LN2}


def init_weights(model, source_dir, vocab: Vocabulary) -> dict:
    """Start from a bundle's weights: recurrent layers as they are, embedding rows and output columns
    matched by character; characters the source lacks keep their fresh initialisation."""
    source = load_bundle(source_dir)
    index = source.vocab.index
    pairs = [(i, index[c]) for i, c in enumerate(vocab.chars) if c in index]
    new, old = (list(t) for t in zip(*pairs))
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            theirs = source.model.get_layer(layer.name).get_weights()
        except ValueError:
            raise ValueError(f"--init-from {source_dir}: it has no layer {layer.name!r}; "
                             f"the architecture must match") from None
        ours = layer.get_weights()
        if layer.name == "embedding":
            ours[0][new] = theirs[0][old]
        elif layer.name == "logits":
            ours[0][:, new] = theirs[0][:, old]
            ours[1][:] = theirs[1].min()  # a new character starts as unlikely as the rarest known one
            ours[1][new] = theirs[1][old]
        elif [w.shape for w in ours] != [w.shape for w in theirs]:
            raise ValueError(f"--init-from {source_dir}: layer {layer.name!r} has shapes "
                             f"{[w.shape for w in theirs]}, this run's has {[w.shape for w in ours]}")
        else:
            ours = theirs
        layer.set_weights(ours)
    return {"path": str(source_dir), "name": source.name, "card_sha256": source.card_hash,
            "chars_matched": len(pairs), "chars_new": len(vocab) - len(pairs)}


def train(corpus_paths, out, config: TrainConfig | None = None, resume: bool = False,
          overrides: dict | None = None, name: str | None = None, log=print, recipe: str | None = None) -> Path:
    """Train on the corpus and write the bundle into `out`. Returns the bundle folder.
    With resume, the run's own config is used, changed only by `overrides` of RESUMABLE fields."""
    out = Path(out)
    state_path = out / CHECKPOINTS / STATE
    overrides = overrides or {}
    if resume:
        if not state_path.is_file():
            raise ValueError(f"nothing to resume: {state_path} does not exist "
                             f"(to start from a bundle's weights instead, use --init-from)")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        saved = TrainConfig.from_dict(state["config"])
        config = TrainConfig.from_dict({**state["config"], **overrides})  # lists from a recipe become tuples
        fixed = sorted(k for k in overrides
                       if k not in TrainConfig.RESUMABLE and getattr(config, k) != getattr(saved, k))
        if fixed:
            raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in fixed)} cannot change on --resume "
                             f"(only {', '.join('--' + k.replace('_', '-') for k in TrainConfig.RESUMABLE)} can)")
    else:
        config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **overrides})
    config.check()
    vocab, files, held, dropped = load_corpus(corpus_paths, config, log)
    corpus = [{"file": f.name, "sha256": f.sha256, "chars": len(f.text)} for f in files]
    if resume and [c["sha256"] for c in corpus] != [c["sha256"] for c in state["corpus"]]:
        raise CorpusError("--resume needs the same corpus files as the interrupted run "
                          f"({', '.join(c['file'] for c in state['corpus'])})")
    (train_x, train_y), (val_x, val_y), train_chars, val_chars = dataset.build(
        files, vocab, config.seq_length, config.val_fraction)
    val_words = sum(len(split(f.text, config.val_fraction)[1].split()) for f in files)
    log(f"corpus: {len(files)} file(s), {sum(c['chars'] for c in corpus):,} chars, vocabulary {len(vocab)}; "
        f"train {train_chars:,} chars ({len(train_x):,} windows), validation {val_chars:,} chars "
        f"({len(val_x):,} windows, last {config.val_fraction:.0%} of each file)"
        + (f"; {len(held)} book(s) held out" if held else ""))

    keras.utils.set_random_seed(config.seed)
    created_out = not out.exists()
    if resume:
        model = keras.saving.load_model(out / CHECKPOINTS / LAST)  # with optimizer state
        log(f"resuming after epoch {state['epoch']} (best val {state['best']['val_bpc']:.3f} bits/char)")
    else:
        model = compile_model(build_model(len(vocab), **config.architecture()), config)
        state = {"config": config.to_dict(), "corpus": corpus, "vocab": list(vocab.chars),
                 "epoch": 0, "steps": 0, "history": [], "best": None, "stopped": None,
                 "wall_seconds": 0.0}
        if config.init_from:
            state["init_from"] = init_weights(model, config.init_from, vocab)
            log(f"starting from {config.init_from}'s weights ({state['init_from']['chars_matched']} characters "
                f"matched, {state['init_from']['chars_new']} new)")
    state["stopped"], state["config"] = None, config.to_dict()
    state["name"] = name = name or state.get("name") or out.name  # a resumed run keeps its name
    state["recipe"] = recipe or state.get("recipe")
    per_epoch = math.ceil(config.epoch_chars / config.seq_length) if config.epoch_chars else len(train_x)
    steps_per_epoch = math.ceil(per_epoch / config.batch_size)
    started = time.monotonic()
    checkpointer = Checkpointer(out, state, config, started, steps_per_epoch)
    callbacks = [Progress(config.batch_size * config.seq_length, steps_per_epoch), checkpointer]
    try:
        while state["epoch"] < config.epochs and not state["stopped"]:
            epoch = state["epoch"]
            model.optimizer.learning_rate.assign(config.learning_rate_at(epoch))
            order = epoch_order(len(train_x), per_epoch, epoch, config.seed)
            model.fit(train_x[order], train_y[order], batch_size=config.batch_size, epochs=epoch + 1,
                      initial_epoch=epoch, validation_data=(val_x, val_y), shuffle=False,
                      callbacks=callbacks, verbose=0)
    except KeyboardInterrupt:
        state["stopped"] = "interrupted (Ctrl-C)"
        log("\ninterrupted: writing the bundle from the best checkpoint")
    except BaseException:
        if created_out and state["epoch"] == 0:
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping was written
        raise
    state["wall_seconds"] = checkpointer.wall_before + time.monotonic() - started
    best_weights = out / CHECKPOINTS / BEST
    average = state["best"] and average_last_epochs(model, out, state, config, val_x, val_y)
    use_average = bool(average) and average["val_loss"] < state["best"]["val_loss"]
    if average:
        mean_name = f"mean of epochs {average['epochs'][0]}-{average['epochs'][-1]}"
        log(f"{mean_name}: validation "
            f"{average['val_bpc']:.3f} bits/char, best epoch {state['best']['val_bpc']:.3f}: "
            f"{'the mean' if use_average else 'the best epoch'} goes in the bundle")
    if state["best"] is None:  # stopped before the first validation: measure what we have
        val = float(model.evaluate(val_x, val_y, batch_size=config.batch_size, verbose=0))
        state["best"] = {"epoch": 0, "loss": None, "val_loss": val, "val_bpc": val / LN2}
    elif use_average:  # the mean is in the model; it is now the one to beat, on resume too
        state["best"] = {"epoch": state["epoch"], "loss": None, "val_loss": average["val_loss"],
                         "val_bpc": average["val_bpc"], "mean_of_epochs": average["epochs"]}
    elif best_weights.is_file():
        model.load_weights(best_weights)  # restore the best epoch
    else:  # resumed, and no epoch beat the bundle already written: that bundle is the best
        model.set_weights(keras.saving.load_model(out / MODEL_FILE, compile=False).get_weights())
    write_json_atomic(state_path, state)
    best = state["best"]
    card = {
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": config.architecture(),
        "hyperparameters": config.to_dict(),
        "vocab_size": len(vocab),
        "corpus": corpus,
        "cleaning_dropped_chars": dropped,
        "train_chars": train_chars,
        "val_chars": val_chars,
        "epochs_run": state["epoch"],
        "steps": state["steps"],
        "best_epoch": best["epoch"],
        "train_loss_nats": best["loss"],
        "val_loss_nats": best["val_loss"],
        "val_bpc": best["val_bpc"],
        "val_bits_per_word": round(best["val_bpc"] * val_chars / max(val_words, 1), 3),
        "stopped": state["stopped"] or f"{config.epochs} epochs done",
        "history": state["history"],
        "wall_seconds": round(state["wall_seconds"], 1),
        "device": describe_device(),
        "backend": keras.backend.backend(),
        "versions": versions(),
        "params": int(model.count_params()),
    }
    if average:
        card["average_of_epochs"] = {**average, "in_bundle": use_average}
    if "init_from" in state:
        card["init_from"] = state["init_from"]
    if state["recipe"]:
        card["recipe"] = state["recipe"]  # the file that reproduces this run
    if held:
        log(f"measuring the {len(held)} held-out book(s)")
        card["unseen_books"] = {"files": [f.name for f in held],
                                **evaluate_story_lengths(model, vocab, [f.text for f in held], config.seq_length)}
    save_bundle(out, model, vocab, card)
    best_weights.unlink(missing_ok=True)  # the bundle holds them; resume needs last.keras (and epoch-N)
    which = mean_name if use_average else f"best epoch {card['best_epoch']}"
    log(f"bundle written to {out}: {which}, validation "
        f"{card['val_loss_nats']:.4f} nats = {card['val_bpc']:.3f} bits/char, "
        f"{card['val_bits_per_word']:.2f} bits/word ({card['stopped']})"
        + (f"; unseen books {card['unseen_books']['bits_per_char']:.3f} bits/char, "
           f"{card['unseen_books']['bits_per_word']:.2f} bits/word, in {STORY_WINDOW}-char windows "
           f"{card['unseen_books']['story_window']['bits_per_word']:.2f}" if held else ""))
    return out
