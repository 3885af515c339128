"""Checks for the learner's code: used by the lessons, the public tests and the hidden tests.

Each check calls the learner's function on inputs drawn from a seeded generator, compares the result
with the package's reference, and on failure raises ``CheckFailure`` whose message says what was
expected, what came, and where to look. ``CheckFailure.kind`` names the property that failed:

    type, shape, dtype, finite, normalisation, values, error (the function raised)
    gradient (autograd gives no gradient, or the wrong one, where one is expected)
    reference (grading only: the function called what its exercise asks you to write; see tripwire.py)

``thorough=False`` runs one small case (what a learner sees); ``thorough=True`` adds batch dims,
L != S, float64 and large scores (what grading adds).
"""
import math
import sys

import torch
from torch.nn import functional as F

from . import attention, data, scoring, tripwire

KINDS = ("type", "shape", "dtype", "finite", "normalisation", "values", "error", "gradient", "reference")


class CheckFailure(AssertionError):
    """A failed check. ``kind`` is one of ``KINDS``; ``str(err)`` is the message for the learner."""

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


def _fmt(shape):
    return str(tuple(shape))


def _refuse_reference(watch, fn, case):
    if watch.hit:
        raise CheckFailure("reference", f"{case}: {getattr(fn, '__name__', 'your function')} calls "
                                        f"{watch.hit}, which is what this exercise asks you to write "
                                        f"yourself; a call to it scores no points when graded.") from None


def _call(fn, args, case):
    watch = tripwire.watch(sys._getframe(1))  # idle unless the classroom grader armed it
    try:
        with watch:
            result = fn(*args)
    except NotImplementedError as exc:
        _refuse_reference(watch, fn, case)
        raise CheckFailure("error", f"{case}: {getattr(fn, '__name__', 'your function')} is not "
                                    f"implemented yet ({exc})") from None
    except Exception as exc:
        _refuse_reference(watch, fn, case)
        shapes = ", ".join(_fmt(a.shape) if isinstance(a, torch.Tensor) else repr(a) for a in args)
        raise CheckFailure("error", f"{case}: {getattr(fn, '__name__', 'your function')}({shapes}) "
                                    f"raised {type(exc).__name__}: {exc}") from None
    _refuse_reference(watch, fn, case)
    return result


def expect_tensor(name, actual, expected, case="", legend="", atol=1e-5, rtol=1e-4, hint=None):
    """Compare one returned tensor with the reference: type, shape, dtype, finiteness, values.

    Args:
        name: the variable's name in the message (``attn_weights``).
        legend: the expected shape in symbols, e.g. ``"(B, L, S)"``.
        hint: a callable ``hint(actual, expected) -> str`` for a values mismatch, or None.
    """
    where = f"{case}: " if case else ""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailure("type", f"{where}{name} must be a torch.Tensor; got {type(actual).__name__}"
                                   + (" (did you forget `return`?)" if actual is None else ""))
    if actual.shape != expected.shape:
        raise CheckFailure("shape", f"{where}{name} should have shape {legend + ' = ' if legend else ''}"
                                    f"{_fmt(expected.shape)}; got {_fmt(actual.shape)}")
    if actual.dtype != expected.dtype:
        raise CheckFailure("dtype", f"{where}{name} should have dtype {expected.dtype}; got {actual.dtype}")
    if actual.is_floating_point() and not torch.isfinite(actual).all():
        raise CheckFailure("finite", f"{where}{name} contains NaN or inf; the reference is finite. "
                                     f"Large scores overflow exp(): does softmax subtract the max?")
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if not a.is_floating_point():
        if not torch.equal(a, e):
            wrong = (a != e).nonzero()[0].tolist()
            extra = hint(a, e) if hint else ""
            raise CheckFailure("values", f"{where}{name} differs from the reference at index {wrong}: "
                                         f"got {a[tuple(wrong)].item()}, expected {e[tuple(wrong)].item()}."
                                         + (f" {extra}" if extra else ""))
    elif not torch.allclose(a, e, atol=atol, rtol=rtol):
        err = (a - e).abs().max().item()
        extra = hint(a, e) if hint else ""
        raise CheckFailure("values", f"{where}{name} differs from the reference by up to {err:.3g} "
                                     f"(tolerance {atol:g})." + (f" {extra}" if extra else ""))


def expect_rows_sum_to_one(name, attn_weights, case="", atol=1e-4):
    """Each row of ``attn_weights`` (..., L, S) must sum to 1 over the key axis (dim=-1)."""
    where = f"{case}: " if case else ""
    sums = attn_weights.detach().sum(-1)
    if not torch.isfinite(sums).all():
        raise CheckFailure("finite", f"{where}{name} contains NaN or inf; the reference is finite. "
                                     f"Large scores overflow exp(): does softmax subtract the max?")
    bad = ~((sums - 1).abs() <= atol)  # NaN rows count as bad
    if bad.any():
        row = tuple(int(i) for i in bad.nonzero()[0])
        msg = (f"{where}{name} rows must sum to 1 over the key axis (dim=-1); row {row} sums to "
               f"{sums[row].item():.4f}.")
        if attn_weights.shape[-2] > 1 and ((attn_weights.detach().sum(-2) - 1).abs() <= atol).all():
            msg += " The columns sum to 1 instead: did you apply softmax over the query axis (dim=-2)?"
        raise CheckFailure("normalisation", msg)


def _randn(g, *shape, scale=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _cases(thorough, seed):
    """(label, batch dims, L, S, D, Dv, score scale, dtype) for the attention checks."""
    yield "one sentence: L=3, S=4, D=8", (), 3, 4, 8, 5, 1.0, torch.float32
    if thorough:
        yield "batched (2, 3): L=5, S=7, D=16", (2, 3), 5, 7, 16, 4, 1.0, torch.float32
        yield "float64, L=S=6, D=32", (2,), 6, 6, 32, 32, 1.0, torch.float64
        yield "large scores (x100), L=4, S=9", (2,), 4, 9, 8, 3, 100.0, torch.float32


def _scale_hint(actual, expected):
    ratio = (actual.abs().mean() / expected.abs().mean()).item()
    for d in range(2, 257):
        if abs(ratio - math.sqrt(d)) < 1e-3 * math.sqrt(d):
            return (f"Yours are sqrt({d}) = {ratio:.2f} times too large: did you forget to divide by "
                    f"sqrt(d_k)?")
        if abs(ratio - 1 / math.sqrt(d)) < 1e-3 / math.sqrt(d):
            return f"Yours are {1 / ratio:.2f} = sqrt({d}) times too small: divide by sqrt(d_k) once, by d_k never."
    return "Compare your formula with query @ key.transpose(-2, -1) / sqrt(d_k)."


# ----------------------------------------------------------------- lesson 01: input representation
def check_pad_batch(fn, thorough=False):
    """``fn(sequences, pad_id) -> (ids (B, T) int64, key_padding_mask (B, T) bool, True = padding)``."""
    cases = [("three sentences", [[4, 5, 6], [7], [8, 9]], 0)]
    if thorough:
        cases += [("one sequence", [[3, 1, 2]], 0), ("pad_id=99 and an empty sequence", [[5], [], [6, 7]], 99),
                  ("a real token equal to pad_id (mask from lengths, not from ids == pad_id)", [[0, 5], [7]], 0)]
    for case, seqs, pad_id in cases:
        got = _call(fn, ([list(s) for s in seqs], pad_id), case)
        ref_ids, ref_mask = data.pad_batch(seqs, pad_id)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (ids, key_padding_mask); got "
                                       f"{type(got).__name__}")
        expect_tensor("ids", got[0], ref_ids, case, "(B, T)")
        expect_tensor("key_padding_mask", got[1], ref_mask, case, "(B, T)", hint=lambda a, e: (
            "Your mask is inverted: here True must mean *padding*." if torch.equal(a, ~e) else ""))


def check_embedding_lookup(fn, thorough=False):
    """``fn(ids (B, T) int64, weight (V, E)) -> (B, T, E)``, equal to ``F.embedding(ids, weight)``."""
    g = torch.Generator().manual_seed(1)
    cases = [("B=2, T=4, V=10, E=3", 2, 4, 10, 3)]
    if thorough:
        cases += [("B=3, T=7, V=50, E=16", 3, 7, 50, 16), ("B=1, T=1, V=2, E=5", 1, 1, 2, 5)]
    for case, B, T, V, E in cases:
        ids = torch.randint(0, V, (B, T), generator=g)
        weight = _randn(g, V, E)
        got = _call(fn, (ids, weight), case)
        expect_tensor("embeddings", got, F.embedding(ids, weight), case, "(B, T, E)")


