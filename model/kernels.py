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

from model.memory import JOIN, LONGEST, LOWER, PAUSE, SPACE, UPPER
from model.sampler import BREAK, CLOSING, END_MARK, PARAGRAPH

# No nnan/ninf: the sampler masks with -inf, and clamps must stay exact.
FAST = {"reassoc", "contract", "nsz", "arcp", "afn"}

GRU, LSTM = 0, 1
PARALLEL_ROWS = 8  # from this many rows, row loops are split across threads
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
def sample_row(logits, uniform, temperature, top_k, top_p, p, paragraph_id):
    """sampler.sample_rows for one row. p is scratch space (vocab,)."""
    row_distribution(logits, temperature, top_k, top_p, p, paragraph_id)
    return draw_row(p, uniform)


@njit(error_model="numpy", cache=True)
def row_distribution(logits, temperature, top_k, top_p, p, paragraph_id):
    """sampler.distribution_rows for one row, into p, in the same float64 steps so both pick the
    same id. The usual case (no top-k/top-p) allocates nothing."""
    n = logits.shape[0]
    for i in range(n):
        p[i] = logits[i] / temperature
    if paragraph_id >= 0:
        p[paragraph_id] = logits[paragraph_id] + logits.max() * (1.0 / temperature - 1.0)
    if 0 < top_k < n:
        kth = np.sort(p)[n - top_k]
        for i in range(n):
            if p[i] < kth:
                p[i] = -np.inf
    top = p.max()
    total = 0.0
    for i in range(n):
        p[i] = np.exp(p[i] - top)
        total += p[i]
    for i in range(n):
        p[i] /= total
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


@njit(error_model="numpy", cache=True)
def draw_row(p, uniform):
    """sampler.draw_rows for one row."""
    total = 0.0
    for i in range(p.shape[0]):
        total += p[i]
    threshold, cdf = uniform * total, 0.0
    for i in range(p.shape[0]):
        cdf += p[i]
        if cdf > threshold:
            return i
    return 0


# The tale's memory, for one row: model.memory's feed_rows, predict_rows and mix_rows.


@njit(error_model="numpy", inline="always", cache=True)
def _letter(kind):
    return kind == LOWER or kind == UPPER


@njit(error_model="numpy", cache=True)
def feed_row(history, matches, length, run_start, c, classes, separator):
    """memory.feed_rows for one row: matches and history in place; returns (length, run_start)."""
    letter = _letter(classes[c])
    for j in range(length - 1, -1, -1):  # downwards: matches[j - 1] is still the old one
        held = history[j]
        if held == separator and not letter:
            matches[j] = 1
        elif held == c:
            matches[j] = min((matches[j - 1] if j > 0 else 0) + 1, LONGEST)
        else:
            matches[j] = 0
    matches[length] = 0
    before, now = classes[history[length - 1]], classes[c]
    in_word = _letter(before)
    if now == UPPER:
        if not (in_word or (before == SPACE and run_start >= 0)):
            run_start = length
    elif now == LOWER or now == SPACE:
        if not in_word:
            run_start = -1
    else:
        run_start = -1
    history[length] = c
    return length + 1, run_start


@njit(error_model="numpy", cache=True)
def feed_text(history, matches, length, run_start, ids, classes, separator):
    for c in ids:
        length, run_start = feed_row(history, matches, length, run_start, c, classes, separator)
    return length, run_start


@njit(error_model="numpy", cache=True)
def predict_row(history, matches, length, run_start, classes, weights, names_only, name_weight):
    """memory.predict_rows for one row: (following id, weight, whether a name may begin); the id
    is the batch rule's wherever the weight is above 0 (a silent memory predicts nothing)."""
    best, longest = 0, 0
    if run_start >= 0 or not names_only:  # names only: outside a name the memory is silent, so skip the search
        for j in range(length):
            if matches[j] > 0 and matches[j] >= longest:  # the longest, and of those the latest
                best, longest = j, matches[j]
    speaks = longest > 0
    if names_only:
        speaks = speaks and run_start >= 0 and longest >= length - run_start + 1
    in_name = (run_start >= 2 and classes[history[run_start - 1]] == SPACE
               and (classes[history[run_start - 2]] == LOWER or classes[history[run_start - 2]] == PAUSE))
    weight = weights[(LONGEST + 1 if in_name else 0) + longest] if speaks else 0.0
    if speaks and in_name and _letter(classes[history[length - 1]]):
        weight = max(weight, name_weight)
    before_last = classes[history[max(length - 2, 0)]]
    word_start = classes[history[max(length - 1, 0)]] == SPACE and (before_last == LOWER or before_last == PAUSE)
    return history[best + 1], weight, word_start and weight == 0.0


