"""Checks for the learner's code: used by the lessons, the public tests and the hidden tests.

Each check calls the learner's function on inputs drawn from a seeded generator, compares the result
with the package's reference, and on failure raises ``CheckFailure`` whose message says what was
expected, what came, and where to look. ``CheckFailure.kind`` names the property that failed:

    type, shape, dtype, finite, normalisation, values, error (the function raised)

``thorough=False`` runs one small case (what a learner sees); ``thorough=True`` adds batch dims,
L != S, float64 and large scores (what grading adds).
"""
import math

import torch
from torch.nn import functional as F

from . import attention, data, scoring

KINDS = ("type", "shape", "dtype", "finite", "normalisation", "values", "error")


class CheckFailure(AssertionError):
    """A failed check. ``kind`` is one of ``KINDS``; ``str(err)`` is the message for the learner."""

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


def _fmt(shape):
    return str(tuple(shape))


def _call(fn, args, case):
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise CheckFailure("error", f"{case}: {getattr(fn, '__name__', 'your function')} is not "
                                    f"implemented yet ({exc})") from None
    except Exception as exc:
        shapes = ", ".join(_fmt(a.shape) if isinstance(a, torch.Tensor) else repr(a) for a in args)
        raise CheckFailure("error", f"{case}: {getattr(fn, '__name__', 'your function')}({shapes}) "
                                    f"raised {type(exc).__name__}: {exc}") from None


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
        cases += [("one sequence", [[3, 1, 2]], 0), ("pad_id=99 and an empty sequence", [[5], [], [6, 7]], 99)]
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