# ----------------------------------------------------------------- lesson 02: scores
def check_scaled_dot_scores(fn, thorough=False, seed=2):
    """``fn(query (..., L, D), key (..., S, D)) -> attn_scores (..., L, S)``, ``q . k / sqrt(D)``."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, _, scale, dtype in _cases(thorough, seed):
        query, key = _randn(g, *batch, L, D, scale=scale, dtype=dtype), _randn(g, *batch, S, D, dtype=dtype)
        got = _call(fn, (query, key), case)
        expect_tensor("attn_scores", got, scoring.scaled_dot_scores(query, key), case, "(..., L, S)",
                      hint=_scale_hint)


def check_additive_scores(fn, thorough=False, seed=3):
    """``fn(query, key, w_query (A, Dq), w_key (A, Dk), v (A,)) -> attn_scores (..., L, S)``."""
    g = torch.Generator().manual_seed(seed)
    cases = [("L=3, S=4, Dq=5, Dk=6, A=7", (), 3, 4, 5, 6, 7)]
    if thorough:
        cases += [("batched (2,): L=4, S=2, Dq=Dk=A=8", (2,), 4, 2, 8, 8, 8)]
    for case, batch, L, S, Dq, Dk, A in cases:
        args = (_randn(g, *batch, L, Dq), _randn(g, *batch, S, Dk), _randn(g, A, Dq), _randn(g, A, Dk),
                _randn(g, A))
        expect_tensor("attn_scores", _call(fn, args, case), scoring.additive_scores(*args), case,
                      "(..., L, S)", hint=lambda a, e: "Check the tanh and that v is applied last.")


# ----------------------------------------------------------------- lesson 03: softmax and context
def check_softmax_with_temperature(fn, thorough=False, seed=4):
    """``fn(attn_scores (..., L, S), temperature) -> attn_weights``, softmax over the key axis."""
    g = torch.Generator().manual_seed(seed)
    cases = [("L=3, S=5, T=0.5", (3, 5), 1.0, 0.5)]
    if thorough:
        cases += [("batched (2, 4, 6), T=2.0", (2, 4, 6), 1.0, 2.0), ("large scores, T=1", (3, 4), 200.0, 1.0)]
    for case, shape, scale, t in cases:
        attn_scores = _randn(g, *shape, scale=scale)
        got = _call(fn, (attn_scores.clone(), t), case)
        if isinstance(got, torch.Tensor) and got.shape == attn_scores.shape:
            expect_rows_sum_to_one("attn_weights", got, case)
        expect_tensor("attn_weights", got, attention.softmax_with_temperature(attn_scores, t), case,
                      "(..., L, S)", hint=lambda a, e: "Divide the scores by the temperature (not multiply).")


def check_attention(fn, thorough=False, seed=5):
    """``fn(query, key, value) -> (context (..., L, Dv), attn_weights (..., L, S))``, unmasked SDPA."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, Dv, scale, dtype in _cases(thorough, seed):
        query = _randn(g, *batch, L, D, scale=scale, dtype=dtype)
        key, value = _randn(g, *batch, S, D, dtype=dtype), _randn(g, *batch, S, Dv, dtype=dtype)
        got = _call(fn, (query.clone(), key.clone(), value.clone()), case)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (context, attn_weights); got "
                                       f"{type(got).__name__}")
        context, attn_weights = got
        ref_weights = attention.attention_weights(query, key)
        if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
            expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, "(..., L, S)",
                      hint=lambda a, e: "Are the scores divided by sqrt(d_k) before the softmax?")
        expect_tensor("context", context, ref_weights @ value, case, "(..., L, Dv)",
                      hint=lambda a, e: "context is attn_weights @ value.")


def check_attention_weights(fn, thorough=False, seed=6):
    """``fn(query (..., L, D), key (..., S, D)) -> attn_weights (..., L, S)``, softmax(q k^T / sqrt(D))."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, _, scale, dtype in _cases(thorough, seed):
        query = _randn(g, *batch, L, D, scale=scale, dtype=dtype)
        key = _randn(g, *batch, S, D, dtype=dtype)
        got = _call(fn, (query.clone(), key.clone()), case)
        ref_weights = attention.attention_weights(query, key)
        if isinstance(got, torch.Tensor) and got.shape == ref_weights.shape:
            expect_rows_sum_to_one("attn_weights", got, case)
        expect_tensor("attn_weights", got, ref_weights, case, "(..., L, S)",
                      hint=lambda a, e: "Are the scores divided by sqrt(d_k) before the softmax?")


# ----------------------------------------------------------------- lesson 05: self- and cross-attention
from . import self_cross  # noqa: E402


def _close(a, b):
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(
        a.detach().cpu().to(b.dtype), b.detach().cpu(), atol=1e-5, rtol=1e-4)


def _qkv_hints(x_dec, x_enc, w_query, w_key, w_value, key_padding_mask, names):
    """Hints for wrong attn_weights / context: compare with the outputs of common mistakes."""
    dec, enc = names
    query, key, value = x_dec @ w_query, x_enc @ w_key, x_enc @ w_value         # (B, L, D), (B, S, D), (B, S, Dv)
    E, D = x_dec.shape[-1], w_query.shape[-1]
    keep = None if key_padding_mask is None else attention.key_padding_to_attn_mask(key_padding_mask)

    def weights_hint(actual, expected):
        if keep is not None and (actual.masked_fill(keep, 0.0) > 1e-6).any():
            return ("Padded encoder positions (key_padding_mask True = padding) must get weight 0: turn the "
                    "mask into an attn_mask with attention.key_padding_to_attn_mask and pass it on.")
        mistakes = [
            (attention.attention_weights(query, key, keep, scale=1 / math.sqrt(E)),
             f"You divided the scores by sqrt(d_model) = sqrt({E}); divide by sqrt(head_dim) = sqrt({D}), the "
             f"length of each query and key vector (w_query.shape[-1])."),
            (attention.attention_weights(query, key, keep, scale=1.0),
             f"Did you forget to divide the scores by sqrt(head_dim) = sqrt({D})?"),
            (attention.attention_weights(query, x_enc @ w_query, keep),
             f"Your keys look like {enc} @ w_query: keys must be {enc} @ w_key."),
        ]
        if query.shape == key.shape:
            mistakes.append((attention.attention_weights(key, query, keep),
                             f"Your scores are K Q^T: the queries ({dec} @ w_query) give the rows, the keys "
                             f"({enc} @ w_key) the columns."))
        for candidate, message in mistakes:
            if _close(actual, candidate):
                return message
        return (f"attn_weights = softmax(Q K^T / sqrt(D)) over the keys, with Q = {dec} @ w_query, "
                f"K = {enc} @ w_key and D = w_query.shape[-1].")

    def context_hint(actual, expected):
        attn_weights = attention.attention_weights(query, key, keep)
        mistakes = [(attn_weights @ (x_enc @ w_key), f"Your values look like {enc} @ w_key: use w_value.")]
        if x_enc.shape[-1] == value.shape[-1]:
            mistakes.append((attn_weights @ x_enc, f"context averages {enc} itself: average the values "
                                                   f"{enc} @ w_value."))
        if x_dec.shape[1] == x_enc.shape[1] and x_dec is not x_enc:
            mistakes.append((attn_weights @ (x_dec @ w_value), f"Your values come from {dec}: in "
                                                              f"cross-attention they come from {enc}."))
        for candidate, message in mistakes:
            if _close(actual, candidate):
                return message
        return f"context = attn_weights @ ({enc} @ w_value)."

    return weights_hint, context_hint


def _expect_qkv_outputs(got, case, args, key_padding_mask, names, legend):
    """Compare (context, attn_weights) with the reference, after the shape mistakes worth naming."""
    x_dec, x_enc, w_query, w_key, w_value = args
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailure("type", f"{case}: return a tuple (context, attn_weights); got {type(got).__name__}")
    context, attn_weights = got
    ref_context, ref_weights = self_cross.cross_attention(x_dec, x_enc, w_query, w_key, w_value,
                                                          key_padding_mask)
    if (isinstance(context, torch.Tensor) and context.shape == x_enc.shape != ref_context.shape):
        raise CheckFailure("shape", f"{case}: context should have shape (B, L, Dv) = {_fmt(ref_context.shape)}; "
                                    f"got {_fmt(context.shape)}, the shape of {names[1]}: did you average "
                                    f"{names[1]} itself instead of the values {names[1]} @ w_value?")
    weights_hint, context_hint = _qkv_hints(x_dec, x_enc, w_query, w_key, w_value, key_padding_mask, names)
    if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
    expect_tensor("attn_weights", attn_weights, ref_weights, case, legend, hint=weights_hint)
    expect_tensor("context", context, ref_context, case, "(B, L, Dv)", hint=context_hint)


def _self_attention_cases(thorough):
    """(label, B, L, E, D, Dv, input scale, dtype)."""
    yield "one sentence: B=1, L=5 tokens, d_model E=6, head_dim D=4", 1, 5, 6, 4, 4, 1.0, torch.float32
    if thorough:
        yield "batched: B=3, L=7, E=8, D=4, Dv=5", 3, 7, 8, 4, 5, 1.0, torch.float32
        yield "float64: B=2, L=6, E=D=16", 2, 6, 16, 16, 16, 1.0, torch.float64
        yield "one token: B=2, L=1, E=6, D=3", 2, 1, 6, 3, 3, 1.0, torch.float32
        yield "large inputs (x30): B=2, L=4, E=8, D=8", 2, 4, 8, 8, 8, 30.0, torch.float32


def check_self_attention(fn, thorough=False, seed=7):
    """``fn(x (B, L, E), w_query (E, D), w_key (E, D), w_value (E, Dv))`` -> ``(context (B, L, Dv), attn_weights (B, L, L))``.

    Queries, keys and values all come from ``x``: ``softmax((x W_Q)(x W_K)^T / sqrt(D)) (x W_V)``.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, E, D, Dv, scale, dtype in _self_attention_cases(thorough):
        x = _randn(g, B, L, E, scale=scale, dtype=dtype)
        w_query, w_key = _randn(g, E, D, scale=E ** -0.5, dtype=dtype), _randn(g, E, D, scale=E ** -0.5, dtype=dtype)
        w_value = _randn(g, E, Dv, scale=E ** -0.5, dtype=dtype)
        got = _call(fn, (x.clone(), w_query.clone(), w_key.clone(), w_value.clone()), case)
        _expect_qkv_outputs(got, case, (x, x, w_query, w_key, w_value), None, ("x", "x"), "(B, L, L)")


