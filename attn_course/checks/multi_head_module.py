"""Checks of a multi-head attention module: ``attn_course.MultiHeadAttention``, or any class built like it.

Lesson 06's function check hands the learner's code its four projections. A module owns its weights,
held its own way (four ``nn.Linear``, one fused input projection, PyTorch's ``nn.MultiheadAttention``
inside), so first come the properties every correct layer has whatever its weights:

- **batch independence** (kind ``causality``): sentence 0's output does not move when only the other
  sentences of the batch change. A module built for ``(L, B, E)`` and fed ``(B, L, E)`` fails it;
- **every head reads every feature** (kind ``values``): head h's query is ``x W_Q^h`` with ``W_Q^h``
  of shape (E, D), so changing features ``0 .. D-1`` of the queries (head 0's slice of the embedding)
  moves the weights of every head. One ``nn.Linear(D, D)`` applied to each head's slice fails it;
- the weights ``(B, H, L, S)``, rows summing to 1, weight 0 on padded keys (kinds ``shape``,
  ``normalisation``, ``mask``).

Then the values: when the module has the reference's four ``nn.Linear(E, E)`` (``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``), ``attn_course.MultiHeadAttention`` with the same weights must give the same
``attn_output`` and ``attn_weights``.
"""
import functools

import torch
from torch import nn

from .. import attention, heads
from .core import (
    CheckFailure,
    call_learner,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    format_shape,
    random_tensor,
)
from .remote import callable_object, is_instance, type_name
from .tripwire import package

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _module_cases(thorough):
    """(label, B, L, S, E, H, dtype, key lengths or None, self-attention?)."""
    yield "self-attention: B=3 sentences of L=5 tokens, E=8, H=2", 3, 5, 5, 8, 2, torch.float32, None, True
    if thorough:
        yield ("cross-attention with padding: B=2, L=3, S=6, E=12, H=3, key lengths [6, 4]", 2, 3, 6, 12, 3,
               torch.float32, [6, 4], False)
        yield ("float64 self-attention, as many sentences as tokens: B=L=4, E=16, H=4", 4, 4, 4, 16, 4,
               torch.float64, None, True)
        yield "one head: B=2, L=5, E=6, H=1", 2, 5, 5, 6, 1, torch.float32, None, True


def _expect_pair(got, case, B, L, E):
    """``got`` must be ``(attn_output (B, L, E), attn_weights)``; returns the pair."""
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailure("type", f"{case}: the module must return a tuple (attn_output, attn_weights); got "
                                   f"{type_name(got)}")
    if not isinstance(got[0], torch.Tensor):
        raise CheckFailure("type", f"{case}: attn_output must be a torch.Tensor; got {type_name(got[0])}")
    if tuple(got[0].shape) != (B, L, E):
        raise CheckFailure("shape", f"{case}: attn_output should have shape (B, L, E) = {format_shape((B, L, E))}; "
                                    f"got {format_shape(got[0].shape)}")
    return got


def _expect_weights_shape(attn_weights, case, shape):
    """attn_weights must be a tensor of shape (B, H, L, S): every head's weights, not their mean."""
    if not isinstance(attn_weights, torch.Tensor):
        raise CheckFailure("type", f"{case}: attn_weights must be a torch.Tensor; got {type_name(attn_weights)}")
    B, H, L, S = shape
    if tuple(attn_weights.shape) != shape:
        averaged = tuple(attn_weights.shape) == (B, L, S) and H > 1
        raise CheckFailure("shape", f"{case}: attn_weights should have shape (B, H, L, S) = {format_shape(shape)}; "
                                    f"got {format_shape(attn_weights.shape)}."
                                    + (" Return every head's weights; do not average them." if averaged else ""))


def _expect_batch_independence(module, args, got, g, case):
    """Change every sentence but sentence 0; sentence 0's output must not move (kind ``causality``)."""
    B = args[0].shape[0]
    changed = {id(t): t.clone() for t in args}                                    # self-attention: one tensor
    for t in changed.values():
        t[1:] = random_tensor(g, *t[1:].shape, dtype=t.dtype)                    # sentences 1..B-1 only
    again = call_learner(module, tuple(changed[id(t)] for t in args), case)
    again = _expect_pair(again, case, *got[0].shape)
    moved = (again[0][0].detach().double() - got[0][0].detach().double()).abs().max().item()
    if moved > 1e-6 * (1 + got[0][0].detach().abs().max().item()):
        weights = got[1]
        seen = (f" Your attn_weights have shape {format_shape(weights.shape)}: does the batch axis sit where the "
                f"keys should be?" if isinstance(weights, torch.Tensor) and weights.shape[-1] == B else "")
        raise CheckFailure("causality", f"{case}: changing sentences 1..{B - 1} of the batch moved the output of "
                                        f"sentence 0 by up to {moved:.3g}: each sentence must attend to its own "
                                        f"tokens only.{seen} torch.nn.MultiheadAttention and "
                                        f"nn.TransformerEncoderLayer read (L, B, E), sequence first, unless built "
                                        f"with batch_first=True; fed (B, L, E) they attend across the batch.")


