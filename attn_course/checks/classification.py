"""Checks of lesson 10 (text classification): attention pooling with a padding mask."""

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
