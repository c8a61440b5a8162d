"""The bundle: the one module that knows a trained model's files on disk.

DIR/model.keras  a plain Keras 3 model of standard layers, no optimizer state
DIR/vocab.json   the characters in id order and the normalisation used
DIR/card.json    how it was trained and how good it is
DIR/memory.json  the tale's memory, fitted after training (model.memory.MemoryConfig); optional
DIR/critic.npz   the sentence critic's word model, and DIR/critic.json its weights (model.critic); optional

Bundles are written into a temporary sibling folder and renamed into place, so a reader never
sees a half-written bundle.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from model.critic import TABLES_FILE as CRITIC_TABLES_FILE
from model.critic import WEIGHTS_FILE as CRITIC_WEIGHTS_FILE
from model.memory import Memory, MemoryConfig
from model.sampler import sentence_classes
from model.vocab import Vocabulary

MODEL_FILE, VOCAB_FILE, CARD_FILE, MEMORY_FILE = "model.keras", "vocab.json", "card.json", "memory.json"


class BundleError(ValueError):
    """The bundle is missing, corrupted or inconsistent; the message says which file and why."""


@dataclass
class Bundle:
    path: Path
    vocab: Vocabulary
    card: dict
    model: object = None  # keras.Model, loaded only when asked for
    memory: MemoryConfig | None = None

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name

    @property
    def card_hash(self) -> str:
        """Names what told a story: the card, and the memory's and the critic's settings where there are some."""
        digest = hashlib.sha256((self.path / CARD_FILE).read_bytes())
        for extra in (MEMORY_FILE, CRITIC_WEIGHTS_FILE):
            if (self.path / extra).is_file():
                digest.update((self.path / extra).read_bytes())
        return digest.hexdigest()[:12]


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_bundle(directory, model, vocab: Vocabulary, card: dict) -> Path:
    """Write model + vocab + card, replacing DIR's bundle files in one step each."""
    import keras

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # A fresh copy of the network drops the optimizer state (not needed to generate).
    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=directory))
    try:
        plain.save(staging / MODEL_FILE)
        (staging / VOCAB_FILE).write_text(vocab.to_json() + "\n", encoding="utf-8")
        write_json_atomic(staging / CARD_FILE, card)
        check_consistent(plain, vocab, staging)
        # A memory or critic fitted to other weights is stale (quill fit-memory, fit-critic fit new ones).
        for stale in (MEMORY_FILE, CRITIC_TABLES_FILE, CRITIC_WEIGHTS_FILE):
            (directory / stale).unlink(missing_ok=True)
        # The card goes last: a bundle whose card is there is complete.
        for name in (MODEL_FILE, VOCAB_FILE, CARD_FILE):
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_metadata(directory) -> Bundle:
    """Vocabulary and card only: cheap, and needs no Keras."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"model bundle not found: {directory} is not a folder")
    for name in (MODEL_FILE, VOCAB_FILE, CARD_FILE):
        if not (directory / name).is_file():
            raise BundleError(f"model bundle {directory} is incomplete: {name} is missing")
    try:
        vocab = Vocabulary.from_json((directory / VOCAB_FILE).read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{directory / VOCAB_FILE} is corrupted: {e}") from None
    try:
        card = json.loads((directory / CARD_FILE).read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("expected a JSON object")
    except ValueError as e:
        raise BundleError(f"{directory / CARD_FILE} is corrupted: {e}") from None
    if card.get("vocab_size", len(vocab)) != len(vocab):
        raise BundleError(f"{directory} is inconsistent: card.json says {card['vocab_size']} characters, "
                          f"vocab.json has {len(vocab)}")
    memory = None
    if (directory / MEMORY_FILE).is_file():
        try:
            memory = MemoryConfig.from_json((directory / MEMORY_FILE).read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{directory / MEMORY_FILE} is corrupted: {e}") from None
    return Bundle(directory, vocab, card, memory=memory)


def save_memory(directory, config: MemoryConfig) -> None:
    """Write (or replace, in one step) a bundle's memory.json."""
    write_json_atomic(Path(directory) / MEMORY_FILE, config.to_dict())


def load_network(directory, memory: bool = True):
    """Metadata and the network's weights, read without Keras: what the generator needs; with the
    tale's memory where the bundle has one and `memory` is on."""
    from model.weights import UnsupportedModel, read_network

    bundle = read_metadata(directory)
    try:
        network = read_network(bundle.path / MODEL_FILE)
    except UnsupportedModel as e:
        raise BundleError(str(e)) from None
    if network.vocab_size != len(bundle.vocab) or network.dense_bias.shape[0] != len(bundle.vocab):
        raise BundleError(f"{bundle.path} is inconsistent: vocab.json has {len(bundle.vocab)} characters but the "
                          f"model takes {network.vocab_size} and outputs {network.dense_bias.shape[0]}")
    if bundle.vocab.normalisation.paragraphs:  # there "\n" ends a paragraph; elsewhere it is a printed line
        network = replace(network, paragraph_id=bundle.vocab.index["\n"])
    if memory and bundle.memory is not None:
        network = replace(network, memory=Memory(bundle.memory, bundle.vocab.chars))
    return bundle, replace(network, sentence_classes=sentence_classes(bundle.vocab.chars))


def load_bundle(directory) -> Bundle:
    """Metadata and the Keras model (training, evaluation, tests)."""
    import keras

    bundle = read_metadata(directory)
    try:
        bundle.model = keras.saving.load_model(bundle.path / MODEL_FILE, compile=False)
    except Exception as e:  # keras raises many types for a damaged zip/h5
        raise BundleError(f"{bundle.path / MODEL_FILE} cannot be loaded ({type(e).__name__}: {e})") from None
    check_consistent(bundle.model, bundle.vocab, bundle.path)
    return bundle


def check_consistent(model, vocab: Vocabulary, where) -> None:
    embedding = model.get_layer("embedding").input_dim
    outputs = model.output_shape[-1]
    if embedding != len(vocab) or outputs != len(vocab):
        raise BundleError(f"{where} is inconsistent: vocab.json has {len(vocab)} characters but the "
                          f"model takes {embedding} and outputs {outputs}")
