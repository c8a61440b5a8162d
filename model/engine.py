"""Inference engines over a bundle's weights: one batched step for all rows, and `generate`,
a run of steps with sampling, which is what the generator calls.

- NumpyEngine: the reference, plain numpy; every other engine is tested against it.
- FusedEngine: the CPU engine; the same math compiled with numba (model.kernels).
- DeviceEngine: the same math through keras.ops, compiled for a GPU (jax.jit or XLA).

Two folds keep a step to one matrix product per layer:
- the embedding and the first layer's input projection become one table (vocab x gates);
- each layer's output h feeds two products, its own recurrence at the next step and the next
  layer's input projection (or the logits); one matrix [U_i | W_i+1] does both, and the
  recurrent part is kept in the state until the next step.
States are explicit arrays, one row per request, which lets the generator batch requests that
started at different times (TensorFlow's text-generation tutorial carries states the same way).
"""
from __future__ import annotations

import copy
import importlib.util
import time
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from model import kernels
from model import memory as tale_memory
from model.sampler import distribution_rows, draw_rows, still_writing
from model.weights import Network


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


class Run(NamedTuple):
    """What a run of steps gives back, a row per request: the characters drawn (rows, steps), their
    scores (the natural log-probability of each at temperature 1, with the memory mixed in as
    drawn: what a critic reads), and the logits, state and memory to go on from."""
    ids: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    state: np.ndarray
    memory: "tale_memory.MemoryRows | None"


