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


class _NumpyMath:
    sigmoid, tanh, concatenate = staticmethod(_sigmoid), staticmethod(np.tanh), staticmethod(np.concatenate)


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

    def step(self, xp, h, m=_NumpyMath):
        u = self.units
        hp = h @ self.recurrent + self.recurrent_bias
        z = m.sigmoid(xp[:, :u] + hp[:, :u])
        r = m.sigmoid(xp[:, u:2 * u] + hp[:, u:2 * u])
        candidate = m.tanh(xp[:, 2 * u:] + r * hp[:, 2 * u:])
        h = z * h + (1.0 - z) * candidate
        return h, h


class _LSTM:
    def __init__(self, kernel, recurrent, bias):
        self.units = recurrent.shape[0]
        self.kernel, self.recurrent, self.input_bias = kernel, recurrent, bias
        self.state_size = 2 * self.units  # [h | c] in one array

    def project(self, x):
        return x @ self.kernel + self.input_bias

    def step(self, xp, state, m=_NumpyMath):
        u = self.units
        h, c = state[:, :u], state[:, u:]
        g = xp + h @ self.recurrent
        i, f, o = m.sigmoid(g[:, :u]), m.sigmoid(g[:, u:2 * u]), m.sigmoid(g[:, 3 * u:])
        c = f * c + i * m.tanh(g[:, 2 * u:3 * u])
        h = o * m.tanh(c)
        return h, m.concatenate([h, c], axis=1)


class NumpyEngine:
    """Logits and next states for a batch of rows, from a Keras model built by model.network."""

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
                h, s = layer.step(xp[t:t + 1], s, self.math)
                outputs.append(h)
            x = np.concatenate(outputs)
            new_state.append(s)
        return x[-1:] @ self.dense_kernel + self.dense_bias, new_state

    def _run(self, xp, states):
        new_states = []
        for i, layer in enumerate(self.layers):
            if i:
                xp = layer.project(x)
            x, s = layer.step(xp, states[i], self.math)
            new_states.append(s)
        return x @ self.dense_kernel + self.dense_bias, new_states


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
        for layer in self.layers:
            for attr in ("kernel", "recurrent", "input_bias", "recurrent_bias"):
                if hasattr(layer, attr):
                    setattr(layer, attr, to_device(getattr(layer, attr)))
        self.input_table = to_device(self.input_table)
        self.dense_kernel, self.dense_bias = to_device(self.dense_kernel), to_device(self.dense_bias)
        self.math = _KerasMath(ops)
        self._compiled = _compile(keras.backend.backend(), lambda xp_, *states: self._device_run(xp_, states))

    def _device_run(self, xp, states):
        logits, new_states = NumpyEngine._run(self, xp, list(states))
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