def _cross_attention_cases(thorough, key_padding):
    """(label, B, L, S, E, D, Dv, input scale, dtype, encoder lengths or None)."""
    yield "decoder L=3, encoder S=5, E=6, D=4", 1, 3, 5, 6, 4, 4, 1.0, torch.float32, None
    if thorough:
        yield "batched: B=3, L=4, S=7, E=8, D=4, Dv=5", 3, 4, 7, 8, 4, 5, 1.0, torch.float32, None
        yield "float64, equal lengths: B=2, L=S=5, E=D=16", 2, 5, 5, 16, 16, 16, 1.0, torch.float64, None
        yield "one decoder position: B=2, L=1, S=6, E=6, D=3", 2, 1, 6, 6, 3, 3, 1.0, torch.float32, None
        yield "large inputs (x30): B=2, L=4, S=3, E=8, D=8", 2, 4, 3, 8, 8, 8, 30.0, torch.float32, None
        if key_padding:
            yield ("padded encoder batch: B=2, L=4, S=6, encoder lengths [6, 3]", 2, 4, 6, 8, 4, 4, 1.0,
                   torch.float32, [6, 3])


def check_cross_attention(fn, thorough=False, seed=8, key_padding=False):
    """``fn(decoder_states (B, L, E), encoder_states (B, S, E), w_query, w_key, w_value)`` -> ``(context (B, L, Dv), attn_weights (B, L, S))``.

    Queries come from the decoder states, keys and values from the encoder outputs. Before comparing
    values the check names the two ways of ignoring the encoder: ``attn_weights`` of shape (B, L, L)
    (keys taken from the decoder), and a context that does not change when ``encoder_states`` does.
    With ``key_padding=True`` (and ``thorough``) a padded encoder batch is passed as a sixth argument,
    ``key_padding_mask`` (B, S), True = padding.
    """
    g = torch.Generator().manual_seed(seed)
    names = ("decoder_states", "encoder_states")
    for case, B, L, S, E, D, Dv, scale, dtype, lengths in _cross_attention_cases(thorough, key_padding):
        decoder_states = _randn(g, B, L, E, scale=scale, dtype=dtype)
        encoder_states, other_encoder_states = (_randn(g, B, S, E, scale=scale, dtype=dtype) for _ in range(2))
        weights = [_randn(g, E, n, scale=E ** -0.5, dtype=dtype) for n in (D, D, Dv)]
        key_padding_mask = None if lengths is None else attention.padding_mask(lengths, S)
        extra = () if key_padding_mask is None else (key_padding_mask.clone(),)
        got = _call(fn, (decoder_states.clone(), encoder_states.clone(), *[w.clone() for w in weights], *extra), case)
        attn_weights = got[1] if isinstance(got, tuple) and len(got) == 2 else None
        if (isinstance(attn_weights, torch.Tensor) and L != S and attn_weights.dim() == 3
                and tuple(attn_weights.shape[-2:]) == (L, L)):
            raise CheckFailure("shape", f"{case}: attn_weights should have shape (B, L, S) = {_fmt((B, L, S))}; got "
                                        f"{_fmt(attn_weights.shape)}: one column per *decoder* position. The keys "
                                        f"must come from encoder_states (S = {S} positions), not from "
                                        f"decoder_states (L = {L}).")
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], torch.Tensor):
            probe = _call(fn, (decoder_states.clone(), other_encoder_states.clone(), *[w.clone() for w in weights],
                               *extra), case + " (encoder_states changed)")
            if isinstance(probe, tuple) and len(probe) == 2 and _close(probe[0], got[0]):
                raise CheckFailure("values", f"{case}: context did not change when encoder_states changed (a "
                                             f"different source sentence): your cross-attention ignores the "
                                             f"encoder. Keys and values must come from encoder_states "
                                             f"(encoder_states @ w_key, encoder_states @ w_value).")
        _expect_qkv_outputs(got, case, (decoder_states, encoder_states, *weights), key_padding_mask, names,
                            "(B, L, S)")


# ----------------------------------------------------------------- lesson 06: multi-head attention
import functools  # noqa: E402

from . import heads, pretrained  # noqa: E402


def _matches(actual, candidate, atol=1e-5):
    return (isinstance(actual, torch.Tensor) and actual.shape == candidate.shape
            and torch.allclose(actual.detach().cpu().to(candidate.dtype), candidate.detach().cpu(), atol=atol,
                               rtol=1e-4))


def _split_cases(thorough):
    """(label, B, L, E, H, dtype); the first case holds 0, 1, 2, ... (torch.arange) instead of random numbers."""
    yield "B=1, L=3 tokens, E=8, H=2 heads, x = torch.arange", 1, 3, 8, 2, torch.float32
    if thorough:
        yield "batched: B=2, L=5, E=12, H=3", 2, 5, 12, 3, torch.float32
        yield "float64: B=3, L=4, E=16, H=4", 3, 4, 16, 4, torch.float64
        yield "head_dim 1: B=2, L=3, E=H=6", 2, 3, 6, 6, torch.float32
        yield "one token: B=2, L=1, E=8, H=4", 2, 1, 8, 4, torch.float32


def check_split_heads(fn, thorough=False, seed=60):
    """``fn(x (B, L, E), num_heads) -> (B, H, L, D)`` with ``out[b, h, l] == x[b, l, h*D:(h+1)*D]``."""
    g = torch.Generator().manual_seed(seed)
    for i, (case, B, L, E, H, dtype) in enumerate(_split_cases(thorough)):
        D = E // H
        x = torch.arange(B * L * E, dtype=dtype).view(B, L, E) if i == 0 else _randn(g, B, L, E, dtype=dtype)
        got = _call(fn, (x.clone(), H), case)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, L, H, D) != (B, H, L, D):
            raise CheckFailure("shape", f"{case}: the heads should have shape (B, H, L, D) = {_fmt((B, H, L, D))}; "
                                        f"got {_fmt(got.shape)} = (B, L, H, D). Did you transpose after view? "
                                        f"x.view(B, L, H, D).transpose(1, 2) puts the head axis before the tokens.")

        def hint(actual, expected, x=x, B=B, L=L, H=H, D=D):
            if _matches(actual, x.reshape(B, H, L, D)):
                return ("Yours equals x.view(B, H, L, D): view alone cuts the numbers in memory order, so head 0 "
                        "gets the first tokens' whole vectors instead of its D features of every token. Did you "
                        "transpose after view? Use x.view(B, L, H, D).transpose(1, 2).")
            if _matches(actual, x.reshape(B, L, D, H).permute(0, 3, 1, 2)):
                return (f"Head h should own the block of features h*D .. (h+1)*D - 1 (D = {D}), not every "
                        f"{H}-th feature: view(B, L, H, D), not view(B, L, D, H).")
            return f"out[b, h, l, :] must equal x[b, l, h*D:(h+1)*D] with D = E // num_heads = {D}."
        expect_tensor("heads", got, heads.split_heads(x, H), case, "(B, H, L, D)", atol=0, rtol=0, hint=hint)


