"""Checks of lesson 10 (text classification): attention pooling with a padding mask, and a probe that catches
padding that leaks."""

import torch

from .. import pooling
from ..apps import classification
from .core import call_learner, forbids
from .remote import type_name
from .tripwire import MHA, SDPA, package


def _pool_cases(thorough):
    """(label, lengths, S, Dv, dtype, score scale)."""
    yield "3 reviews of lengths 6, 3, 1 padded to S=6, Dv=4", [6, 3, 1], 6, 4, torch.float32, 1.0
    if thorough:
        yield "float64, lengths 7, 5, 2, 1 padded to S=7, Dv=5", [7, 5, 2, 1], 7, 5, torch.float64, 1.0
        yield "one token only (S=1)", [1, 1], 1, 3, torch.float32, 1.0
        yield "no padding at all (lengths 4, 4)", [4, 4], 4, 3, torch.float32, 1.0
        yield "large scores (x50), lengths 5, 2", [5, 2], 5, 3, torch.float32, 50.0
        yield "long padding: lengths 2, 9 of S=30, float64", [2, 9], 30, 2, torch.float64, 3.0


@forbids(*package(classification.attention_pooling, pooling.attention_pool), *SDPA, *MHA)
def check_attention_pooling(fn, thorough=False, seed=100):
    """``fn(attn_scores (B, S), value (B, S, Dv), key_padding_mask (B, S)) -> (context (B, Dv), attn_weights (B, S))``.

    Checked against :func:`attn_course.apps.classification.attention_pooling`: the tuple, shapes and
    dtypes; padding gets exactly zero weight; the weights of each review sum to 1 over its real
    tokens; the values; and the output does not change when more padding (with huge scores and
    values) is appended.
    """
    from ..checks import CheckFailure, expect_tensor
    g = torch.Generator().manual_seed(seed)
    for case, lengths, S, Dv, dtype, scale in _pool_cases(thorough):
        B = len(lengths)
        attn_scores = (torch.randn(B, S, generator=g, dtype=torch.float64) * scale).to(dtype)
        value = torch.randn(B, S, Dv, generator=g, dtype=torch.float64).to(dtype)
        key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]        # (B, S), True = padding
        attn_scores[key_padding_mask] = 5.0 * scale                                 # tempting scores on padding
        expected_context, expected_weights = classification.attention_pooling(attn_scores, value, key_padding_mask)
        got = call_learner(fn, (attn_scores.clone(), value.clone(), key_padding_mask.clone()), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (context, attn_weights); got {type_name(got)}"
                                       + (" (did you forget `return`?)" if got is None else ""))
        context, attn_weights = got
        for name, actual, expected, legend in (("attn_weights", attn_weights, expected_weights, "(B, S)"),
                                               ("context", context, expected_context, "(B, Dv)")):
            if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape or actual.dtype != dtype:
                expect_tensor(name, actual, expected, case, legend=legend)                # type, shape or dtype
        w = attn_weights.detach().double()
        if not torch.isfinite(w).all():
            b = int((~torch.isfinite(w)).any(1).nonzero()[0])
            if lengths[b] == S:
                raise CheckFailure("finite", f"{case}: review {b} has no padding, and its attn_weights are NaN: "
                                             f"every one of its scores was filled with -inf. key_padding_mask is "
                                             f"True = padding: fill the scores where it is True (is the polarity "
                                             f"inverted?).")
            raise CheckFailure("finite", f"{case}: attn_weights contains NaN or inf. With -inf on padding, "
                                         f"softmax is finite as long as each review has a real token; large "
                                         f"scores overflow exp() unless you subtract the row's maximum "
                                         f"(torch.softmax does).")
        on_padding = w.abs().masked_fill(~key_padding_mask, 0.0).sum(1)                 # (B,) weight on padding
        if (on_padding > 0).any():
            b = int(on_padding.argmax())
            raise CheckFailure("mask", f"{case}: review {b} has {lengths[b]} real tokens and {S - lengths[b]} "
                                       f"padding tokens (key_padding_mask True), which got weight "
                                       f"{on_padding[b].item():.4f} in all; padding must get exactly 0. Fill the "
                                       f"padded scores with -inf before the softmax, and check that the softmax "
                                       f"sees the filled scores.")
        sums = w.sum(1)
        if ((sums - 1).abs() > 1e-4).any():
            b = int((sums - 1).abs().argmax())
            raise CheckFailure("normalisation", f"{case}: the weights of review {b} sum to {sums[b].item():.4f} "
                                                f"over its real tokens; they must sum to 1. Zeroing the padding "
                                                f"after the softmax does not renormalise: mask the scores before it.")
        tol = dict(atol=1e-10, rtol=1e-8) if dtype == torch.float64 else {}
        expect_tensor("attn_weights", attn_weights, expected_weights, case, legend="(B, S)", **tol,
                      hint=lambda a, e: "softmax over the tokens (dim=-1) of the masked scores.")
        expect_tensor("context", context, expected_context, case, legend="(B, Dv)", **tol,
                      hint=lambda a, e: "context = sum over t of attn_weights[:, t] * value[:, t]: "
                                        "(attn_weights.unsqueeze(1) @ value).squeeze(1).")
        more = 3                                                                     # append 3 padding tokens
        longer_scores = torch.cat([attn_scores, torch.full((B, more), 30.0, dtype=dtype)], dim=1)
        longer_value = torch.cat([value, torch.full((B, more, Dv), 1e3, dtype=dtype)], dim=1)
        longer_mask = torch.cat([key_padding_mask, torch.ones(B, more, dtype=torch.bool)], dim=1)
        context2, _ = call_learner(fn, (longer_scores, longer_value, longer_mask), case + ", 3 more padding tokens")
        expect_tensor("context", context2, expected_context, case + " with 3 more padding tokens (scores 30, "
                      "values 1000): the result must not change", legend="(B, Dv)", **tol)


