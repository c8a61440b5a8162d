"""A trained network's weights as plain numpy arrays, read from `model.keras` without Keras.

A `.keras` file is a zip of `config.json` (the layers, in order) and `model.weights.h5` (each
layer's variables under `layers/<class name in snake case>[_N]/`). Telling stories needs only
those arrays, so the bot reads them with h5py and numpy: no TensorFlow, a tenth of the memory
and a second to start. Keras stays the format's owner (training writes the file with
`model.save`); the engines' agreement with `keras.saving.load_model` is tested to 1e-4.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class UnsupportedModel(ValueError):
    """The file is not a network the story engines can run; the message says what differs."""


@dataclass(frozen=True)
class Recurrent:
    kind: str  # "gru" (Keras' reset_after=True form) or "lstm"
    kernel: np.ndarray  # (inputs, gates)
    recurrent: np.ndarray  # (units, gates)
    bias: np.ndarray  # GRU: (2, gates), input and recurrent; LSTM: (gates,)


@dataclass(frozen=True)
class Network:
    """Embedding -> recurrent layers -> Dense logits, as model.network builds it."""
    embedding: np.ndarray  # (vocab, embedding)
    layers: tuple[Recurrent, ...]
    dense_kernel: np.ndarray  # (units, vocab)
    dense_bias: np.ndarray  # (vocab,)
    paragraph_id: int = -1  # the character that breaks a paragraph (sampler.sample_rows); -1: none
    memory: object = None  # model.memory.Memory: the tale's memory, from the bundle; None: off
    sentence_classes: object = None  # sampler.sentence_classes of the vocabulary; None: no row stops at an end

    @property
    def vocab_size(self) -> int:
        return self.embedding.shape[0]


# What each layer's config must say for the engines' math to be the layer's math.
REQUIRED = {
    "GRU": {"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True, "use_bias": True,
            "go_backwards": False},
    "LSTM": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "go_backwards": False},
    "Dense": {"activation": "linear", "use_bias": True},
    "Embedding": {"mask_zero": False},
}
SKIPPED = {"InputLayer", "Dropout"}  # no weights, nothing to do at inference


def _snake(name: str) -> str:
    """Keras' to_snake_case: "GRU" -> "gru", "InputLayer" -> "input_layer"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def read_network(path) -> Network:
    """The network in a `.keras` file; UnsupportedModel if the engines cannot run it."""
    import h5py  # Keras' own dependency for this file; imported here so tests of the rest need none

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise UnsupportedModel(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None
    with weights:
        layers = config.get("config", {}).get("layers")
        if config.get("class_name") not in ("Functional", "Sequential") or not isinstance(layers, list):
            raise UnsupportedModel(f"{path}: expected a Functional or Sequential model, "
                                   f"found {config.get('class_name')!r}")
        counts: dict[str, int] = {}
        found = []
        for layer in layers:
            kind, options = layer.get("class_name"), layer.get("config", {})
            group = _snake(kind)
            n = counts[group] = counts.get(group, -1) + 1
            group = group if n == 0 else f"{group}_{n}"  # how Keras names the layer's weights
            if kind in SKIPPED:
                continue
            if kind not in REQUIRED:
                raise UnsupportedModel(f"{path}: layer {options.get('name')!r} is a {kind}; the story engines "
                                       f"run Embedding -> GRU/LSTM -> Dense networks only")
            wrong = {k: options.get(k) for k, v in REQUIRED[kind].items() if options.get(k, v) != v}
            if wrong:
                raise UnsupportedModel(f"{path}: layer {options.get('name')!r} has {wrong}; the story engines "
                                       f"need {REQUIRED[kind]}")
            where = f"layers/{group}/cell/vars" if kind in ("GRU", "LSTM") else f"layers/{group}/vars"
            if where not in weights:
                raise UnsupportedModel(f"{path}: the weights of layer {options.get('name')!r} are missing")
            arrays = [np.asarray(weights[f"{where}/{i}"], np.float32) for i in range(len(weights[where]))]
            found.append((kind, arrays))
    return _assemble(found, str(path))


def network_of(model) -> Network:
    """The same arrays from a Keras model in memory (training, tests, the device engine)."""
    import keras

    found = []
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            continue
        found.append((kind, [np.asarray(w, np.float32) for w in layer.get_weights()]))
    return _assemble(found, model.name)


def _assemble(found, where: str) -> Network:
    kinds = [kind for kind, _ in found]
    if len(kinds) < 3 or kinds[0] != "Embedding" or kinds[-1] != "Dense" or \
            any(k not in ("GRU", "LSTM") for k in kinds[1:-1]):
        raise UnsupportedModel(f"{where}: the layers are {' -> '.join(kinds)}; the story engines run "
                               f"Embedding -> GRU/LSTM... -> Dense")
    layers = []
    for kind, (kernel, recurrent, bias) in (f for f in found[1:-1]):
        if kind == "GRU" and bias.reshape(-1, kernel.shape[1]).shape[0] != 2:
            raise UnsupportedModel(f"{where}: only GRU layers with reset_after=True (the Keras default) run")
        layers.append(Recurrent(kind.lower(), kernel, recurrent, bias))
    (embedding,), (dense_kernel, dense_bias) = found[0][1], found[-1][1]
    return Network(embedding, tuple(layers), dense_kernel, dense_bias)
