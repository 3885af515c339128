"""Checks of lesson 05: self- and cross-attention."""
import math

import torch

from .. import attention, self_cross
from .core import (
    CheckFailure,
    call_learner,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    format_shape,
    random_tensor,
)
from .remote import type_name
from .tripwire import MHA, package


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
        raise CheckFailure("type", f"{case}: return a tuple (context, attn_weights); got {type_name(got)}")
    context, attn_weights = got
    ref_context, ref_weights = self_cross.cross_attention(x_dec, x_enc, w_query, w_key, w_value,
                                                          key_padding_mask)
    if (isinstance(context, torch.Tensor) and context.shape == x_enc.shape != ref_context.shape):
        raise CheckFailure("shape", f"{case}: context should have shape (B, L, Dv) = {format_shape(ref_context.shape)}; "
                                    f"got {format_shape(context.shape)}, the shape of {names[1]}: did you average "
                                    f"{names[1]} itself instead of the values {names[1]} @ w_value?")
    weights_hint, context_hint = _qkv_hints(x_dec, x_enc, w_query, w_key, w_value, key_padding_mask, names)
    if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
    expect_tensor("attn_weights", attn_weights, ref_weights, case, legend, hint=weights_hint, rescaled="weights")
    expect_tensor("context", context, ref_context, case, "(B, L, Dv)", hint=context_hint)


def _self_attention_cases(thorough):
    """(label, B, L, E, D, Dv, input scale, dtype)."""
    yield "one sentence: B=1, L=5 tokens, d_model E=6, head_dim D=4", 1, 5, 6, 4, 4, 1.0, torch.float32
    if thorough:
        yield "batched: B=3, L=7, E=8, D=4, Dv=5", 3, 7, 8, 4, 5, 1.0, torch.float32
        yield "float64: B=2, L=6, E=D=16", 2, 6, 16, 16, 16, 1.0, torch.float64
        yield "one token: B=2, L=1, E=6, D=3", 2, 1, 6, 3, 3, 1.0, torch.float32
        yield "large inputs (x30): B=2, L=4, E=8, D=8", 2, 4, 8, 8, 8, 30.0, torch.float32


@forbids(*package(self_cross.self_attention, self_cross.cross_attention, self_cross.attend), *MHA)
def check_self_attention(fn, thorough=False, seed=7):
    """``fn(x (B, L, E), w_query (E, D), w_key (E, D), w_value (E, Dv))`` -> ``(context (B, L, Dv), attn_weights (B, L, L))``.

    Queries, keys and values all come from ``x``: ``softmax((x W_Q)(x W_K)^T / sqrt(D)) (x W_V)``.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, E, D, Dv, scale, dtype in _self_attention_cases(thorough):
        x = random_tensor(g, B, L, E, scale=scale, dtype=dtype)
        w_query, w_key = random_tensor(g, E, D, scale=E ** -0.5, dtype=dtype), random_tensor(g, E, D, scale=E ** -0.5, dtype=dtype)
        w_value = random_tensor(g, E, Dv, scale=E ** -0.5, dtype=dtype)
        got = call_learner(fn, (x.clone(), w_query.clone(), w_key.clone(), w_value.clone()), case)
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


@forbids(*package(self_cross.cross_attention, self_cross.self_attention, self_cross.attend), *MHA)
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
        decoder_states = random_tensor(g, B, L, E, scale=scale, dtype=dtype)
        encoder_states, other_encoder_states = (random_tensor(g, B, S, E, scale=scale, dtype=dtype) for _ in range(2))
        weights = [random_tensor(g, E, n, scale=E ** -0.5, dtype=dtype) for n in (D, D, Dv)]
        key_padding_mask = None if lengths is None else attention.padding_mask(lengths, S)
        extra = () if key_padding_mask is None else (key_padding_mask.clone(),)
        got = call_learner(fn, (decoder_states.clone(), encoder_states.clone(), *[w.clone() for w in weights], *extra), case)
        attn_weights = got[1] if isinstance(got, tuple) and len(got) == 2 else None
        if (isinstance(attn_weights, torch.Tensor) and L != S and attn_weights.dim() == 3
                and tuple(attn_weights.shape[-2:]) == (L, L)):
            raise CheckFailure("shape", f"{case}: attn_weights should have shape (B, L, S) = {format_shape((B, L, S))}; got "
                                        f"{format_shape(attn_weights.shape)}: one column per *decoder* position. The keys "
                                        f"must come from encoder_states (S = {S} positions), not from "
                                        f"decoder_states (L = {L}).")
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], torch.Tensor):
            probe = call_learner(fn, (decoder_states.clone(), other_encoder_states.clone(), *[w.clone() for w in weights],
                               *extra), case + " (encoder_states changed)")
            if isinstance(probe, tuple) and len(probe) == 2 and _close(probe[0], got[0]):
                raise CheckFailure("values", f"{case}: context did not change when encoder_states changed (a "
                                             f"different source sentence): your cross-attention ignores the "
                                             f"encoder. Keys and values must come from encoder_states "
                                             f"(encoder_states @ w_key, encoder_states @ w_value).")
        _expect_qkv_outputs(got, case, (decoder_states, encoder_states, *weights), key_padding_mask, names,
                            "(B, L, S)")