def check_merge_heads(fn, thorough=False, seed=61):
    """``fn(x (B, H, L, D)) -> (B, L, H*D)``, the inverse of ``split_heads``."""
    g = torch.Generator().manual_seed(seed)
    for i, (case, B, L, E, H, dtype) in enumerate(_split_cases(thorough)):
        D = E // H
        x = torch.arange(B * H * L * D, dtype=dtype).view(B, H, L, D) if i == 0 else _randn(g, B, H, L, D, dtype=dtype)
        try:
            got = _call(fn, (x.clone(),), case)
        except CheckFailure as err:
            if "view size is not compatible" in str(err):
                raise CheckFailure("error", f"{err} After transpose(1, 2) the tensor is not contiguous in "
                                            f"memory, so view refuses it: use .reshape(B, L, E) (or "
                                            f".contiguous().view).") from None
            raise

        def hint(actual, expected, x=x, B=B, L=L, E=E):
            if _matches(actual, x.reshape(B, L, E)):
                return ("Yours equals x.reshape(B, L, E) without a transpose: that mixes tokens across heads. Did "
                        "you transpose(1, 2) before reshape? Use x.transpose(1, 2).reshape(B, L, E).")
            return "out[b, l, h*D:(h+1)*D] must equal x[b, h, l, :]: transpose(1, 2), then reshape(B, L, E)."
        expect_tensor("merged", got, heads.merge_heads(x), case, "(B, L, E)", atol=0, rtol=0, hint=hint)
        if _matches(got, heads.merge_heads(x)) and not torch.equal(heads.split_heads(got, H), x):
            raise CheckFailure("values", f"{case}: split_heads(merge_heads(x), H) should give x back.")


def _mha_cases(thorough):
    """(label, B, L, S, E, H, dtype, key lengths or None, self-attention?)."""
    yield "self-attention: B=1, L=S=4, E=8, H=2", 1, 4, 4, 8, 2, torch.float32, None, True
    if thorough:
        yield ("cross-attention with padding: B=2, L=3, S=5, E=12, H=3, key lengths [5, 2]", 2, 3, 5, 12, 3,
               torch.float32, [5, 2], False)
        yield ("float64 self-attention with padding: B=3, L=S=6, E=16, H=4, lengths [6, 4, 1]", 3, 6, 6, 16, 4,
               torch.float64, [6, 4, 1], True)
        yield "one head: B=2, L=5, S=3, E=6, H=1", 2, 5, 3, 6, 1, torch.float32, None, False
        yield "head_dim 2, large inputs (x4): B=2, L=S=4, E=16, H=8", 2, 4, 4, 16, 8, torch.float32, None, True


def _linear(g, E, dtype):
    proj = torch.nn.Linear(E, E).to(dtype)
    with torch.no_grad():
        proj.weight.copy_(_randn(g, E, E, scale=E ** -0.5, dtype=dtype))
        proj.bias.copy_(_randn(g, E, scale=0.1, dtype=dtype))
    return proj


def _mha_weight_hint(query, key, projs, H, key_padding_mask):
    B, L, E = query.shape
    S, D = key.shape[1], E // H
    keep = None if key_padding_mask is None else attention.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)
    with torch.no_grad():
        q, k = projs[0](query), projs[1](key)                                   # (B, L, E), (B, S, E)
        q_h, k_h = heads.split_heads(q, H), heads.split_heads(k, H)             # (B, H, L, D), (B, H, S, D)
        q_v, k_v = q.reshape(B, H, L, D), k.reshape(B, H, S, D)                 # view without transpose

    def hint(actual, expected):
        if keep is not None and (actual.detach().cpu().masked_fill(keep, 0.0).abs() > 1e-6).any():
            return ("Padded keys got weight: key_padding_mask is True where a key is padding, and those keys must "
                    "get weight exactly 0 (turn it into an attn_mask (B, 1, 1, S), True = may attend, with "
                    "attention.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)).")
        mistakes = [
            (attention.attention_weights(q_h, k_h, keep, scale=E ** -0.5),
             f"You divided the scores by sqrt(d_model) = sqrt({E}): each head's dot product runs over its own "
             f"head_dim = {D} features, so divide by sqrt(head_dim) = sqrt({D})."),
            (attention.attention_weights(q_h, k_h, keep, scale=1.0),
             f"Did you forget to divide the scores by sqrt(head_dim) = sqrt({D})?"),
            (attention.attention_weights(q_v, k_v, keep),
             "Your heads look split with view(B, H, L, D) and no transpose. Did you transpose after view? "
             "Use .view(B, L, H, D).transpose(1, 2)."),
        ]
        for candidate, message in mistakes:
            if H > 1 and _matches(actual, candidate):
                return message
        return ("attn_weights[b, h] = softmax(q_h k_h^T / sqrt(head_dim)) over the keys, with q_h, k_h head h of "
                "split_heads(q_proj(query)), split_heads(k_proj(key)).")
    return hint


def _expect_mha(got, case, query, key, value, projs, H, key_padding_mask):
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailure("type", f"{case}: return a tuple (attn_output, attn_weights); got {type(got).__name__}")
    attn_output, attn_weights = got
    B, L, E = query.shape
    S = key.shape[1]
    if isinstance(attn_weights, torch.Tensor) and tuple(attn_weights.shape) == (B, L, S) and H > 1:
        raise CheckFailure("shape", f"{case}: attn_weights should have shape (B, H, L, S) = {_fmt((B, H, L, S))}; got "
                                    f"{_fmt(attn_weights.shape)}. Return every head's weights; do not average them.")
    module = attention.MultiHeadAttention(E, H).to(query.dtype)                 # the reference, same weights
    for ours, theirs in zip((module.q_proj, module.k_proj, module.v_proj, module.out_proj), projs):
        ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        ref_output, ref_weights = module(query, key, value, key_padding_mask=key_padding_mask)
    if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
    expect_tensor("attn_weights", attn_weights, ref_weights, case, "(B, H, L, S)",
                  hint=_mha_weight_hint(query, key, projs, H, key_padding_mask))

    def output_hint(actual, expected):
        v = heads.split_heads(projs[2](value), H)                                # (B, H, S, D)
        with torch.no_grad():
            unmerged = projs[3]((ref_weights @ v).reshape(B, L, E))             # merged without transpose
            no_out = heads.merge_heads(ref_weights @ v)                          # out_proj forgotten
        if H > 1 and _matches(actual, unmerged):
            return ("attn_weights are right but the heads were merged with reshape(B, L, E) and no transpose: "
                    "use context.transpose(1, 2).reshape(B, L, E) before out_proj.")
        if _matches(actual, no_out):
            return "attn_weights are right; apply out_proj to the merged heads."
        return "attn_weights are right: merge the heads (transpose(1, 2).reshape(B, L, E)), then out_proj."
    expect_tensor("attn_output", attn_output, ref_output, case, "(B, L, E)", hint=output_hint)


@functools.lru_cache(maxsize=2)
def _minilm_reference(sentences):
    """(input_ids, attention_mask, hidden_states, attentions) of the reference forward, computed once."""
    input_ids, attention_mask, _ = pretrained.tokenize_batch(list(sentences))
    with torch.no_grad():
        return (input_ids, attention_mask, *pretrained.bert_forward(input_ids, attention_mask))


@functools.lru_cache(maxsize=1)
def _minilm_encoder():
    return pretrained.MiniLMEncoder.from_pretrained()


def _run_minilm_with(fn, input_ids, attention_mask):
    """The encoder's forward with ``fn`` in place of every layer's attention (sharing its weights), then restored."""
    encoder = _minilm_encoder()
    originals = [layer.self_attn for layer in encoder.layers]
    try:
        for layer, mha in zip(encoder.layers, originals):
            layer.self_attn = heads.FunctionalAttention(fn, mha.d_model, mha.num_heads)
            for name in pretrained.ATTENTION_NAMES:
                setattr(layer.self_attn, name, getattr(mha, name))      # the model's own projections
        with torch.no_grad():
            return encoder(input_ids, attention_mask)
    finally:
        for layer, mha in zip(encoder.layers, originals):
            layer.self_attn = mha