@njit(error_model="numpy", cache=True)
def mix_row(p, logits, following, weight, name_start, initials, classes, share):
    """memory.mix_rows for one row, in place, in the same float64 steps."""
    n = p.shape[0]
    total = 0.0
    for i in range(n):
        total += p[i]
    for i in range(n):
        p[i] = p[i] / total
    if name_start:
        named = 0.0
        for i in range(n):
            if logits[i] > -np.inf:
                named += initials[i]
        if named > 0:
            top = logits.max()
            odds, capital_odds, in_capitals = 0.0, 0.0, 0.0
            for i in range(n):
                e = np.exp(logits[i] - top)
                odds += e
                if classes[i] == UPPER:
                    capital_odds += e
                    in_capitals += p[i]
            mass = capital_odds / odds
            given = share if in_capitals > 0 else 1.0
            for i in range(n):
                if classes[i] == UPPER:
                    initial = initials[i] / max(named, 1e-30) if logits[i] > -np.inf else 0.0
                    p[i] = mass * ((1 - given) * p[i] / max(in_capitals, 1e-30) + given * initial)
                else:
                    p[i] = (1 - mass) * p[i] / max(1 - in_capitals, 1e-30)
    if weight > 0:
        if not _letter(classes[following]):  # the earlier word ended here: the model's choice of a non-letter
            endings = 0.0
            for i in range(n):
                if not _letter(classes[i]) and classes[i] != JOIN:
                    endings += p[i]
            if endings > 0:
                for i in range(n):
                    ends = not _letter(classes[i]) and classes[i] != JOIN
                    target = p[i] / max(endings, 1e-30) if ends else 0.0
                    p[i] = (1 - weight) * p[i] + weight * target
        elif logits[following] > -np.inf:
            for i in range(n):
                p[i] = (1 - weight) * p[i] + (weight if i == following else 0.0)


@njit(fastmath=FAST, error_model="numpy", inline="always", cache=True)
def _layer_row(b, i, ids, table, previous, layout, state, h):
    """Row b's cell in layer i. Its input projection comes from the table (first layer) or from
    the previous layer's product, whose recurrent part is stored in the state first."""
    layer = layout[i]
    at, gates = layer[STATE_AT], layer[GATES]
    recurrent_at = at + layer[CELL]
    if i == 0:
        xp = table[ids[b]]
    else:
        before = layout[i - 1]
        before_at, before_gates = before[STATE_AT] + before[CELL], before[GATES]
        for j in range(before_gates):  # a loop, not a slice copy: parfors' size checks trip on those
            state[b, before_at + j] = previous[b, j]
        xp = previous[b, before_gates:]
    cell(layer[KIND], layer[UNITS], xp, state[b, recurrent_at:recurrent_at + gates], state[b, at:recurrent_at], h[b])


@njit(fastmath=FAST, error_model="numpy", inline="always", cache=True)
def _last_row(b, out, layer, state, logits):
    at, gates = layer[STATE_AT] + layer[CELL], layer[GATES]
    for j in range(gates):
        state[b, at + j] = out[b, j]
    for j in range(logits.shape[1]):
        logits[b, j] = out[b, gates + j]


@njit(fastmath=FAST, error_model="numpy", parallel=True, cache=True)
def step(ids, logits, state, table, weights, biases, layout, active):
    """Feed one character per active row: logits and state are updated in place (an inactive
    row's are left as they are). Row loops go to threads only for wide batches: a parallel loop
    costs ~1.5 us to start, more than one row."""
    rows = ids.shape[0]
    wide = rows >= PARALLEL_ROWS
    out = np.empty((rows, 0), np.float32)
    for i in range(layout.shape[0]):
        layer = layout[i]
        h = np.empty((rows, layer[UNITS]), np.float32)  # contiguous rows, so the product vectorises
        if wide:
            for b in prange(rows):
                if active[b]:
                    _layer_row(b, i, ids, table, out, layout, state, h)
        else:
            for b in range(rows):
                if active[b]:
                    _layer_row(b, i, ids, table, out, layout, state, h)
        n = layer[OUTPUTS]
        out = np.empty((rows, n), np.float32)
        w = weights[layer[WEIGHTS_AT]:layer[WEIGHTS_AT] + n * layer[UNITS]].reshape(n, layer[UNITS])
        matmul_t(h, w, biases[layer[BIAS_AT]:layer[BIAS_AT] + n], out)
    last = layout[layout.shape[0] - 1]
    if wide:
        for b in prange(rows):
            if active[b]:
                _last_row(b, out, last, state, logits)
    else:
        for b in range(rows):
            if active[b]:
                _last_row(b, out, last, state, logits)


@njit(fastmath=FAST, error_model="numpy", cache=True)
def prime(ids, lengths, logits, state, table, weights, biases, layout):
    """Feed every row its prompt, all rows together: row b takes ids[b, :lengths[b]]. Rows come
    longest first, so the rows still reading at step t are a prefix and the others keep their
    state untouched. logits and state are updated in place."""
    for t in range(ids.shape[1]):
        rows = 0
        while rows < len(lengths) and lengths[rows] > t:
            rows += 1
        step(ids[:rows, t].copy(), logits[:rows], state[:rows], table, weights, biases, layout,
             np.ones(rows, np.bool_))