class NumpyEngine:
    """Logits and next states for a batch of rows, from a network's weights (model.weights).
    The state is one array, a row per request; per layer it holds
    [cell state | that layer's recurrent projection for the next step]."""

    name = "numpy"
    math = _NumpyMath

    def __init__(self, network: Network):
        cells = {"gru": _GRU, "lstm": _LSTM}
        self.layers = [cells[layer.kind](layer.kernel, layer.recurrent, layer.bias) for layer in network.layers]
        embedding, dense = network.embedding, (network.dense_kernel, network.dense_bias)
        first = self.layers[0]
        self.input_table = embedding @ first.kernel + first.input_bias  # (vocab, gates)
        self.dense_kernel, self.dense_bias = dense
        nexts = [(l.kernel, l.input_bias) for l in self.layers[1:]] + [tuple(dense)]
        self.fused = [np.ascontiguousarray(np.concatenate([l.recurrent, k], axis=1))
                      for l, (k, _) in zip(self.layers, nexts)]
        self.fused_bias = [np.concatenate([l.recurrent_bias, b]) for l, (_, b) in zip(self.layers, nexts)]
        self.vocab_size = embedding.shape[0]
        self.paragraph_id = network.paragraph_id
        self.memory = network.memory
        self.sentence_classes = (np.zeros(self.vocab_size, np.int64) if network.sentence_classes is None
                                 else np.asarray(network.sentence_classes, np.int64))
        widths = [l.cell_size + l.gates for l in self.layers]
        self.state_at = np.cumsum([0] + widths)[:-1].tolist()  # where each layer's columns start

    def zero_state(self, rows: int) -> np.ndarray:
        """A fresh story: zero cell state, so the recurrent projection is just the bias."""
        return np.concatenate([np.concatenate([np.zeros((rows, l.cell_size), np.float32),
                                               np.tile(l.recurrent_bias.astype(np.float32), (rows, 1))], axis=1)
                               for l in self.layers], axis=1)

    def _split(self, state, layer, at):
        return state[:, at:at + layer.cell_size], state[:, at + layer.cell_size:at + layer.cell_size + layer.gates]

    def step(self, ids, state):
        """One character per row: ids (rows,) -> logits (rows, vocab), new state."""
        return self._run(self.input_table[np.asarray(ids)], state)

    def _run(self, xp, state):
        m, parts = self.math, []
        for layer, at, fused, bias in zip(self.layers, self.state_at, self.fused, self.fused_bias):
            cell_state, hp = self._split(state, layer, at)
            h, cell_state = layer.cell(xp, hp, cell_state, m)
            out = h @ fused + bias
            parts += [cell_state, out[:, :layer.gates]]
            xp = out[:, layer.gates:]
        return xp, m.concatenate(parts, axis=1)

    def prime(self, prompts):
        """Fresh rows, one per prompt (a list of id arrays), each fed its whole prompt.
        Returns the logits after each prompt's last character and the rows' state."""
        rows = [self._prime_one(np.asarray(ids)) for ids in prompts]
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    def _prime_one(self, ids):
        # Layer by layer: each layer's input projection is one product over the whole prompt.
        m, x, parts, state = self.math, None, [], self.zero_state(1)
        for i, (layer, at) in enumerate(zip(self.layers, self.state_at)):
            xp = self.input_table[ids] if i == 0 else x @ layer.kernel + layer.input_bias
            cell_state, hp = self._split(state, layer, at)
            outputs = []
            for t in range(len(xp)):
                h, cell_state = layer.cell(xp[t:t + 1], hp, cell_state, m)
                hp = h @ layer.recurrent + layer.recurrent_bias
                outputs.append(h)
            x = np.concatenate(outputs)
            parts += [cell_state, hp]
        return x[-1:] @ self.dense_kernel + self.dense_bias, np.concatenate(parts, axis=1)

    def generate(self, logits, state, uniforms, temperature, top_k, top_p, memory=None, stops=None):
        """uniforms.shape[1] steps for every row: sample from the row's logits with its own
        uniform draw (and the tale's `memory` rows, model.memory.MemoryRows, when given), then feed
        the character. `stops`, (stop_at_end, before): rows that stop after a sentence's end (their
        later ids are -1), and every row's last two ids. Returns a Run."""
        rows = len(uniforms)
        stop_at_end, before = stops if stops is not None else (np.zeros(rows, bool), np.full((rows, 2), -1))
        before, active = np.array(before, np.int64), np.ones(rows, bool)
        ids, scores = np.empty(uniforms.shape, np.int64), np.empty(uniforms.shape, np.float64)
        for t in range(uniforms.shape[1]):
            drawn, score, fed = self._sample(logits, uniforms[:, t], temperature, top_k, top_p, memory, np)
            ids[:, t], scores[:, t] = np.where(active, drawn, -1), np.where(active, score, 0.0)
            new_logits, new_state = self.step(drawn, state)
            logits, state = np.where(active[:, None], new_logits, logits), np.where(active[:, None], new_state, state)
            memory = _where_rows(np, active, fed, memory)
            active, before = still_writing(np, active, stop_at_end, before, drawn, self.sentence_classes)
        return Run(ids, scores, np.asarray(logits), np.asarray(state), memory)

    def read(self, logits, state, ids, memory=None) -> Run:
        """Like `generate`, but the characters are given (ids: rows, steps), not drawn: their
        scores are what a row that drew them would have been given."""
        ids = np.asarray(ids, np.int64)
        scores = np.empty(ids.shape, np.float64)
        ones = np.ones(len(ids))
        for t in range(ids.shape[1]):
            _, scores[:, t], memory = self._sample(logits, ones, ones, np.zeros(len(ids), np.int64), ones, memory, np,
                                                   ids[:, t])
            logits, state = self.step(ids[:, t], state)
        return Run(ids, scores, np.asarray(logits), np.asarray(state), memory)

    def _sample(self, logits, uniforms, temperature, top_k, top_p, memory, xp, forced=None):
        """One character per row (`forced`, where given), its score (see Run), and the memory after it."""
        p = distribution_rows(logits, temperature, top_k, top_p, xp, self.paragraph_id)
        ones = xp.ones_like(temperature)
        q = distribution_rows(logits, ones, xp.zeros_like(top_k), ones, xp)
        if memory is not None:
            following, weight, name_start = tale_memory.predict_rows(xp, self.memory, memory)
            p = tale_memory.mix_rows(xp, self.memory, p, logits, following, weight, name_start, memory.initials)
            q = tale_memory.mix_rows(xp, self.memory, q, logits, following, weight, name_start, memory.initials)
        ids = draw_rows(p, uniforms, xp) if forced is None else forced
        chosen = xp.take_along_axis(q, ids[:, None], axis=1)[:, 0] / xp.sum(q, axis=1)
        scores = xp.log(xp.maximum(chosen, 1e-300))
        return ids, scores, None if memory is None else tale_memory.feed_rows(xp, self.memory, memory, ids)