# --------------------------------------------------------------------- a test that catches a padding bug
# The poolings a learner's probe is run on. They are module-level functions so that, when the grader runs
# the check outside the notebook's process, they travel to it by reference; their names say nothing of
# whether they are right.

def _pooling_1(attn_scores, value, key_padding_mask=None):
    if key_padding_mask is not None:
        attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))
    attn_weights = torch.nan_to_num(torch.softmax(attn_scores, dim=-1))
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _pooling_2(attn_scores, value, key_padding_mask=None):
    if key_padding_mask is not None:
        attn_scores.masked_fill(key_padding_mask, float("-inf"))                     # result thrown away
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _pooling_3(attn_scores, value, key_padding_mask=None):
    attn_weights = torch.softmax(attn_scores, dim=-1)                                # the mask never used
    return torch.einsum("bs,bsd->bd", attn_weights, value), attn_weights


def _pooling_4(attn_scores, value, key_padding_mask=None):
    real = torch.ones_like(attn_scores) if key_padding_mask is None else (~key_padding_mask).to(attn_scores.dtype)
    top = attn_scores.masked_fill(real == 0, float("-inf")).amax(-1, keepdim=True).nan_to_num(neginf=0.0)
    e = (attn_scores - top).clamp(max=0.0).exp() * real                              # exp of the real scores only
    attn_weights = e / e.sum(-1, keepdim=True).clamp(min=torch.finfo(e.dtype).tiny)
    return torch.einsum("bs,bsd->bd", attn_weights, value), attn_weights


def _pooling_5(attn_scores, value, key_padding_mask=None):
    if key_padding_mask is not None:
        attn_scores = attn_scores.masked_fill(key_padding_mask, 0.0)                 # 0 is not -inf
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _pooling_6(attn_scores, value, key_padding_mask=None):
    attn_weights = torch.softmax(attn_scores, dim=-1)
    if key_padding_mask is not None:
        attn_weights = attn_weights.masked_fill(key_padding_mask, 0.0)               # zeroed, not renormalised
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _pooling_7(attn_scores, value, key_padding_mask=None):
    context, attn_weights = _pooling_1(attn_scores.double(), value.double(), key_padding_mask)   # float64 inside
    return context.to(value.dtype), attn_weights.to(attn_scores.dtype)


# (pooling, leaks, what it does); the quick check uses the first four
_PROBED = ((_pooling_1, False, "a correct pooling (-inf on padding, then softmax)"),
           (_pooling_2, True, "the suspect's bug: masked_fill's result thrown away"),
           (_pooling_4, False, "a correct pooling that sums exp() over the real tokens only"),
           (_pooling_3, True, "a pooling that never uses key_padding_mask"),
           (_pooling_5, True, "a pooling that fills padded scores with 0 instead of -inf"),
           (_pooling_6, True, "a pooling that zeroes padded weights after the softmax without renormalising"),
           (_pooling_7, False, "a correct pooling computed in float64"))


@forbids(("attn_course.checks.check_attention_pooling", check_attention_pooling))
def check_padding_probe(fn, thorough=False, seed=101):
    """``fn(pooling) -> bool``: True when ``pooling(attn_scores, value, key_padding_mask)`` lets padding change a
    review's context (appending padded positions, whatever their scores and values, moves the output), False
    when it does not.

    The probe is run on correct poolings and on broken ones (the suspect's bug, a mask never used, 0 instead
    of -inf, weights zeroed after the softmax). Failures: ``type`` (not a bool), ``values`` (a broken pooling
    passed, or a correct one flagged; the message names which, without its code). ``thorough`` runs all
    seven poolings, in an order drawn from ``seed``.
    """
    from ..checks import CheckFailure
    probed = list(_PROBED if thorough else _PROBED[:4])
    order = torch.randperm(len(probed), generator=torch.Generator().manual_seed(seed)).tolist()
    for i in order:
        pooling_fn, leaks, what = probed[i]
        case = f"pooling {i + 1} of {len(probed)}"
        got = call_learner(fn, (pooling_fn,), case)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got)
        if not isinstance(got, bool):
            raise CheckFailure("type", f"{case}: return True or False (does padding leak?); got {type_name(got)}"
                                       + (" (did you forget `return`?)" if got is None else ""))
        if leaks and not got:
            raise CheckFailure("values", f"{case}: your probe says padding does not leak, but this is {what}. Append "
                                         f"padded positions with large scores and values unlike the real ones (not "
                                         f"-inf, not 0), mark them True in key_padding_mask, and compare the contexts "
                                         f"of the real reviews before and after.")
        if not leaks and got:
            raise CheckFailure("values", f"{case}: your probe says padding leaks, but this is {what}. Compare the "
                                         f"contexts with a tolerance (torch.allclose), only those of reviews that "
                                         f"have at least one real token, and pass the same real scores and values "
                                         f"both times.")
