"""Fast CPU inference over a bundle's weights: numpy + BLAS, one batched step for all rows.

Two folds keep a step to one matrix product per layer:
- the embedding and the first layer's input projection become one table (vocab x gates);
- each layer's output h feeds two products, its own recurrence at the next step and the next
  layer's input projection (or the logits); one matrix [U_i | W_i+1] does both, and the
  recurrent part is kept in the state until the next step.
States are explicit arrays, one row per request, which lets the generator batch requests that
started at different times (TensorFlow's text-generation tutorial carries states the same way).
"""
from __future__ import annotations

import numpy as np

def _sigmoid(x):
    # One tanh instead of clip + exp + divide: exact, overflow-free, and fewer passes at batch 1.
    return 0.5 + 0.5 * np.tanh(0.5 * x)


class _NumpyMath:
    sigmoid, tanh, concatenate = staticmethod(_sigmoid), staticmethod(np.tanh), staticmethod(np.concatenate)


class _GRU:
    """Keras GRU (reset_after=True): gates z, r, h; the cell state is h."""

    def __init__(self, kernel, recurrent, bias):
        self.units = recurrent.shape[0]
        bias = bias.reshape(-1, 3 * self.units)  # (2, 3u) with reset_after, (1, 3u) without
        if bias.shape[0] != 2:
            raise ValueError("only GRU layers with reset_after=True (the Keras default) are supported")
        self.kernel, self.recurrent = kernel, recurrent
        self.input_bias, self.recurrent_bias = bias[0], bias[1]
        self.gates, self.cell_size = 3 * self.units, self.units

    def cell(self, xp, hp, h, m):
        u = self.units
        z = m.sigmoid(xp[:, :u] + hp[:, :u])
        r = m.sigmoid(xp[:, u:2 * u] + hp[:, u:2 * u])
        candidate = m.tanh(xp[:, 2 * u:] + r * hp[:, 2 * u:])
        h = z * h + (1.0 - z) * candidate
        return h, h


class _LSTM:
    """Keras LSTM: gates i, f, c, o; the cell state is [h | c]."""

    def __init__(self, kernel, recurrent, bias):
        self.units = recurrent.shape[0]
        self.kernel, self.recurrent, self.input_bias = kernel, recurrent, bias
        self.recurrent_bias = np.zeros_like(bias)  # Keras puts the LSTM's one bias on the input side
        self.gates, self.cell_size = 4 * self.units, 2 * self.units

    def cell(self, xp, hp, state, m):
        u = self.units
        c = state[:, u:]
        g = xp + hp
        i, f, o = m.sigmoid(g[:, :u]), m.sigmoid(g[:, u:2 * u]), m.sigmoid(g[:, 3 * u:])
        c = f * c + i * m.tanh(g[:, 2 * u:3 * u])
        h = o * m.tanh(c)
        return h, m.concatenate([h, c], axis=1)


class NumpyEngine:
    """Logits and next states for a batch of rows, from a Keras model built by model.network.
    A row's state per layer is [cell state | that layer's recurrent projection for the next step]."""

    name = "numpy"
    math = _NumpyMath

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
        first = self.layers[0]
        self.input_table = embedding @ first.kernel + first.input_bias  # (vocab, gates)
        self.dense_kernel, self.dense_bias = dense
        nexts = [(l.kernel, l.input_bias) for l in self.layers[1:]] + [tuple(dense)]
        self.fused = [np.ascontiguousarray(np.concatenate([l.recurrent, k], axis=1))
                      for l, (k, _) in zip(self.layers, nexts)]
        self.fused_bias = [np.concatenate([l.recurrent_bias, b]) for l, (_, b) in zip(self.layers, nexts)]
        self.vocab_size = embedding.shape[0]

    def zero_state(self, rows: int) -> list[np.ndarray]:
        """A fresh story: zero cell state, so the recurrent projection is just the bias."""
        return [np.concatenate([np.zeros((rows, l.cell_size), np.float32),
                                np.tile(l.recurrent_bias.astype(np.float32), (rows, 1))], axis=1)
                for l in self.layers]

    def step(self, ids, states):
        """One character per row: ids (rows,) -> logits (rows, vocab), new states."""
        return self._run(self.input_table[np.asarray(ids)], states)

    def _run(self, xp, states):
        m, new_states = self.math, []
        for layer, state, fused, bias in zip(self.layers, states, self.fused, self.fused_bias):
            h, cell_state = layer.cell(xp, state[:, layer.cell_size:], state[:, :layer.cell_size], m)
            out = h @ fused + bias
            new_states.append(m.concatenate([cell_state, out[:, :layer.gates]], axis=1))
            xp = out[:, layer.gates:]
        return xp, new_states

    def prime(self, ids, state):
        """Feed a whole prompt through one row, layer by layer: each layer's input projection is
        one matrix product over the whole prompt. Returns the logits after its last character."""
        m, x, new_state = self.math, None, []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            xp = self.input_table[np.asarray(ids)] if i == 0 else x @ layer.kernel + layer.input_bias
            cell_state, hp, outputs = s[:, :layer.cell_size], s[:, layer.cell_size:], []
            for t in range(len(xp)):
                h, cell_state = layer.cell(xp[t:t + 1], hp, cell_state, m)
                hp = h @ layer.recurrent + layer.recurrent_bias
                outputs.append(h)
            x = np.concatenate(outputs)
            new_state.append(np.concatenate([cell_state, hp], axis=1))
        return x[-1:] @ self.dense_kernel + self.dense_bias, new_state


class DeviceEngine(NumpyEngine):
    """The same step compiled for an accelerator through Keras' backend (jax.jit on JAX,
    an XLA tf.function on TensorFlow). Weights live on the device; logits and states come back
    as numpy arrays because sampling and row bookkeeping happen on the host."""

    name = "device"

    def __init__(self, model):
        import keras

        super().__init__(model)
        ops = keras.ops
        to_device = ops.convert_to_tensor
        self.input_table = to_device(self.input_table)
        self.fused = [to_device(w) for w in self.fused]
        self.fused_bias = [to_device(b) for b in self.fused_bias]
        self.math = _KerasMath(ops)
        self._compiled = _compile(keras.backend.backend(), lambda xp_, *states: self._device_run(xp_, states))

    def _device_run(self, xp, states):
        logits, new_states = self._run(xp, list(states))
        return (logits, *new_states)

    def step(self, ids, states):
        import keras

        xp = keras.ops.take(self.input_table, keras.ops.convert_to_tensor(np.asarray(ids, np.int32)), axis=0)
        logits, *states = self._compiled(xp, *states)
        return np.asarray(logits), [np.asarray(s) for s in states]

    def prime(self, ids, state):
        logits = None
        for i in ids:  # one compiled step per prompt character keeps a single compiled shape family
            logits, state = self.step([i], state)
        return logits, state


class _KerasMath:
    def __init__(self, ops):
        self.sigmoid, self.tanh, self.concatenate = ops.sigmoid, ops.tanh, ops.concatenate


def _compile(backend: str, fn):
    if backend == "jax":
        import jax
        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    return fn


def has_accelerator() -> bool:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return any(d.platform != "cpu" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    return False


def make_engine(model, device: str = "auto"):
    """The fastest engine this machine has: the compiled device step on a GPU, numpy on a CPU."""
    if device == "device" or (device == "auto" and has_accelerator()):
        return DeviceEngine(model)
    return NumpyEngine(model)