def _where_rows(xp, active, new, old):
    """The memory rows: `new` where a row is active, else `old` (None stays None)."""
    if new is None:
        return None
    return tale_memory.MemoryRows(*(xp.where(xp.reshape(active, (-1,) + (1,) * (len(xp.shape(a)) - 1)), a, b)
                                    for a, b in zip(new, old)))


class ThreadChooser:
    """How many numba threads a run of steps gets, chosen by measurement. Parallel loops wait for
    the busiest core, so while another process holds one, fewer threads are faster. Each batch
    width keeps a moving cost per row of every choice, uses the cheapest, and now and then tries
    another, so it follows the machine's load as it comes and goes. The first call after the
    thread count changes is not counted: it wakes the threads and would make the count that is not
    in use look slow for ever (one row ran on one thread at half the speed of two)."""

    PROBE_EVERY = 200  # calls between tries of a choice not in use (each try costs about one call)
    PROBE_CALLS = 3  # calls a try lasts: the first wakes the threads, the others are measured

    def __init__(self, most: int):
        self.options = tuple(sorted({1, most}, reverse=True))
        self.cost: dict[tuple[int, int], float] = {}  # (width class, threads) -> seconds per row
        self.calls = 0
        self.last_threads: int | None = None

    @staticmethod
    def width(rows: int) -> int:
        return min(rows, 64).bit_length()  # 1, 2-3, 4-7, ... 64

    def pick(self, rows: int) -> int:
        width = self.width(rows)
        costs = [(self.cost.get((width, n)), n) for n in self.options]
        untried = [n for cost, n in costs if cost is None]
        if untried:
            return untried[0]
        self.calls += 1
        best = min(costs)[1]
        if self.calls % self.PROBE_EVERY < self.PROBE_CALLS and len(self.options) > 1:
            return next(n for n in self.options if n != best)
        return best

    def record(self, rows: int, threads: int, seconds: float) -> None:
        switched, self.last_threads = threads != self.last_threads, threads
        if switched:
            return
        key, cost = (self.width(rows), threads), seconds / rows
        old = self.cost.get(key)
        self.cost[key] = cost if old is None else 0.5 * old + 0.5 * cost


class FusedEngine(NumpyEngine):
    """The CPU engine the generator uses: NumpyEngine's folded weights, run by numba-compiled
    kernels (model.kernels): a whole run of steps, sampling included, per call. Priming runs
    there too, so the process never wakes BLAS threads that would then spin against the kernels."""

    name = "fused"

    def __init__(self, network: Network):
        super().__init__(network)
        layout, weights, biases, weights_at, bias_at = [], [], [], 0, 0
        for layer, at, fused, bias in zip(self.layers, self.state_at, self.fused, self.fused_bias):
            kind = kernels.GRU if isinstance(layer, _GRU) else kernels.LSTM
            outputs = fused.shape[1]
            layout.append((layer.units, kind, layer.gates, layer.cell_size, at, outputs, weights_at, bias_at))
            weights.append(fused.T.ravel())  # (outputs, units): each output's weights contiguous
            biases.append(bias)
            weights_at, bias_at = weights_at + fused.size, bias_at + outputs
        self._weights = (np.ascontiguousarray(self.input_table, np.float32),
                         np.concatenate(weights).astype(np.float32), np.concatenate(biases).astype(np.float32),
                         np.array(layout, np.int64))
        self.threads = ThreadChooser(numba.config.NUMBA_NUM_THREADS)
        # Compile (or load from numba's cache) now, not on the first story.
        logits, state = self.prime([[0]])
        self.generate(logits, state, np.zeros((1, 1)), np.ones(1), np.zeros(1, np.int64), np.ones(1))
        if self.memory is not None:
            rows = tale_memory.new_rows(self.memory, [np.zeros(1, np.int64)], [[]], np.zeros((1, self.vocab_size)))
            self.generate(logits, state, np.zeros((1, 1)), np.ones(1), np.zeros(1, np.int64), np.ones(1), rows)

    def prime(self, prompts):
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first
        ids, lengths = _prompt_matrix([prompts[i] for i in order])
        logits, state = np.zeros((len(prompts), self.vocab_size), np.float32), self.zero_state(len(prompts))
        kernels.prime(ids, lengths, logits, state, *self._weights)
        back = np.argsort(order)  # rows in the caller's order
        return logits[back], state[back]

    def generate(self, logits, state, uniforms, temperature, top_k, top_p, memory=None, stops=None):
        logits = np.array(logits, np.float32, order="C")  # copies: the kernel works in place
        state = np.array(state, np.float32, order="C")
        settings = [np.ascontiguousarray(a, dtype) for a, dtype in
                    ((uniforms, np.float64), (temperature, np.float64), (top_k, np.int64), (top_p, np.float64))]
        rows = len(logits)
        if memory is None:  # no columns: the kernel leaves the memory out
            held = tale_memory.MemoryRows(np.zeros((rows, 0), np.int32), np.zeros((rows, 0), np.int32),
                                          np.zeros(rows, np.int64), np.zeros(rows, np.int64), np.zeros((rows, 0)))
            tables = (np.zeros(1, np.int64), np.zeros(1), False, 0.0, 0.0, 0)
        else:
            held = tale_memory.MemoryRows(*(np.array(a, order="C") for a in memory))
            m = self.memory
            tables = (m.classes, m.weights, m.names_only, m.name_weight, m.name_share, m.separator)
        stop_at_end, before = stops if stops is not None else (np.zeros(rows, bool), np.full((rows, 2), -1))
        stop_at_end, before = np.ascontiguousarray(stop_at_end, np.bool_), np.array(before, np.int64, order="C")
        threads = self.threads.pick(rows)
        numba.set_num_threads(threads)
        started = time.perf_counter()
        ids, scores = kernels.generate(logits, state, *settings, self.paragraph_id, *held, *tables, stop_at_end, before,
                                       self.sentence_classes, *self._weights)
        self.threads.record(rows, threads, time.perf_counter() - started)
        return Run(ids, scores, logits, state, None if memory is None else held)


