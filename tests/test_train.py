import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from model.bundle import BundleError, load_bundle, read_metadata
from model.vocab import Normalisation, Vocabulary
from train.corpus import read_corpus, split


def unigram_entropy_nats(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_two_epochs_beat_the_unigram_entropy(tiny_bundle, tiny_corpus, tiny_config):
    card = json.loads((tiny_bundle / "card.json").read_text())
    val_text = "".join(split(f.text, tiny_config.val_fraction)[1] for f in read_corpus([tiny_corpus], Normalisation(paragraphs=True)))
    assert card["epochs_run"] == 2
    assert card["val_loss_nats"] < unigram_entropy_nats(val_text)
    assert card["val_bpc"] == pytest.approx(card["val_loss_nats"] / math.log(2))
    assert [c["file"] for c in card["corpus"]] == ["one.txt", "two.txt"]
    assert all(len(c["sha256"]) == 64 for c in card["corpus"])
    for key in ("train_chars", "val_chars", "best_epoch", "train_loss_nats", "wall_seconds", "device",
                "backend", "versions", "hyperparameters"):
        assert key in card


def saved_variable_groups(model_file) -> set:
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(model_file) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        return set(f.keys())


def test_bundle_is_plain_keras_and_reloads_to_identical_logits(tiny_bundle):
    import keras

    plain = keras.saving.load_model(tiny_bundle / "model.keras")  # no custom objects needed
    assert getattr(plain, "optimizer", None) is None
    assert "optimizer" not in saved_variable_groups(tiny_bundle / "model.keras")  # no optimizer state on disk
    bundle = load_bundle(tiny_bundle)
    ids = bundle.vocab.encode(bundle.vocab.normalised("Harry looked at the castle."))[None, :]
    np.testing.assert_array_equal(np.asarray(plain(ids)), np.asarray(bundle.model(ids)))


@pytest.mark.slow
def test_resume_continues_epochs_loss_and_optimizer(tiny_corpus, tiny_config, tmp_path):
    from train.loop import train

    out = tmp_path / "run"
    train([tiny_corpus], out, replace(tiny_config, epochs=1), name="hogwarts", log=lambda *a: None)
    first = json.loads((out / "checkpoints" / "state.json").read_text())
    with pytest.raises(ValueError, match="--units cannot change on --resume"):
        train([tiny_corpus], out, resume=True, overrides={"units": (64,)})
    train([tiny_corpus], out, resume=True, overrides={"epochs": 2, "learning_rate": 0.005}, log=lambda *a: None)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["steps"] == 2 * first["steps"]
    assert state["history"][1]["loss"] < first["history"][0]["loss"]  # carried on, not restarted
    import keras
    last = keras.saving.load_model(out / "checkpoints" / "last.keras")
    assert int(last.optimizer.iterations.numpy()) == state["steps"]
    assert float(last.optimizer.learning_rate.numpy()) == pytest.approx(0.005)  # changed for the rest
    assert state["config"]["learning_rate"] == 0.005 and state["config"]["units"] == [48, 32]
    assert [round(h["learning_rate"], 6) for h in state["history"]] == [0.01, 0.005]  # the schedule, per epoch
    card = json.loads((out / "card.json").read_text())
    assert card["epochs_run"] == 2 and card["name"] == "hogwarts"  # the resumed run keeps its name
    # Only what resume needs is kept: the bundle holds the best weights.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.keras", "state.json"]
    # A resumed epoch that does not beat the best leaves the bundle's weights as they were.
    best = load_bundle(out).model.get_weights()
    train([tiny_corpus], out, resume=True, overrides={"epochs": 3, "learning_rate": 5.0}, log=lambda *a: None)
    after = json.loads((out / "card.json").read_text())
    assert after["best_epoch"] == 2 and after["history"][2]["val_loss"] > after["val_loss_nats"]
    for ours, theirs in zip(load_bundle(out).model.get_weights(), best):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_max_steps_stops_mid_epoch_and_still_writes_the_bundle(tiny_corpus, tiny_config, tmp_path):
    from train.loop import train

    out = tmp_path / "short"
    train([tiny_corpus], out, replace(tiny_config, epochs=5, max_steps=3), log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 3 and card["epochs_run"] == 1
    assert "max-steps" in card["stopped"]
    load_bundle(out)


def test_resume_without_checkpoint_is_a_clear_error(tiny_corpus, tiny_config, tmp_path):
    from train.loop import train

    with pytest.raises(ValueError, match="nothing to resume"):
        train([tiny_corpus], tmp_path / "none", tiny_config, resume=True)


def _copy(bundle, tmp_path):
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def test_truncated_model_file_is_a_clear_error(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    data = (b / "model.keras").read_bytes()
    (b / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="model.keras cannot be loaded"):
        load_bundle(b)


def test_vocab_that_disagrees_with_the_model_is_a_clear_error(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    vocab = json.loads((b / "vocab.json").read_text())
    vocab["chars"] = vocab["chars"][:-1]
    (b / "vocab.json").write_text(json.dumps(vocab))
    card = json.loads((b / "card.json").read_text())
    card.pop("vocab_size")
    (b / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="inconsistent"):
        load_bundle(b)


@pytest.mark.parametrize("name, content, message", [
    ("vocab.json", "{not json", "vocab.json is corrupted"),
    ("card.json", "[1, 2]", "card.json is corrupted"),
])
def test_corrupted_metadata_is_a_clear_error(tiny_bundle, tmp_path, name, content, message):
    b = _copy(tiny_bundle, tmp_path)
    (b / name).write_text(content)
    with pytest.raises(BundleError, match=message):
        read_metadata(b)


def test_missing_bundle_file_is_a_clear_error(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    (b / "vocab.json").unlink()
    with pytest.raises(BundleError, match="vocab.json is missing"):
        read_metadata(b)
    with pytest.raises(BundleError, match="not a folder"):
        read_metadata(tmp_path / "nowhere")


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_writes_the_bundle(tiny_corpus, tiny_config, tmp_path):
    from train.loop import train

    out = tmp_path / "budget"
    train([tiny_corpus], out, replace(tiny_config, epochs=50, minutes=0.0001), log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert "--minutes" in card["stopped"] and card["epochs_run"] == 1 and card["steps"] == 1
    load_bundle(out)


@pytest.mark.slow
def test_ctrl_c_writes_the_bundle_from_the_best_checkpoint(tiny_corpus, tiny_config, tmp_path, monkeypatch):
    from train import loop

    original = loop.Progress.on_train_batch_end

    def interrupt_in_epoch_two(self, batch, logs=None):
        if self.epoch == 2 and batch == 2:
            raise KeyboardInterrupt
        original(self, batch, logs)

    monkeypatch.setattr(loop.Progress, "on_train_batch_end", interrupt_in_epoch_two)
    out = tmp_path / "interrupted"
    loop.train([tiny_corpus], out, replace(tiny_config, epochs=5), log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert card["stopped"] == "interrupted (Ctrl-C)"
    assert card["best_epoch"] == 1 and card["epochs_run"] == 1
    assert not list(out.glob(".bundle-*"))  # no half-written staging folder left
    load_bundle(out)


def test_shipped_default_model_is_small_plain_and_consistent():
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "models" / "default"
    assert (shipped / "model.keras").stat().st_size <= 10 * 2**20
    assert "optimizer" not in saved_variable_groups(shipped / "model.keras")
    bundle = load_bundle(shipped)
    assert bundle.card["val_bpc"] < 1.80  # better than the seed recipe's best on the same split
    assert bundle.vocab.normalised("Harry Potter looked at Snape.") == "Harry Potter looked at Snape."
    assert bundle.vocab.unknown("Harry Potter looked at Snape.") == []
    unseen = bundle.card["unseen_books"]  # scored at the training window and at a story's length
    assert unseen["story_window"]["window"] == 2000 and unseen["story_window"]["bits_per_word"] < unseen["bits_per_word"]
    assert unseen["paragraph_breaks"] > 1000  # with the books' paragraphs
    root = shipped.parent.parent
    assert (root / bundle.card["recipe"]).is_file() and (root / bundle.card["init_from"]["path"]).is_dir()


def _mean_of(out, epochs):
    import keras

    model = keras.saving.load_model(out / "checkpoints" / "last.keras")
    weights = []
    for epoch in epochs:
        model.load_weights(out / "checkpoints" / f"epoch-{epoch}.weights.h5")
        weights.append(model.get_weights())
    return [np.mean(layer, axis=0) for layer in zip(*weights)]


def _measured_val_bpc(bundle, corpus, config) -> float:
    """The bundle's validation loss, measured again on the run's own validation windows."""
    from train import dataset
    from train.loop import LN2, load_corpus

    _, files, _, _ = load_corpus([corpus], config, log=lambda *a: None)
    _, (val_x, val_y), _, _ = dataset.build(files, bundle.vocab, config.seq_length, config.val_fraction)
    import keras

    bundle.model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return float(bundle.model.evaluate(val_x, val_y, batch_size=config.batch_size, verbose=0)) / LN2


@pytest.mark.slow
def test_average_epochs_bundles_the_mean_only_when_it_validates_better(tiny_corpus, tiny_config, tmp_path):
    from train.loop import train

    out = tmp_path / "avg"
    train([tiny_corpus], out, replace(tiny_config, epochs=4, average_epochs=3), log=lambda *a: None)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch-2.weights.h5", "epoch-3.weights.h5", "epoch-4.weights.h5", "last.keras", "state.json"]
    card = json.loads((out / "card.json").read_text())
    mean, best_epoch = card["average_of_epochs"], min(h["val_bpc"] for h in card["history"])
    assert mean["epochs"] == [2, 3, 4]
    assert mean["in_bundle"] == (mean["val_bpc"] < best_epoch)
    assert card["val_bpc"] == min(mean["val_bpc"], best_epoch)
    bundled = load_bundle(out)
    is_the_mean = all(np.allclose(ours, theirs, rtol=1e-6)
                      for ours, theirs in zip(bundled.model.get_weights(), _mean_of(out, [2, 3, 4])))
    assert is_the_mean == mean["in_bundle"]
    assert _measured_val_bpc(bundled, tiny_corpus, tiny_config) == pytest.approx(card["val_bpc"], rel=1e-4)

    # An epoch at a ruinous rate spoils the mean: the bundle keeps what it had.
    first = card
    before = load_bundle(out).model.get_weights()
    train([tiny_corpus], out, resume=True, overrides={"epochs": 5, "learning_rate": 5.0, "average_epochs": 2},
          log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert card["average_of_epochs"]["epochs"] == [4, 5] and not card["average_of_epochs"]["in_bundle"]
    assert not (out / "checkpoints" / "epoch-3.weights.h5").exists()
    for ours, theirs in zip(load_bundle(out).model.get_weights(), before):
        np.testing.assert_array_equal(ours, theirs)
    assert card["val_bpc"] == first["val_bpc"]  # the card still describes what the bundle holds
    with pytest.raises(ValueError, match="--average-epochs must be at least 1"):
        train([tiny_corpus], tmp_path / "bad", replace(tiny_config, average_epochs=0))


@pytest.mark.slow
def test_each_checkpoint_records_the_wall_time_so_far(tiny_corpus, tiny_config, tmp_path, monkeypatch):
    # A run that is killed keeps the time it trained: the resumed card counts it.
    from train import loop

    written = []
    real = loop.write_json_atomic
    monkeypatch.setattr(loop, "write_json_atomic", lambda path, data: (written.append(json.loads(json.dumps(data))),
                                                                       real(path, data)))
    out = tmp_path / "timed"
    loop.train([tiny_corpus], out, replace(tiny_config, epochs=2), log=lambda *a: None)
    per_epoch = [s for s in written if "history" in s][:2]
    for state in per_epoch:
        # each epoch's seconds are rounded to 0.1, so their sum may pass the wall time by 0.05 each
        assert state["wall_seconds"] >= sum(h["seconds"] - 0.05 for h in state["history"]) > 0
    first = per_epoch[0]["wall_seconds"]
    loop.train([tiny_corpus], out, resume=True, overrides={"epochs": 3}, log=lambda *a: None)
    card = json.loads((out / "card.json").read_text())
    assert card["wall_seconds"] >= first + card["history"][2]["seconds"] - 0.05


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
