"""Checks of the KV-cache lesson's exercise (lesson 16): attention of new queries over cached keys.

Raises ``attn_course.checks.CheckFailure`` with a message that says what was expected, what came and
where to look; ``thorough=True`` is what grading adds. A wrong causal alignment is reported as kind
``mask``, naming the keys the new query attended to (read off a second call whose values are the
identity matrix, so that the output is the attention weights) and the keys it should attend to.
"""
import torch

from .. import kv_cache
from .core import CheckFailure, call_learner, expect_tensor, forbids, random_tensor
from .tripwire import package


def _cases(thorough):
    """(label, B, H, L_new, past_length, D, Dv, dtype)."""
    yield "one new query at position 5 over 6 cached keys (B=1, H=2, D=8)", 1, 2, 1, 5, 8, 8, torch.float32
    if thorough:
        yield "3 new queries at positions 6..8 over 9 keys (B=2, H=3, D=16, Dv=5)", 2, 3, 3, 6, 16, 5, torch.float32
        yield "prefill: 4 new queries at positions 0..3, nothing cached (B=2, H=2)", 2, 2, 4, 0, 8, 8, torch.float32
        yield "float64, one new query at position 11 (B=2, H=4, D=32)", 2, 4, 1, 11, 32, 32, torch.float64


def _keys(row):
    """'key 0 only', 'keys 0..5', 'keys 0..2 and 6..8' or 'no key' for a bool row over S keys."""
    idx = torch.nonzero(row).flatten().tolist()
    if not idx:
        return "no key"
    if len(idx) == 1:
        return f"key {idx[0]} only"
    runs, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}..{a}")
            start = b
    return "keys " + " and ".join(runs)


def _diagnose(fn, query, key_all, past_length, case):
    """Call ``fn`` with ``value_all`` = identity (its output is then the weights); raise kind ``mask``
    naming the first new query whose attended keys differ from 0 .. past_length + i, or ``scale`` when
    the weights are a sharper or flatter softmax of the right scores. Returns quietly when the weights
    are right or the call tells nothing (the mismatch is then reported as ``values``)."""
    *batch, L_new, _ = query.shape
    S = key_all.shape[-2]
    identity = torch.eye(S, dtype=query.dtype).expand(*batch, S, S).clone()          # (B, H, S, S)
    try:
        weights = call_learner(fn, (query, key_all, identity, past_length), case)   # (B, H, L_new, S)
    except CheckFailure:
        return
    if not isinstance(weights, torch.Tensor) or weights.shape != (*batch, L_new, S):
        return
    positions = past_length + torch.arange(L_new)                                    # (L_new,)
    allowed = torch.arange(S) <= positions[:, None]                                  # (L_new, S), True = may attend
    seen = weights.detach().cpu().abs() > 1e-6                                       # (B, H, L_new, S)
    wrong = (seen != allowed).any(-1).nonzero()                                      # (n, 3): b, h, i
    if len(wrong) == 0:
        expected = kv_cache.cached_attention(query.double(), key_all.double(), identity.double(), past_length)
        try:
            expect_tensor("attn_weights (your output with value_all = identity)", weights,
                          expected.to(query.dtype), case, rescaled="weights")
        except CheckFailure as failure:
            if failure.kind == "scale":
                raise
        return
    *_, i = wrong[0].tolist()
    row, position = seen[tuple(wrong[0].tolist())], past_length + i
    message = (f"{case}: the new query at position {position} should attend to {_keys(allowed[i])}; your "
               f"outputs correspond to attending to {_keys(row)}")
    if torch.equal(row, torch.arange(S) <= i):
        message += (": with one new query, is_causal=True aligns the causal mask top-left (query i sees keys "
                    "0..i), so it sees key 0 only." if L_new == 1 else
                    ": is_causal=True (like tril() of an (L_new, S) mask) aligns the causal mask top-left, so "
                    "new query i sees keys 0..i.")
    elif row.all():
        message += ", later new positions included: the future must stay masked."
    else:
        message += "."
    raise CheckFailure("mask", message + " Align the mask bottom-right: new query i sits at position "
                                         "past_length + i and may attend to keys 0..past_length + i, e.g. "
                                         "attn_mask = torch.ones(L_new, S, dtype=torch.bool)"
                                         ".tril(diagonal=past_length) (True = may attend).")


@forbids(*package(kv_cache.cached_attention))
def check_cached_attention(fn, thorough=False, seed=160):
    """Check ``fn(query (B, H, L_new, D), key_all (B, H, S, D), value_all (B, H, S, Dv), past_length)
    -> attn_output (B, H, L_new, Dv)`` against ``attn_course.kv_cache.cached_attention``.

    The quick case is one new query after 5 cached positions, where ``is_causal=True`` goes wrong;
    ``thorough`` adds several new queries at once with Dv != D, a prefill (``past_length=0``, where the
    top-left mask happens to be right), more batch and head dims, and float64. Failures: ``shape``,
    ``dtype``, ``finite``, ``mask`` (the new queries attend to the wrong keys), ``scale`` (the right keys,
    a sharper or flatter softmax) and ``values``.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, H, L_new, past_length, D, Dv, dtype in _cases(thorough):
        S = past_length + L_new
        query = random_tensor(g, B, H, L_new, D, dtype=dtype)                        # (B, H, L_new, D)
        key_all = random_tensor(g, B, H, S, D, dtype=dtype)                          # (B, H, S, D)
        value_all = random_tensor(g, B, H, S, Dv, dtype=dtype)                       # (B, H, S, Dv)
        expected = kv_cache.cached_attention(query.double(), key_all.double(), value_all.double(),
                                             past_length).to(dtype)                  # (B, H, L_new, Dv)
        got = call_learner(fn, (query, key_all, value_all, past_length), case)
        if isinstance(got, torch.Tensor) and L_new != S and tuple(got.shape) == (B, H, S, Dv):
            raise CheckFailure("shape", f"{case}: attn_output should have shape (B, H, L_new, Dv) = "
                                        f"{(B, H, L_new, Dv)}; got {tuple(got.shape)}, one row per key. Return "
                                        f"the outputs of the new queries only (L_new = {L_new})")
        try:
            expect_tensor("attn_output", got, expected, case, legend="(B, H, L_new, Dv)")
        except CheckFailure as failure:
            if failure.kind == "values":
                _diagnose(fn, query, key_all, past_length, case)
            raise