class DeviceEngine(NumpyEngine):
    """The same steps compiled for an accelerator through Keras' backend (jax.jit on JAX, an XLA
    tf.function on TensorFlow). `generate` runs all its steps, sampling included, in one compiled
    call, so states stay on the device and only the ids, logits and state of the run come back.
    Batches are padded to `rows` (the generator's max batch) and runs are `steps` long: on a GPU a
    full batch costs about what one row does, and a single shape means a single compilation, done
    before the first story."""

    name = "device"

    def __init__(self, network: Network, rows: int = 64, steps: int = 16):
        import keras

        super().__init__(network)
        if self.memory is not None:  # the device computes in float32 and int32
            self.memory = copy.copy(self.memory)
            self.memory.weights, self.memory.classes = self.memory.weights.astype(np.float32), \
                self.memory.classes.astype(np.int32)
        self.rows = rows
        self.ops = ops = keras.ops
        self.input_table = ops.convert_to_tensor(self.input_table)
        self.fused = [ops.convert_to_tensor(w) for w in self.fused]
        self.fused_bias = [ops.convert_to_tensor(b) for b in self.fused_bias]
        self.math = _KerasMath(ops)
        self.classes_on_device = ops.convert_to_tensor(self.sentence_classes.astype(np.int32))
        backend = keras.backend.backend()
        self._step = _compile(backend, self._device_step)
        self._prime_step = _compile(backend, self._device_prime_step)
        self._generate = _compile(backend, self._device_generate)
        logits, state = self.prime([[0]])  # compile now
        memory = None if self.memory is None else tale_memory.new_rows(
            self.memory, [np.zeros(1, np.int64)], [[]], np.zeros((1, self.vocab_size)))
        self.generate(logits, state, np.zeros((1, steps)), np.ones(1), np.zeros(1, np.int64), np.ones(1), memory)

    def _device_step(self, ids, state):
        return self._run(self.ops.take(self.input_table, ids, axis=0), state)

    def _device_prime_step(self, ids, reading, logits, state):
        """One prompt character for the rows still reading theirs; the others keep what they have."""
        new_logits, new_state = self._device_step(ids, state)
        reading = reading[:, None]
        return self.ops.where(reading, new_logits, logits), self.ops.where(reading, new_state, state)

    def _device_generate(self, logits, state, uniforms, temperature, top_k, top_p, memory, stop_at_end, before):
        ops, ids, scores = self.ops, [], []
        memory = None if memory is None else tale_memory.MemoryRows(*memory)
        active = ops.ones_like(stop_at_end)
        for t in range(uniforms.shape[1]):  # a short run, unrolled: same code on every backend
            sampled, score, fed = self._sample(logits, uniforms[:, t], temperature, top_k, top_p, memory, ops)
            ids.append(ops.where(active, sampled, -1))
            scores.append(ops.where(active, score, 0.0))
            new_logits, new_state = self._device_step(sampled, state)
            logits = ops.where(active[:, None], new_logits, logits)
            state = ops.where(active[:, None], new_state, state)
            memory = _where_rows(ops, active, fed, memory)
            active, before = still_writing(ops, active, stop_at_end, before, sampled, self.classes_on_device)
        return (ops.stack(ids, axis=1), ops.stack(scores, axis=1), logits, state,
                None if memory is None else tuple(memory))

    def _pad(self, a, dtype, fill):
        a = np.asarray(a, dtype)
        width = max(self.rows, len(a))
        return np.concatenate([a, np.full((width - len(a), *a.shape[1:]), fill, dtype)])

    def step(self, ids, state):
        logits, state = self._step(self._pad(ids, np.int32, 0), self._pad(state, np.float32, 0))
        return np.asarray(logits)[:len(ids)], np.asarray(state)[:len(ids)]

    def prime(self, prompts):
        ids, lengths = _prompt_matrix(prompts)
        ids, lengths = self._pad(ids, np.int32, 0), self._pad(lengths, np.int64, 0)
        logits, state = np.zeros((len(ids), self.vocab_size), np.float32), self.zero_state(len(ids))
        for t in range(ids.shape[1]):  # every row together, one character a call; states stay on the device
            logits, state = self._prime_step(ids[:, t], lengths > t, logits, state)
        return np.asarray(logits)[:len(prompts)], np.asarray(state)[:len(prompts)]

    def generate(self, logits, state, uniforms, temperature, top_k, top_p, memory=None, stops=None):
        device_types = (np.int32, np.int32, np.int32, np.int32, np.float32)
        held = None if memory is None else tuple(self._pad(a, dtype, 1 if i == 2 else 0)  # length 1: a padding row
                                                 for i, (a, dtype) in enumerate(zip(memory, device_types)))
        rows = len(uniforms)
        stop_at_end, before = stops if stops is not None else (np.zeros(rows, bool), np.full((rows, 2), -1))
        ids, scores, logits, state, held = self._generate(
            self._pad(logits, np.float32, 0), self._pad(state, np.float32, 0), self._pad(uniforms, np.float32, 0.5),
            self._pad(temperature, np.float32, 1), self._pad(top_k, np.int32, 0), self._pad(top_p, np.float32, 1),
            held, self._pad(stop_at_end, bool, False), self._pad(before, np.int32, -1))
        memory = None if held is None else tale_memory.MemoryRows(
            *(np.asarray(a)[:rows].astype(mine.dtype) for a, mine in zip(held, memory)))
        return Run(np.asarray(ids)[:rows], np.asarray(scores)[:rows].astype(np.float64), np.asarray(logits)[:rows],
                   np.asarray(state)[:rows], memory)