def _expect_every_head_reads_every_feature(module, args, got, g, case, H):
    """Change the queries' features 0..D-1 only; the weights of every head must move (kind ``values``)."""
    query, rest = args[0], args[1:]
    B, L, E = query.shape
    D = E // H
    nudged = query.clone()
    nudged[..., :D] += random_tensor(g, B, L, D, dtype=query.dtype)               # head 0's slice of the features
    key, value = (query, query) if not rest else rest
    _, after = _expect_pair(call_learner(module, (nudged, key, value), case), case, B, L, E)
    before = got[1]
    still = [h for h in range(1, H) if torch.allclose(after[:, h].detach().cpu(), before[:, h].detach().cpu(),
                                                      atol=1e-7, rtol=1e-6)]
    if still:
        count = f" (Four nn.Linear(E, E) hold 4·E² + 4·E = {4 * E * E + 4 * E:,} parameters.)"
        raise CheckFailure("values", f"{case}: changing only features 0..{D - 1} of the query (head 0's slice of "
                                     f"the embedding, D = {D}) left the attn_weights of head"
                                     f"{'s' if len(still) > 1 else ''} {', '.join(map(str, still))} unchanged: "
                                     f"each head reads only its own D features. Head h's query must read all "
                                     f"E = {E} features, q_h = x W_Q^h with W_Q^h of shape (E, D): project with "
                                     f"one nn.Linear(E, E) and split the heads after it, not with one "
                                     f"nn.Linear(D, D) applied to every head's slice.{count}")


def _linears(module, E):
    """[(weight, bias), ...] of the module's four (E, E) projections, or None if it is built another way."""
    try:
        found = [(getattr(module, name).weight, getattr(module, name).bias) for name in PROJECTIONS]
    except Exception:                                                            # no such attribute: another layout
        return None
    ok = all(isinstance(w, torch.Tensor) and tuple(w.shape) == (E, E) for w, _ in found)
    return found if ok else None


def _expect_values(module, args, got, key_padding_mask, case, E, H):
    """With the module's own four projections, the reference must give the same output and weights."""
    found = _linears(module, E)
    if found is None:
        return
    reference = attention.MultiHeadAttention(E, H).to(args[0].dtype).eval()
    with torch.no_grad():
        for name, (weight, bias) in zip(PROJECTIONS, found):
            getattr(reference, name).weight.copy_(weight)
            getattr(reference, name).bias.copy_(torch.zeros(E) if bias is None else bias)
        ref_output, ref_weights = reference(*args, key_padding_mask=key_padding_mask)
    expect_tensor("attn_weights", got[1], ref_weights, case, "(B, H, L, S)", rescaled="weights", hint=lambda a, e: (
        "The weights differ from attn_course.MultiHeadAttention's with your own q_proj and k_proj: "
        "softmax(q_h k_h^T / sqrt(head_dim)) over the keys, per head."))
    expect_tensor("attn_output", got[0], ref_output, case, "(B, L, E)", hint=lambda a, e: (
        "The weights are right: merge the heads (transpose(1, 2).reshape(B, L, E)), then out_proj."))


@forbids(*package(attention.MultiHeadAttention.forward, heads.multi_head_attention))
def check_multi_head_attention_module(cls, thorough=False, seed=64):
    """``cls(d_model, num_heads)`` -> a module; ``module(query (B, L, E), key (B, S, E), value (B, S, E)[,
    key_padding_mask=(B, S), True = padding])`` -> ``(attn_output (B, L, E), attn_weights (B, H, L, S))``.

    Probes batch independence (kind ``causality``) and that every head reads every feature (kind
    ``values``) before the weights' shape, rows and padding; then compares with
    ``attn_course.MultiHeadAttention`` when the module holds four ``nn.Linear(E, E)`` named like its.
    ``key_padding_mask`` is passed by keyword, and only where there is padding. It forbids the course's
    own multi-head attention (``attn_course.MultiHeadAttention``, ``heads.multi_head_attention``), not PyTorch's:
    ``nn.MultiheadAttention(..., batch_first=True)`` inside a module is a correct answer.
    """
    g = torch.Generator().manual_seed(seed)
    name = getattr(cls, "__name__", "cls")
    for case, B, L, S, E, H, dtype, lengths, is_self in _module_cases(thorough):
        module = call_learner(cls, (E, H), f"{case}: building {name}(d_model={E}, num_heads={H})")
        if not callable_object(module):
            raise CheckFailure("type", f"{case}: {name}(d_model, num_heads) must build a module; got "
                                       f"{type_name(module)}")
        if is_instance(module, nn.Module):
            module = module.to(dtype)
            module.eval()
        query = random_tensor(g, B, L, E, dtype=dtype)
        args = (query, query, query) if is_self else (query, random_tensor(g, B, S, E, dtype=dtype),
                                                      random_tensor(g, B, S, E, dtype=dtype))
        with torch.no_grad():
            got = _expect_pair(call_learner(module, args, case), case, B, L, E)
            if B > 1:
                _expect_batch_independence(module, args, got, g, case)
            _expect_weights_shape(got[1], case, (B, H, L, S))
            expect_rows_sum_to_one("attn_weights", got[1], case)
            if H > 1:
                _expect_every_head_reads_every_feature(module, args, got, g, case, H)
            key_padding_mask = None
            if lengths is not None:
                key_padding_mask = attention.padding_mask(lengths, S)                   # (B, S), True = padding
                padded = functools.partial(module, key_padding_mask=key_padding_mask.clone())
                got = _expect_pair(call_learner(padded, args, case), case, B, L, E)
                _expect_weights_shape(got[1], case, (B, H, L, S))
                leaked = got[1].detach().cpu().masked_fill(~key_padding_mask[:, None, None, :], 0.0).abs().max()
                if leaked > 1e-6:
                    raise CheckFailure("mask", f"{case}: padded keys got weight up to {leaked.item():.3g}: "
                                               f"key_padding_mask (B, S) is True where a key is padding, and those "
                                               f"keys must get weight exactly 0.")
            _expect_values(module, args, got, key_padding_mask, case, E, H)