@njit(error_model="numpy", cache=True)
def _write_row(t, b, ids, scores, logits, uniforms, temperature, top_k, top_p, scratch, paragraph_id, memory):
    """Row b's character t: drawn from its logits (and its memory, where `history` has columns),
    then fed to the memory; its score is its natural log-probability at temperature 1, the memory
    mixed in as drawn (the critic's reading). (Not inlined: inlined into the prange loop, numba
    0.6x mis-compiled its writes, and the engines' agreement test caught it.)"""
    history, matches, length, run_start, initials, classes, weights, names_only, name_weight, share, separator = memory
    p, q = scratch[0, b], scratch[1, b]
    row_distribution(logits[b], temperature[b], top_k[b], top_p[b], p, paragraph_id)
    row_distribution(logits[b], 1.0, 0, 1.0, q, -1)
    remember = history.shape[1] > 0
    if remember:
        following, weight, name_start = predict_row(history[b], matches[b], length[b], run_start[b], classes,
                                                    weights, names_only, name_weight)
        mix_row(p, logits[b], following, weight, name_start, initials[b], classes, share)
        mix_row(q, logits[b], following, weight, name_start, initials[b], classes, share)
    drawn = draw_row(p, uniforms[b, t])
    ids[t, b] = drawn
    total = 0.0
    for i in range(q.shape[0]):
        total += q[i]
    scores[t, b] = np.log(max(q[drawn] / total, 1e-300))
    if remember:
        length[b], run_start[b] = feed_row(history[b], matches[b], length[b], run_start[b], drawn, classes,
                                           separator)


@njit(fastmath=FAST, error_model="numpy", parallel=True, cache=True)
def generate(logits, state, uniforms, temperature, top_k, top_p, paragraph_id, history, matches, length, run_start,
             initials, classes, weights, names_only, name_weight, share, separator, stop_at_end, before,
             sentence_classes, table, network_weights, biases, layout):
    """Steps k = uniforms.shape[1] times for every row: sample a character from the row's logits
    with its own uniform draw (the tale's memory mixed in, where `history` has columns), then feed
    it. A row with `stop_at_end` stops after the break that ends a sentence (sampler.still_writing,
    over `before`, its last two ids); its later ids are -1. logits, state, `before` and the memory's
    arrays are updated in place; returns the ids (rows, k) and their scores (see _write_row)."""
    rows, steps = uniforms.shape
    ids = np.empty((steps, rows), np.int64)
    scores = np.empty((steps, rows), np.float64)
    scratch = np.empty((2, *logits.shape), np.float64)
    memory = (history, matches, length, run_start, initials, classes, weights, names_only, name_weight, share,
              separator)
    active = np.ones(rows, np.bool_)
    for t in range(steps):
        if rows >= PARALLEL_ROWS:
            for b in prange(rows):
                if active[b]:
                    _write_row(t, b, ids, scores, logits, uniforms, temperature, top_k, top_p, scratch, paragraph_id,
                               memory)
                else:
                    ids[t, b], scores[t, b] = -1, 0.0
        else:
            for b in range(rows):
                if active[b]:
                    _write_row(t, b, ids, scores, logits, uniforms, temperature, top_k, top_p, scratch, paragraph_id,
                               memory)
                else:
                    ids[t, b], scores[t, b] = -1, 0.0
        step(ids[t], logits, state, table, network_weights, biases, layout, active)
        for b in range(rows):
            if active[b]:
                drawn = ids[t, b]
                last, earlier = before[b, 1], before[b, 0]
                drawn_class = sentence_classes[drawn]
                if stop_at_end[b] and last >= 0 and (
                        (drawn_class == BREAK or drawn_class == PARAGRAPH) and sentence_classes[last] == END_MARK or
                        drawn_class == PARAGRAPH and sentence_classes[last] == CLOSING and earlier >= 0
                        and sentence_classes[earlier] == END_MARK):
                    active[b] = False
                before[b, 0], before[b, 1] = last, drawn
    return ids.T.copy(), scores.T.copy()


def compiled_already() -> bool:
    """Whether numba's cache holds the story engine for this source, so starting takes a second
    rather than the ~15 s of compiling. (numba's cache index, read as numba reads it; when that
    cannot be read, say yes: the notice it drives is only a courtesy.)"""
    try:
        return all(bool(f._cache._cache_file._load_index()) for f in (generate, prime))
    except Exception:
        return True


@njit(error_model="numpy", cache=True)
def match_lengths(ids, classes, separator, names_only):
    """For each character of a fresh tale, after reading it: the id the memory predicts next and the
    match length it would speak with (0: silent), plus LONGEST + 1 within a name that began
    mid-sentence. The runtime's own steps, for fitting and scoring."""
    n = ids.shape[0]
    history = np.full(n + 2, separator + 1, np.int32)
    matches = np.zeros(n + 2, np.int32)
    history[0] = separator
    lengths_as_weights = np.arange(2 * (LONGEST + 1)).astype(np.float64)
    following, spoken = np.zeros(n, np.int64), np.zeros(n, np.int64)
    length, run_start = 1, -1
    for i in range(n):
        length, run_start = feed_row(history, matches, length, run_start, ids[i], classes, separator)
        next_id, weight, _ = predict_row(history, matches, length, run_start, classes, lengths_as_weights, names_only,
                                         0.0)
        following[i], spoken[i] = next_id, int(weight)
    return following, spoken