def _check_minilm(fn, thorough):
    """Plug ``fn`` into all-MiniLM-L6-v2's 6 layers; compare its attention maps and hidden states with the model's."""
    sentences = data.sentences()[1:2] if not thorough else [data.sentences()[i] for i in (5, 1, 0)]
    case = (f"all-MiniLM-L6-v2 with your function in its 6 layers, on {len(sentences)} real sentence"
            + ("s padded to one batch" if len(sentences) > 1 else ""))
    input_ids, attention_mask, ref_hidden, ref_attentions = _minilm_reference(tuple(sentences))
    try:
        hidden, attentions = _run_minilm_with(fn, input_ids, attention_mask if len(sentences) > 1 else None)
    except Exception as exc:
        raise CheckFailure("error", f"{case}: your function raised {type(exc).__name__}: {exc}") from None

    def hint(actual, expected):
        return ("Your function passes the small random cases but not inside the real model (E=384, H=12, "
                "head_dim=32): read B, L, S, E from the inputs, use head_dim = E // num_heads, and return "
                "out_proj of the merged heads.")
    real = attention_mask.bool()[:, None, :, None]                              # (B, 1, T, 1): real query rows
    for i, (got, ref) in enumerate(zip(attentions, ref_attentions)):
        if isinstance(got, torch.Tensor) and got.shape == ref.shape:
            got = got.masked_fill(~real, 0.0)                                   # padded query rows: not compared
        expect_tensor(f"attn_weights of layer {i}", got, ref.masked_fill(~real, 0.0), case, "(B, H, T, T)",
                      atol=1e-4, rtol=0, hint=hint)
    expect_tensor("hidden_states", hidden.masked_fill(~real[:, 0], 0.0), ref_hidden.masked_fill(~real[:, 0], 0.0),
                  case, "(B, T, 384)", atol=1e-4, rtol=0, hint=hint)


