"""The CPU fast path: whole runs of steps (sample, GRU/LSTM cells, matrix products) compiled by numba.

Calling numpy once per operation costs more than the arithmetic at batch 1, so `generate` runs
k steps for every row inside one compiled call. The matrix product is a 4x4 register-blocked
kernel over the transposed weights, split across cores by column block: at batch 1 it streams
the weights once per step, at batch 64 it keeps the FMA units busy. tanh is Eigen's rational
approximation (the one XLA uses): plain arithmetic, so the cell loops vectorise.
Every layer's weights live in one flat buffer; `layout` says where (see FusedEngine).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# No nnan/ninf: the sampler masks with -inf, and clamps must stay exact.
FAST = {"reassoc", "contract", "nsz", "arcp", "afn"}

GRU, LSTM = 0, 1
# Columns of `layout`, one row per layer.
UNITS, KIND, GATES, CELL, STATE_AT, OUTPUTS, WEIGHTS_AT, BIAS_AT = range(8)


@njit(fastmath=FAST, error_model="numpy", inline="always", cache=True)
def fast_tanh(x):
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


@njit(fastmath=FAST, error_model="numpy", inline="always", cache=True)
def fast_sigmoid(x):
    return np.float32(0.5) + np.float32(0.5) * fast_tanh(np.float32(0.5) * x)


@njit(fastmath=FAST, error_model="numpy", parallel=True, cache=True)
def matmul_t(h, weights_t, bias, out):
    """out = h @ weights_t.T + bias, for h (rows, k) and weights_t (n, k)."""
    rows, k = h.shape
    n = weights_t.shape[0]
    for block in prange(n // 4):
        j = block * 4
        w0, w1, w2, w3 = weights_t[j], weights_t[j + 1], weights_t[j + 2], weights_t[j + 3]
        b = 0
        while b + 4 <= rows:  # 4 rows x 4 columns: 16 accumulators, 8 loads per 16 FMAs
            x0, x1, x2, x3 = h[b], h[b + 1], h[b + 2], h[b + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0)
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0)
            for i in range(k):
                a0, a1, a2, a3 = w0[i], w1[i], w2[i], w3[i]
                v = x0[i]
                s00 += v * a0; s01 += v * a1; s02 += v * a2; s03 += v * a3
                v = x1[i]
                s10 += v * a0; s11 += v * a1; s12 += v * a2; s13 += v * a3
                v = x2[i]
                s20 += v * a0; s21 += v * a1; s22 += v * a2; s23 += v * a3
                v = x3[i]
                s30 += v * a0; s31 += v * a1; s32 += v * a2; s33 += v * a3
            out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s00, s01, s02, s03
            out[b + 1, j], out[b + 1, j + 1], out[b + 1, j + 2], out[b + 1, j + 3] = s10, s11, s12, s13
            out[b + 2, j], out[b + 2, j + 1], out[b + 2, j + 2], out[b + 2, j + 3] = s20, s21, s22, s23
            out[b + 3, j], out[b + 3, j + 1], out[b + 3, j + 2], out[b + 3, j + 3] = s30, s31, s32, s33
            b += 4
        while b < rows:
            x0 = h[b]
            s0 = s1 = s2 = s3 = np.float32(0)
            for i in range(k):
                v = x0[i]
                s0 += v * w0[i]; s1 += v * w1[i]; s2 += v * w2[i]; s3 += v * w3[i]
            out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s0, s1, s2, s3
            b += 1
    for j in range(n - n % 4, n):
        for b in range(rows):
            s = np.float32(0)
            for i in range(k):
                s += h[b, i] * weights_t[j, i]
            out[b, j] = s
    for b in range(rows):
        for j in range(n):
            out[b, j] += bias[j]


@njit(fastmath=FAST, error_model="numpy", cache=True)
def cell(kind, units, xp, hp, cell_state, h):
    """One row's cell. cell_state is updated in place ([h] for GRU, [h | c] for LSTM); h gets
    the output. Same equations as engine._GRU / engine._LSTM."""
    u = units
    if kind == GRU:
        for j in range(u):
            z = fast_sigmoid(xp[j] + hp[j])
            r = fast_sigmoid(xp[u + j] + hp[u + j])
            c = fast_tanh(xp[2 * u + j] + r * hp[2 * u + j])
            v = z * cell_state[j] + (np.float32(1) - z) * c
            cell_state[j] = v
            h[j] = v
    else:
        for j in range(u):
            i = fast_sigmoid(xp[j] + hp[j])
            f = fast_sigmoid(xp[u + j] + hp[u + j])
            g = fast_tanh(xp[2 * u + j] + hp[2 * u + j])
            o = fast_sigmoid(xp[3 * u + j] + hp[3 * u + j])
            c = f * cell_state[u + j] + i * g
            cell_state[u + j] = c
            v = o * fast_tanh(c)
            cell_state[j] = v
            h[j] = v


@njit(error_model="numpy", cache=True)
def sample_row(logits, uniform, temperature, top_k, top_p):
    """sampler.sample_rows for one row, in the same float64 steps so both pick the same id."""
    n = logits.shape[0]
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < n:
        kth = np.sort(z)[n - top_k]
        for i in range(n):
            if z[i] < kth:
                z[i] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        sorted_p = np.sort(p)[::-1]
        before, smallest_kept = 0.0, np.inf
        for v in sorted_p:
            if before < top_p:
                smallest_kept = min(smallest_kept, v)
            before += v
        for i in range(n):
            if p[i] < smallest_kept:
                p[i] = 0.0
    cdf = np.cumsum(p)
    threshold = uniform * cdf[-1]
    for i in range(n):
        if cdf[i] > threshold:
            return i
    return 0


@njit(fastmath=FAST, error_model="numpy", cache=True)
def step(ids, logits, state, table, weights, biases, layout):
    """Feed one character per row: logits and state are updated in place."""
    rows = ids.shape[0]
    xp = np.empty((rows, max(layout[:, OUTPUTS].max(), table.shape[1])), np.float32)
    for b in range(rows):
        xp[b, :table.shape[1]] = table[ids[b]]
    for layer in layout:
        u, gates, at, n = layer[UNITS], layer[GATES], layer[STATE_AT], layer[OUTPUTS]
        recurrent_at = at + layer[CELL]
        h = np.empty((rows, u), np.float32)  # contiguous rows, so the product vectorises
        out = np.empty((rows, n), np.float32)
        for b in range(rows):
            cell(layer[KIND], u, xp[b], state[b, recurrent_at:recurrent_at + gates], state[b, at:recurrent_at], h[b])
        w = weights[layer[WEIGHTS_AT]:layer[WEIGHTS_AT] + n * u].reshape(n, u)
        matmul_t(h, w, biases[layer[BIAS_AT]:layer[BIAS_AT] + n], out)
        for b in range(rows):
            state[b, recurrent_at:recurrent_at + gates] = out[b, :gates]
            xp[b, :n - gates] = out[b, gates:n]
    logits[:] = xp[:, :logits.shape[1]]


@njit(fastmath=FAST, error_model="numpy", cache=True)
def prime(ids, logits, state, table, weights, biases, layout):
    """Feed a prompt to one row (logits and state are (1, ...)), in place."""
    for t in range(ids.shape[0]):
        step(ids[t:t + 1], logits, state, table, weights, biases, layout)


@njit(fastmath=FAST, error_model="numpy", cache=True)
def generate(logits, state, uniforms, temperature, top_k, top_p, table, weights, biases, layout):
    """Steps k = uniforms.shape[1] times for every row: sample a character from the row's logits
    with its own uniform draw, then feed it. logits and state are updated in place; returns the
    sampled ids (rows, k)."""
    rows, steps = uniforms.shape
    ids = np.empty((steps, rows), np.int64)
    for t in range(steps):
        for b in range(rows):
            ids[t, b] = sample_row(logits[b], uniforms[b, t], temperature[b], top_k[b], top_p[b])
        step(ids[t], logits, state, table, weights, biases, layout)
    return ids.T.copy()
