"""Fast CPU inference over a bundle's weights: numpy + BLAS, one batched step for all rows.

The embedding and the first layer's input projection are folded into one table (vocab x gates),
so the first layer costs one row lookup plus its recurrent matmul. States are explicit arrays,
one row per request, which is what lets the generator batch requests that started at different
times (TensorFlow's text-generation tutorial carries states the same way).
"""
from __future__ import annotations

import numpy as np

_SIGMOID_CLIP = 30.0  # exp overflow guard; sigmoid is flat well before this


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -_SIGMOID_CLIP, _SIGMOID_CLIP)))


class _GRU:
    def __init__(self, kernel, recurrent, bias):
        self.units = recurrent.shape[0]
        bias = bias.reshape(-1, 3 * self.units)  # (2, 3u) with reset_after, (1, 3u) without
        if bias.shape[0] != 2:
            raise ValueError("only GRU layers with reset_after=True (the Keras default) are supported")
        self.kernel, self.recurrent = kernel, recurrent
        self.input_bias, self.recurrent_bias = bias[0], bias[1]
        self.state_size = self.units

    def project(self, x):
        return x @ self.kernel + self.input_bias

    def step(self, xp, h):
        u = self.units
        hp = h @ self.recurrent + self.recurrent_bias
        z = _sigmoid(xp[:, :u] + hp[:, :u])
        r = _sigmoid(xp[:, u:2 * u] + hp[:, u:2 * u])
        candidate = np.tanh(xp[:, 2 * u:] + r * hp[:, 2 * u:])
        h = z * h + (1.0 - z) * candidate
        return h, h


class _LSTM:
    def __init__(self, kernel, recurrent, bias):
        self.units = recurrent.shape[0]
        self.kernel, self.recurrent, self.input_bias = kernel, recurrent, bias
        self.state_size = 2 * self.units  # [h | c] in one array

    def project(self, x):
        return x @ self.kernel + self.input_bias

    def step(self, xp, state):
        u = self.units
        h, c = state[:, :u], state[:, u:]
        g = xp + h @ self.recurrent
        i, f, o = _sigmoid(g[:, :u]), _sigmoid(g[:, u:2 * u]), _sigmoid(g[:, 3 * u:])
        c = f * c + i * np.tanh(g[:, 2 * u:3 * u])
        h = o * np.tanh(c)
        return h, np.concatenate([h, c], axis=1)


class NumpyEngine:
    """Logits and next states for a batch of rows, from a Keras model built by model.network."""

    name = "numpy"

    def __init__(self, model):
        import keras

        self.layers = []
        embedding = dense = None
        for layer in model.layers:
            if isinstance(layer, keras.layers.Embedding):
                embedding = np.asarray(layer.embeddings, dtype=np.float32)
            elif isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
                weights = [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]
                cls = _GRU if isinstance(layer, keras.layers.GRU) else _LSTM
                self.layers.append(cls(*weights))
            elif isinstance(layer, keras.layers.Dense):
                dense = [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]
        if embedding is None or dense is None or not self.layers:
            raise ValueError("the model is not an Embedding -> GRU/LSTM -> Dense network")
        self.input_table = self.layers[0].project(embedding)  # (vocab, gates)
        self.dense_kernel, self.dense_bias = dense
        self.vocab_size = embedding.shape[0]

    def zero_state(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((rows, layer.state_size), np.float32) for layer in self.layers]

    def step(self, ids, states):
        """One character per row: ids (rows,) -> logits (rows, vocab), new states."""
        return self._run(self.input_table[np.asarray(ids)], states)

    def prime(self, ids, state):
        """Feed a whole prompt through one row, layer by layer (each layer's input projection is
        one matmul over the prompt); returns the logits after its last character and the state."""
        x, new_state = None, []
        for i, layer in enumerate(self.layers):
            xp = self.input_table[np.asarray(ids)] if i == 0 else layer.project(x)
            s, outputs = state[i], []
            for t in range(len(xp)):
                h, s = layer.step(xp[t:t + 1], s)
                outputs.append(h)
            x = np.concatenate(outputs)
            new_state.append(s)
        return x[-1:] @ self.dense_kernel + self.dense_bias, new_state

    def _run(self, xp, states):
        new_states = []
        for i, layer in enumerate(self.layers):
            if i:
                xp = layer.project(x)
            x, s = layer.step(xp, states[i])
            new_states.append(s)
        return x @ self.dense_kernel + self.dense_bias, new_states


def make_engine(model):
    """The fastest engine this machine has for the model."""
    return NumpyEngine(model)