def check_multi_head_attention(fn, thorough=False, seed=62):
    """``fn(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads[, key_padding_mask])``
    -> ``(attn_output (B, L, E), attn_weights (B, H, L, S))``, equal to ``attn_course.MultiHeadAttention``.

    Then the real test: ``fn`` runs in all 6 layers of all-MiniLM-L6-v2 with its real weights and must
    reproduce the model's attention maps and hidden states to 1e-4 (one sentence; thorough: three,
    padded into one batch, padded query rows not compared). ``key_padding_mask`` (B, S), True = padding,
    is passed only where there is padding.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, S, E, H, dtype, lengths, is_self in _mha_cases(thorough):
        scale = 4.0 if "x4" in case else 1.0
        query = _randn(g, B, L, E, scale=scale, dtype=dtype)
        key = query if is_self else _randn(g, B, S, E, scale=scale, dtype=dtype)
        value = key if is_self else _randn(g, B, S, E, dtype=dtype)
        projs = [_linear(g, E, dtype) for _ in range(4)]
        key_padding_mask = None if lengths is None else attention.padding_mask(lengths, S)
        extra = () if key_padding_mask is None else (key_padding_mask.clone(),)
        args = (query.clone(), key.clone(), value.clone(), *projs, H, *extra)
        with torch.no_grad():
            got = _call(fn, args, case)
        _expect_mha(got, case, query, key, value, projs, H, key_padding_mask)
    _check_minilm(fn, thorough)


# ----------------------------------------------------------------- lesson 04: soft and hard attention
from . import hard  # noqa: E402


def _hard_cases(thorough):
    """(label, batch dims, S, Dv, dtype, masked) for the hard-attention checks."""
    yield "B=4, S=6, Dv=3", (4,), 6, 3, torch.float32, False
    if thorough:
        yield "batched (2, 3), S=9, Dv=5", (2, 3), 9, 5, torch.float32, False
        yield "float64, B=3, S=5, Dv=4", (3,), 5, 4, torch.float64, False
        yield "scores with -inf (positions that may not be picked), B=5, S=7", (5,), 7, 2, torch.float32, True


def _hard_inputs(g, batch, S, Dv, dtype, masked):
    attn_scores = _randn(g, *batch, S, scale=2.0, dtype=dtype)                  # (..., S)
    if masked:
        attn_scores[..., 1::2] = float("-inf")                                   # odd positions forbidden
    return attn_scores, _randn(g, *batch, S, Dv, dtype=dtype)                   # (..., S, Dv)


def _expect_selection(case, got, attn_scores, value, ref_index=None):
    """``got = (context, index, attn_weights)``: index int64 (...,), one-hot weights, picked value."""
    if not (isinstance(got, tuple) and len(got) == 3):
        length = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        raise CheckFailure("type", f"{case}: return a tuple (context, index, attn_weights); got "
                                   f"{type(got).__name__}{length}")
    context, index, attn_weights = got
    S = attn_scores.shape[-1]
    if ref_index is not None:
        expect_tensor("index", index, ref_index, case, "(...,) int64", hint=lambda a, e: (
            "You picked the smallest score: hard attention takes the argmax." if torch.equal(a, attn_scores.argmin(-1))
            else "index = attn_scores.argmax(dim=-1): the highest score of each row, over the last axis."))
    elif not isinstance(index, torch.Tensor) or index.shape != attn_scores.shape[:-1] or index.dtype != torch.int64:
        raise CheckFailure("type", f"{case}: index must be an int64 tensor of shape (...,) = "
                                   f"{_fmt(attn_scores.shape[:-1])}; got " + (
                                       f"{index.dtype} {_fmt(index.shape)}" if isinstance(index, torch.Tensor)
                                       else type(index).__name__))
    idx = index.detach().cpu()
    if ((idx < 0) | (idx >= S)).any():
        raise CheckFailure("values", f"{case}: index must lie in [0, S={S}); got values {idx.unique().tolist()}")
    if torch.isneginf(attn_scores.gather(-1, idx.unsqueeze(-1))).any():
        raise CheckFailure("values", f"{case}: you picked a position whose score is -inf; such a position "
                                     f"may never be picked (its softmax weight is 0).")
    one_hot = F.one_hot(idx, S).to(attn_scores.dtype)                           # (..., S)
    expect_tensor("attn_weights", attn_weights, one_hot, case, "(..., S)", hint=lambda a, e: (
        "These are the soft weights softmax(attn_scores); hard attention's weights are one-hot."
        if torch.allclose(a, torch.softmax(attn_scores, -1), atol=1e-5) else
        "attn_weights must be one-hot: 1.0 at the picked position, 0.0 elsewhere (F.one_hot(index, S))."))
    expect_tensor("context", context, (one_hot.unsqueeze(-2) @ value).squeeze(-2), case, "(..., Dv)",
                  hint=lambda a, e: "context is the value at the picked position: value[..., index, :].")
    return context, idx


def _check_argmax_mode(fn, extra_args, thorough, g):
    for case, batch, S, Dv, dtype, masked in _hard_cases(thorough):
        attn_scores, value = _hard_inputs(g, batch, S, Dv, dtype, masked)
        got = _call(fn, (attn_scores.clone(), value.clone(), *extra_args), case)
        _expect_selection(case, got, attn_scores, value, ref_index=hard.hard_attention(attn_scores, value)[1])
    if thorough:                                                                # the picked row gets the gradient
        case = "gradient to value, B=3, S=4"
        attn_scores, value = _hard_inputs(g, (3,), 4, 2, torch.float32, False)
        value.requires_grad_(True)
        context = _call(fn, (attn_scores.clone(), value, *extra_args), case)[0]
        if not (isinstance(context, torch.Tensor) and context.requires_grad):
            raise CheckFailure("gradient", f"{case}: context must stay differentiable in value (the picked "
                                           f"value gets the gradient): no .detach(), no torch.no_grad().")
        (grad,) = torch.autograd.grad(context.sum(), value)
        expected = F.one_hot(attn_scores.argmax(-1), 4).to(value.dtype).unsqueeze(-1).expand_as(value)
        if not torch.allclose(grad, expected):
            raise CheckFailure("gradient", f"{case}: d context / d value should be 1 at the picked position "
                                           f"and 0 elsewhere; got {grad[..., 0].tolist()}.")


def check_hard_attention_argmax(fn, thorough=False, seed=40):
    """``fn(attn_scores (..., S), value (..., S, Dv)) -> (context (..., Dv), index (...,), attn_weights (..., S))``."""
    _check_argmax_mode(fn, (), thorough, torch.Generator().manual_seed(seed))


_PICK_SCORES = torch.tensor([1.0, -0.5, 0.0, 2.0, 0.5], dtype=torch.float64)  # softmax 0.05 .. 0.55: not uniform


def _frequency_hint(freq, probs):
    S = len(probs)
    if (freq - 1 / S).abs().max() < 0.03:
        return (f"Your picks are spread evenly over the {S} positions, whatever the scores; position j must "
                f"come with probability softmax(attn_scores)_j.")
    if freq[probs.argmax()] > 0.99:
        return "You always pick the highest score (that is argmax, not a draw): sample from softmax(attn_scores)."
    return "Position j must come with probability softmax(attn_scores)_j."


def _expect_frequencies(case, freq, probs, tol, what):
    if (freq - probs).abs().max() > tol:
        raise CheckFailure("values", f"{case}: {what} differ from softmax(attn_scores) by up to "
                                     f"{(freq - probs).abs().max().item():.3f} (tolerance {tol}): got "
                                     f"{[round(f, 3) for f in freq.tolist()]}, expected "
                                     f"{[round(p, 3) for p in probs.tolist()]}. {_frequency_hint(freq, probs)}")


def check_hard_attention(fn, thorough=False, seed=41):
    """``fn(attn_scores, value, mode, generator) -> (context, index, attn_weights)``, modes argmax and sample."""
    g = torch.Generator().manual_seed(seed)
    _check_argmax_mode(fn, ("argmax", None), thorough, g)
    for n in (4000, 20000) if thorough else (4000,):                          # the picks follow the weights
        case = f"mode='sample', one row of scores drawn {n} times"
        attn_scores = _PICK_SCORES.to(torch.float32).expand(n, -1).clone()      # (n, S)
        value = torch.arange(5.0).expand(n, -1).unsqueeze(-1).clone()           # (n, S, 1)
        got = _call(fn, (attn_scores, value, "sample", torch.Generator().manual_seed(seed + n)), case)
        _, index = _expect_selection(case, got, attn_scores, value)
        freq = torch.bincount(index, minlength=5).double() / n
        _expect_frequencies(case, freq, torch.softmax(_PICK_SCORES, -1), 0.03 if n == 4000 else 0.015,
                            "the pick frequencies")
    cases = [("", (4,), 6, 3, torch.float32, False)] + (list(_hard_cases(True))[1:] if thorough else [])
    for _, batch, S, Dv, dtype, masked in cases:                               # reproducible with a seed
        attn_scores, value = _hard_inputs(g, (64,) + batch[1:], S, Dv, dtype, masked)   # 64 rows: picks differ
        case = (f"mode='sample', attn_scores {_fmt(attn_scores.shape)} {str(dtype)[6:]}"
                + (" with -inf" if masked else ""))
        picks = [_expect_selection(case, _call(fn, (attn_scores.clone(), value.clone(), "sample",
                                                    torch.Generator().manual_seed(s)), case),
                                   attn_scores, value)[1] for s in (seed, seed, seed + 1)]
        if not torch.equal(picks[0], picks[1]):
            raise CheckFailure("values", f"{case}: two calls with generators seeded alike picked different "
                                         f"positions: draw with the generator you are given (generator=generator).")
        if torch.equal(picks[0], picks[2]):
            raise CheckFailure("values", f"{case}: generators with different seeds picked the same 64 positions: "
                                         f"do your draws use the generator?")


def _expect_like(name, actual, like, case, legend):
    """Type, shape, dtype and finiteness of ``actual`` as those of ``like`` (values are checked elsewhere)."""
    if isinstance(actual, torch.Tensor) and actual.shape == like.shape and actual.dtype == like.dtype:
        like = actual.detach()
    expect_tensor(name, actual, like, case, legend)


def _sample_and_grad(fn, logits, tau, hard_, seed, c, case):
    """One call ``fn(logits, tau, hard_, generator)``; returns y and d sum(y * c) / d logits (None if none)."""
    x = logits.clone().requires_grad_(True)
    y = _call(fn, (x, tau, hard_, torch.Generator().manual_seed(seed)), case)
    _expect_like("y (hard=True)" if hard_ else "y_soft (hard=False)", y, logits, case, "(..., S)")
    grad = torch.autograd.grad((y * c).sum(), x, allow_unused=True)[0] if y.requires_grad else None
    return y.detach(), grad


def _one_hot_hint(actual, expected):
    if ((actual.abs() < 1e-6) | ((actual - 1).abs() < 1e-6)).all() and torch.allclose(actual.sum(-1), expected.sum(-1)):
        return ("The 1.0 should sit at the argmax of the soft sample drawn with the same seed: draw the noise "
                "with the generator, the same way for hard=True and hard=False.")
    return "hard=True must return one-hot rows (1.0 at the argmax of the soft sample, 0.0 elsewhere)."


def check_gumbel_softmax_st(fn, thorough=False, seed=42):
    """``fn(logits (..., S), tau, hard, generator) -> y (..., S)``: Gumbel-softmax, straight-through when hard."""
    g = torch.Generator().manual_seed(seed)
    cases = [("B=6, S=5, tau=0.5", (6,), 5, 0.5, torch.float32, 1.0)]
    if thorough:
        cases += [("batched (2, 3), S=8, tau=1.0", (2, 3), 8, 1.0, torch.float32, 1.0),
                  ("float64, B=5, S=4, tau=2.0", (5,), 4, 2.0, torch.float64, 1.0),
                  ("large logits (x30), B=4, S=6, tau=0.3", (4,), 6, 0.3, torch.float32, 30.0)]
    for i, (case, batch, S, tau, dtype, scale) in enumerate(cases):
        logits = _randn(g, *batch, S, scale=scale, dtype=dtype)                # (..., S)
        c = _randn(g, *batch, S, dtype=dtype)                                  # loss = sum(y * c)
        y_soft, grad_soft = _sample_and_grad(fn, logits, tau, False, seed + i, c, f"{case}, hard=False")
        expect_rows_sum_to_one("y_soft (hard=False)", y_soft, case)
        if grad_soft is None:
            raise CheckFailure("gradient", f"{case}: y_soft (hard=False) must be differentiable in the logits; "
                                           f"it has no gradient (a .detach() or torch.no_grad() too many?).")
        y, grad = _sample_and_grad(fn, logits, tau, True, seed + i, c, f"{case}, hard=True")
        expect_tensor("y (hard=True)", y, F.one_hot(y_soft.argmax(-1), S).to(dtype), case, "(..., S)",
                      atol=1e-6, rtol=0, hint=_one_hot_hint)
        if not torch.equal(y, _sample_and_grad(fn, logits, tau, True, seed + i, c, case)[0]):
            raise CheckFailure("values", f"{case}: two calls with generators seeded alike gave different samples: "
                                         f"draw the noise with the generator you are given (generator=generator).")
        if grad is None or (scale == 1.0 and not grad.abs().max() > 0):
            raise CheckFailure("gradient", f"{case}: y (hard=True) passes no gradient to the logits. The "
                                           f"straight-through trick returns y_hard - y_soft.detach() + y_soft: "
                                           f"the value of y_hard, the gradient of y_soft.")
        if not torch.allclose(grad, grad_soft, atol=1e-5, rtol=1e-4):
            raise CheckFailure("gradient", f"{case}: the gradient of y (hard=True) differs from that of the soft "
                                           f"sample by up to {(grad - grad_soft).abs().max().item():.3g}; they should "
                                           f"be equal. Which term carries .detach() in y_hard - y_soft.detach() + y_soft?")
    case = "tau=0.5 and tau=2.0 with the same seed, float64"                   # softmax((logits + g) / tau)
    logits = _randn(g, 8, 5, dtype=torch.float64)
    noise = [tau * torch.log(_call(fn, (logits, tau, False, torch.Generator().manual_seed(seed)), case).detach())
             - logits for tau in (0.5, 2.0)]                                   # g + a constant per row
    if not torch.allclose(*[n - n.mean(-1, keepdim=True) for n in noise], atol=1e-6):
        raise CheckFailure("values", f"{case}: y_soft must be softmax((logits + g) / tau): divide the noisy "
                                     f"logits, logits and noise together, by tau.")
    probs = torch.softmax(_PICK_SCORES, -1)
    for n in (4000, 20000) if thorough else (4000,):                           # argmax(logits + g) ~ softmax(logits)
        case = f"hard=True, one row of logits drawn {n} times, tau=0.5"
        logits = _PICK_SCORES.to(torch.float32).expand(n, -1).clone()          # (n, S)
        y = _call(fn, (logits, 0.5, True, torch.Generator().manual_seed(seed + n)), case).detach()
        freq = y.double().sum(0) / n
        if (freq - probs).abs().max() > (0.03 if n == 4000 else 0.015):
            hint = ("Your picks hardly vary: add Gumbel noise to the logits before the argmax." if freq.max() > 0.99
                    else "Is the noise Gumbel? g = -log(-log(U)), U ~ Uniform(0, 1), or -log of an Exponential(1) draw.")
            raise CheckFailure("values", f"{case}: the one-hot picks should come with probability softmax(logits); "
                                         f"got frequencies {[round(f, 3) for f in freq.tolist()]}, expected "
                                         f"{[round(p, 3) for p in probs.tolist()]}. {hint}")


# ----------------------------------------------------------------- lesson 07: masks and the transformer block
from torch import nn  # noqa: E402

from . import transformer  # noqa: E402

KINDS = KINDS + tuple(k for k in ("mask", "causality") if k not in KINDS)
"""mask: weight on a key the mask forbids, or a query with no allowed key not all zeros.
causality: an output changed when only inputs it must not see (the future) changed."""

_MASK_TOL = {torch.float16: (2e-3, 1e-2), torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-7)}


def _left_padded_causal(B, L, lengths):
    """attn_mask (B, L, L), True = may attend: causal, and keys left of each sequence's start are padding."""
    keep = torch.arange(L)[None, :] >= (L - torch.as_tensor(lengths))[:, None]        # (B, S), True = real
    return attention.causal_mask(L) & keep[:, None, :]                                 # (L, S) & (B, 1, S)