def _prompt_matrix(prompts):
    """Prompts of any lengths as one zero-padded id matrix (rows, longest), and their lengths."""
    lengths = np.array([len(p) for p in prompts], np.int64)
    ids = np.zeros((len(prompts), lengths.max()), np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = prompt
    return ids, lengths


class _KerasMath:
    def __init__(self, ops):
        self.sigmoid, self.tanh, self.concatenate = ops.sigmoid, ops.tanh, ops.concatenate


def _compile(backend: str, fn):
    if backend == "jax":
        import jax
        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True)
    return fn


def has_accelerator() -> bool:
    """Whether an NVIDIA GPU is there, asked of the driver, not of a framework: importing one
    only to learn that there is no GPU would cost the CPU box the memory this design saves."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def engine_kind(choice: str = "auto") -> str:
    """The fastest engine this machine has: "device" (the compiled loop, through Keras from the
    `gpu` extra) on a GPU, else "cpu" (numba). `choice` is QUILL_ENGINE: auto, cpu or device."""
    if choice == "device" or choice == "auto" and has_accelerator() and importlib.util.find_spec("keras"):
        return "device"
    return "cpu"


def make_engine(network: Network, max_batch: int, steps_per_call: int, choice: str = "auto"):
    if engine_kind(choice) == "device":
        return DeviceEngine(network, max_batch, steps_per_call)
    return FusedEngine(network)