def _masked_softmax_cases(thorough):
    """(label, scores shape, attn_mask, dtype, score scale, causal)."""
    pad = attention.key_padding_to_attn_mask(attention.padding_mask([5, 2], 5))          # (2, 1, 5)
    yield "padding: scores (2, 4, 5), attn_mask (2, 1, 5) from lengths (5, 2)", (2, 4, 5), pad, torch.float32, 1.0, False
    left = _left_padded_causal(2, 4, [4, 2])                                             # (2, 4, 4)
    yield "causal + left padding: scores (2, 4, 4), lengths (4, 2)", (2, 4, 4), left, torch.float32, 1.0, True
    if thorough:
        yield "float16, causal + left padding, heads: scores (2, 3, 4, 4)", (2, 3, 4, 4), left[:, None], \
            torch.float16, 1.0, True
        both = attention.causal_mask(5, 7) & attention.key_padding_to_attn_mask(
            attention.padding_mask([7, 3], 7))[:, None]                                  # (2, 1, 5, 7)
        yield "float64, causal (5, 7) & padding, scores (2, 3, 5, 7)", (2, 3, 5, 7), both, torch.float64, 1.0, True
        yield "float16, padding, scores x10: (2, 4, 5)", (2, 4, 5), pad, torch.float16, 10.0, False
        yield "large scores (x100), causal (6, 6)", (6, 6), attention.causal_mask(6), torch.float32, 100.0, True


def _expect_masked(name, got, allowed, case):
    """No weight on a forbidden key; rows with no allowed key all zero."""
    w = got.detach().cpu().double()
    allowed = allowed.expand(w.shape)
    empty = ~allowed.any(-1)                                                             # (..., L) rows with no key
    if empty.any() and (w.abs() > 0)[empty].any():
        row = tuple(int(i) for i in (empty & (w.abs() > 0).any(-1)).nonzero()[0])
        raise CheckFailure("mask", f"{case}: query {list(row)} may attend to no key, so its row of {name} must be "
                                   f"all zeros (as in PyTorch's SDPA); got weights summing to {w[row].sum().item():.4f}. "
                                   f"A finite fill such as -1e9 or torch.finfo(dtype).min turns such a row into a "
                                   f"uniform distribution over keys it must not see: set those rows to zero.")
    leak = (w.abs() > 1e-6) & ~allowed
    if leak.any():
        where = tuple(int(i) for i in leak.nonzero()[0])
        inverted = not ((w.abs() > 1e-6) & allowed).any()
        raise CheckFailure("mask", f"{case}: {name}{list(where)} = {w[where].item():.4f}, but attn_mask forbids "
                                   f"that key (False there). " + (
                                       "Your weights are non-zero exactly where attn_mask is False: the polarity is "
                                       "inverted. Here True = may attend (as in SDPA); nn.MultiheadAttention's masks "
                                       "use True = ignore." if inverted else
                                       "Fill the forbidden scores with -inf (or the dtype's minimum) before the softmax."))


def check_masked_softmax(fn, thorough=False, seed=70):
    """``fn(attn_scores (..., L, S), attn_mask bool, True = may attend) -> attn_weights (..., L, S)``.

    Forbidden keys get weight 0, each row with an allowed key sums to 1, rows with no allowed key are
    all zeros, and scores of forbidden keys have no influence at all (a causality probe).
    """
    g = torch.Generator().manual_seed(seed)
    for case, shape, attn_mask, dtype, scale, causal in _masked_softmax_cases(thorough):
        attn_scores = _randn(g, *shape, scale=scale, dtype=dtype)
        ref = attention.masked_softmax(attn_scores, attn_mask)
        try:
            got = _call(fn, (attn_scores.clone(), attn_mask.clone()), case)
        except CheckFailure as exc:
            if "overflow" in str(exc):
                raise CheckFailure("error", f"{exc} -- a fill value such as -1e9 does not fit in {dtype} (largest "
                                            f"magnitude {torch.finfo(dtype).max:g}): fill with float('-inf') or "
                                            f"torch.finfo(attn_scores.dtype).min.") from None
            raise
        _expect_like_no_values("attn_weights", got, ref, case, "(..., L, S)")
        if not torch.isfinite(got).all():
            empty = ~attn_mask.expand(ref.shape).any(-1, keepdim=True)                 # rows with no allowed key
            raise CheckFailure("finite", f"{case}: attn_weights contains NaN or inf. " + (
                "A query that may attend to no key has a row of -inf scores, and softmax of it is 0/0 = NaN: "
                "set those rows to zero (e.g. torch.where or masked_fill on the rows where attn_mask has no True)."
                if torch.isfinite(got.masked_fill(empty, 0.0)).all() else
                "Large scores overflow exp(): does your softmax subtract each row's maximum?"))
        _expect_masked("attn_weights", got, attn_mask, case)
        probe = attn_scores.masked_fill(~attn_mask, 0.0) + _randn(g, *shape, scale=20.0, dtype=dtype).masked_fill(
            attn_mask, 0.0)                                                              # only forbidden scores change
        again = _call(fn, (probe, attn_mask.clone()), case)
        atol, rtol = _MASK_TOL[dtype]
        if isinstance(again, torch.Tensor) and again.shape == got.shape and not torch.allclose(
                again.detach().double(), got.detach().double(), atol=atol, rtol=rtol, equal_nan=True):
            diff = (again.detach().double() - got.detach().double()).abs()
            row = tuple(int(i) for i in (diff == diff.max()).nonzero()[0][:-1])
            what = "the future (keys after the query)" if causal else "padding keys"
            raise CheckFailure("causality" if causal else "mask", (
                f"{case}: changing only the scores that attn_mask forbids, those of {what}, changed the weights of "
                f"query {list(row)} by up to {diff.max().item():.3g}: information leaks from positions the query "
                f"must not see. Mask the scores before the softmax; zeroing weights after it leaves the forbidden "
                f"scores in the denominator."))
        nonempty = attn_mask.expand(ref.shape).any(-1)
        off = (got.detach().double().sum(-1) - 1).abs() > 10 * atol                    # (..., L)
        if (off & nonempty).any():
            sums = got.detach().double().sum(-1)
            row = tuple(int(i) for i in (off & nonempty).nonzero()[0])
            raise CheckFailure("normalisation", f"{case}: the weights of query {list(row)} sum to "
                                                f"{sums[row].item():.4f} over the keys; a query with at least one "
                                                f"allowed key must sum to 1. Zeroing weights after the softmax does "
                                                f"not renormalise: mask the scores before it.")
        expect_tensor("attn_weights", got, ref, case, "(..., L, S)", atol=atol, rtol=rtol,
                      hint=lambda a, e: "Softmax over the key axis (dim=-1), after filling the forbidden scores.")


def _random_block(g, E, H, F, norm_first, activation, dtype):
    """A TransformerBlock in eval mode with weights drawn from ``g`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        block = transformer.TransformerBlock(E, H, F, norm_first=norm_first, activation=activation)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(_randn(g, *p.shape, scale=0.3) + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return block.to(dtype).eval()


def _block_variants(block, x, attn_mask, key_padding_mask):
    """Outputs of common mistakes, with the hint for each."""
    def attend(h, masked=True):
        return block.self_attn(h, attn_mask=attn_mask if masked else None,
                               key_padding_mask=key_padding_mask if masked else None)[0]
    n1, n2, ff = block.norm1, block.norm2, block.feed_forward
    post = n2(n1(x + attend(x)) + ff(n1(x + attend(x))))
    pre = x + attend(n1(x)) + ff(n2(x + attend(n1(x))))
    mine = "pre-LN (x + SelfAttn(LN(x)))" if block.norm_first else "post-LN (LN(x + SelfAttn(x)))"
    other = "post-LN" if block.norm_first else "pre-LN"
    yield (pre if not block.norm_first else post), (f"That is the {other} block, but block.norm_first is "
                                                    f"{block.norm_first}: this block is {mine}.")
    h = n1(x)
    yield h + attend(h) + ff(n2(h + attend(h))), ("The residual must carry x itself, not norm1(x): pre-LN "
                                                  "normalises only each sublayer's input, x = x + SelfAttn(LN(x)).")
    if block.norm_first:
        yield x + attend(n1(x), False) + ff(n2(x + attend(n1(x), False))), (
            "That is the block without masks: pass attn_mask and key_padding_mask to block.self_attn.")
    else:
        h = n1(x + attend(x, False))
        yield n2(h + ff(h)), "That is the block without masks: pass attn_mask and key_padding_mask to block.self_attn."
        yield n2(n1(attend(x)) + ff(n1(attend(x)))), ("The residual connections are missing: add each sublayer's "
                                                       "input to its output before the LayerNorm.")
        yield n1(x + attend(x)) + ff(n1(x + attend(x))), "The second LayerNorm (block.norm2) is missing."


def _block_cases(thorough):
    """(label, B, L, E, H, F, norm_first, activation, dtype, lengths, causal)."""
    yield "post-LN (norm_first=False), relu, B=2, L=5, E=8, H=2, d_ff=16, lengths (5, 3)", 2, 5, 8, 2, 16, \
        False, "relu", torch.float32, [5, 3], False
    yield "pre-LN (norm_first=True), relu, B=2, L=5, E=8, H=2, d_ff=16, lengths (5, 3)", 2, 5, 8, 2, 16, \
        True, "relu", torch.float32, [5, 3], False
    if thorough:
        yield "post-LN, gelu, causal attn_mask, float64, B=3, L=6, E=16, H=4, d_ff=32", 3, 6, 16, 4, 32, \
            False, "gelu", torch.float64, [6, 4, 2], True
        yield "pre-LN, gelu, causal attn_mask, float64, B=3, L=6, E=16, H=4, d_ff=32", 3, 6, 16, 4, 32, \
            True, "gelu", torch.float64, [6, 6, 1], True


def check_transformer_block(fn, thorough=False, seed=71):
    """``fn(block, x (B, L, E), attn_mask, key_padding_mask) -> (B, L, E)``, equal to ``block(x, ...)`` in eval mode.

    ``block`` is an ``attn_course.transformer.TransformerBlock``; ``fn`` combines its submodules
    ``self_attn``, ``norm1``, ``norm2`` and ``feed_forward`` as post-LN or pre-LN (``block.norm_first``).
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, E, H, F_, norm_first, activation, dtype, lengths, causal in _block_cases(thorough):
        block = _random_block(g, E, H, F_, norm_first, activation, dtype)
        x = _randn(g, B, L, E, dtype=dtype)
        key_padding_mask = attention.padding_mask(lengths, L)                            # (B, L), True = padding
        attn_mask = attention.causal_mask(L) if causal else None                         # (L, L), True = may attend
        with torch.no_grad():
            ref = block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
            got = _call(fn, (block, x.clone(), attn_mask, key_padding_mask), case)
            if isinstance(got, tuple):
                raise CheckFailure("type", f"{case}: return only the block's output x (B, L, E), not a tuple of "
                                           f"{len(got)}.")
            _expect_like_no_values("x", got, ref, case, "(B, L, E)")
            if causal:
                t = L // 2
                later = x.clone()
                later[:, t + 1:] += _randn(g, B, L - t - 1, E, dtype=dtype)             # change the future only
                again = _call(fn, (block, later, attn_mask, key_padding_mask), case)
                if not torch.allclose(again[:, :t + 1], got[:, :t + 1], atol=1e-8, rtol=1e-6):
                    raise CheckFailure("causality", f"{case}: changing x at positions > {t} changed the output at "
                                                    f"positions <= {t}: with a causal attn_mask a position must not "
                                                    f"see later ones. Pass attn_mask to block.self_attn.")
            variants = list(_block_variants(block, x, attn_mask, key_padding_mask))

        def hint(actual, expected):
            for candidate, text in variants:
                if _matches(actual, candidate, atol=1e-6):
                    return text
            return ("Post-LN: x = norm1(x + self_attn(x)); x = norm2(x + feed_forward(x)). "
                    "Pre-LN: x = x + self_attn(norm1(x)); x = x + feed_forward(norm2(x)).")
        expect_tensor("x", got, ref, case, "(B, L, E)", atol=1e-5 if dtype == torch.float32 else 1e-10, hint=hint)


def check_positional_encoding(cls, thorough=False, seed=72):
    """``cls(max_len, d_model)`` -> a module; ``module(x (B, L, E)) -> x + PE[:L]`` (sinusoidal, Vaswani et al. 3.5)."""
    g = torch.Generator().manual_seed(seed)
    cases = [("max_len=16, d_model=8, x (2, 5, 8)", 16, 8, 2, 5, torch.float32)]
    if thorough:
        cases += [("L = max_len: max_len=12, d_model=8, x (3, 12, 8)", 12, 8, 3, 12, torch.float32),
                  ("float64, max_len=32, d_model=32, x (4, 10, 32)", 32, 32, 4, 10, torch.float64),
                  ("float16, max_len=16, d_model=16, x (2, 7, 16)", 16, 16, 2, 7, torch.float16),
                  ("one position: max_len=8, d_model=4, x (3, 1, 4)", 8, 4, 3, 1, torch.float32)]
    for case, max_len, E, B, L, dtype in cases:
        module = _call(cls, (max_len, E), f"{case}: building {getattr(cls, '__name__', 'it')}(max_len, d_model)")
        if not callable(module):
            raise CheckFailure("type", f"{case}: {getattr(cls, '__name__', 'cls')}(max_len, d_model) must build a "
                                       f"module; got {type(module).__name__}")
        if isinstance(module, nn.Module):
            module.eval()
        x = _randn(g, B, L, E, dtype=dtype)
        ref = transformer.SinusoidalPositionalEncoding(max_len, E)(x)
        with torch.no_grad():
            got = _call(module, (x.clone(),), case)
        _expect_like_no_values("output", got, ref, case, "(B, L, E)")
        atol = {torch.float16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-6}[dtype]
        added = got.detach().double() - x.double()                                      # what the module added
        if B > 1 and not torch.allclose(added, added[:1].expand_as(added), atol=atol):
            by_batch = L > 1 and torch.allclose(added, added[:, :1].expand_as(added), atol=atol)
            raise CheckFailure("values", f"{case}: the sequences of the batch received different encodings; the "
                                         f"encoding depends on the position only. " + (
                                             "Do you slice pe by the batch size x.shape[0] instead of the length "
                                             "x.shape[1]?" if by_batch else
                                             "Add a fixed table to x (x + pe[...]) without transforming x."))
        if L > 1 and torch.allclose(added, added[:, :1].expand_as(added), atol=atol):
            raise CheckFailure("values", f"{case}: every position received the same encoding vector (the one "
                                         f"added at position 0 equals the one at position {L - 1}), so the model "
                                         f"cannot tell word order: shuffle the tokens and nothing changes. Position "
                                         f"l must get row l of pe: which rows does your slice pick?")
        expect_tensor("output", got, ref, case, "(B, L, E)", atol=atol, hint=lambda a, e: (
            "Add row l of sinusoidal_positional_encoding(max_len, d_model) to position l, for l < L."))


def _expect_like_no_values(name, actual, like, case, legend):
    """Type, shape and dtype of ``actual`` as those of ``like`` (NaN is judged by the caller)."""
    if isinstance(actual, torch.Tensor) and actual.shape == like.shape and actual.dtype == like.dtype:
        return
    expect_tensor(name, actual, like, case, legend)
