"""Checks of lessons 01-03: padding, embeddings, scores, softmax and context."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import attention, data, scoring
from .core import (
    CheckFailure,
    attention_cases,
    call_learner,
    call_learner_grad,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    random_tensor,
    scale_hint,
)
from .remote import is_instance, type_name
from .tripwire import MHA, SDPA, SOFTMAX, package


@forbids(*package(data.pad_batch))
def check_pad_batch(fn, thorough=False):
    """``fn(sequences, pad_id) -> (ids (B, T) int64, key_padding_mask (B, T) bool, True = padding)``."""
    cases = [("three sentences", [[4, 5, 6], [7], [8, 9]], 0)]
    if thorough:
        cases += [("one sequence", [[3, 1, 2]], 0), ("pad_id=99 and an empty sequence", [[5], [], [6, 7]], 99),
                  ("a real token equal to pad_id (mask from lengths, not from ids == pad_id)", [[0, 5], [7]], 0)]
    for case, seqs, pad_id in cases:
        got = call_learner(fn, ([list(s) for s in seqs], pad_id), case)
        ref_ids, ref_mask = data.pad_batch(seqs, pad_id)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (ids, key_padding_mask); got "
                                       f"{type_name(got)}")
        expect_tensor("ids", got[0], ref_ids, case, "(B, T)")
        mask = got[1]
        if isinstance(mask, torch.Tensor) and mask.shape == ref_mask.shape and mask.dtype == torch.bool \
                and torch.equal(mask.cpu(), ~ref_mask):
            raise CheckFailure("mask", f"{case}: key_padding_mask is inverted: True on every real token and False "
                                       f"on padding. Here True must mean *padding* (ignore this key), as "
                                       f"nn.MultiheadAttention's key_padding_mask does.")
        expect_tensor("key_padding_mask", mask, ref_mask, case, "(B, T)")


@forbids(("torch.nn.functional.embedding", F.embedding), ("torch.nn.Embedding", nn.Embedding.forward))
def check_embedding_lookup(fn, thorough=False):
    """``fn(ids (B, T) int64, weight (V, E)) -> (B, T, E)``, equal to ``F.embedding(ids, weight)``."""
    g = torch.Generator().manual_seed(1)
    cases = [("B=2, T=4, V=10, E=3", 2, 4, 10, 3)]
    if thorough:
        cases += [("B=3, T=7, V=50, E=16", 3, 7, 50, 16), ("B=1, T=1, V=2, E=5", 1, 1, 2, 5)]
    for case, B, T, V, E in cases:
        ids = torch.randint(0, V, (B, T), generator=g)
        weight = random_tensor(g, V, E)
        got = call_learner(fn, (ids, weight), case)
        expect_tensor("embeddings", got, F.embedding(ids, weight), case, "(B, T, E)")


# ----------------------------------------------------------------- lesson 02: scores
@forbids(*package(scoring.scaled_dot_scores, scoring.dot_scores, scoring.general_scores))
def check_scaled_dot_scores(fn, thorough=False, seed=2):
    """``fn(query (..., L, D), key (..., S, D)) -> attn_scores (..., L, S)``, ``q . k / sqrt(D)``."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, _, scale, dtype in attention_cases(thorough, seed):
        query, key = random_tensor(g, *batch, L, D, scale=scale, dtype=dtype), random_tensor(g, *batch, S, D, dtype=dtype)
        got = call_learner(fn, (query, key), case)
        expect_tensor("attn_scores", got, scoring.scaled_dot_scores(query, key), case, "(..., L, S)",
                      hint=scale_hint, rescaled="scores")


@forbids(*package(scoring.additive_scores, scoring.concat_scores))
def check_additive_scores(fn, thorough=False, seed=3):
    """``fn(query, key, w_query (A, Dq), w_key (A, Dk), v (A,)) -> attn_scores (..., L, S)``."""
    g = torch.Generator().manual_seed(seed)
    cases = [("L=3, S=4, Dq=5, Dk=6, A=7", (), 3, 4, 5, 6, 7)]
    if thorough:
        cases += [("batched (2,): L=4, S=2, Dq=Dk=A=8", (2,), 4, 2, 8, 8, 8)]
    for case, batch, L, S, Dq, Dk, A in cases:
        args = (random_tensor(g, *batch, L, Dq), random_tensor(g, *batch, S, Dk), random_tensor(g, A, Dq), random_tensor(g, A, Dk),
                random_tensor(g, A))
        expect_tensor("attn_scores", call_learner(fn, args, case), scoring.additive_scores(*args), case,
                      "(..., L, S)", hint=lambda a, e: "Check the tanh and that v is applied last.")


# ----------------------------------------------------------------- lesson 03: softmax and context
@forbids(*package(attention.softmax_with_temperature, attention.masked_softmax), *SOFTMAX)
def check_softmax_with_temperature(fn, thorough=False, seed=4):
    """``fn(attn_scores (..., L, S), temperature) -> attn_weights``, softmax over the key axis."""
    g = torch.Generator().manual_seed(seed)
    cases = [("L=3, S=5, T=0.5", (3, 5), 1.0, 0.5)]
    if thorough:
        cases += [("batched (2, 4, 6), T=2.0", (2, 4, 6), 1.0, 2.0), ("large scores, T=1", (3, 4), 200.0, 1.0)]
    for case, shape, scale, t in cases:
        attn_scores = random_tensor(g, *shape, scale=scale)
        got = call_learner(fn, (attn_scores.clone(), t), case)
        if isinstance(got, torch.Tensor) and got.shape == attn_scores.shape:
            expect_rows_sum_to_one("attn_weights", got, case)
        expect_tensor("attn_weights", got, attention.softmax_with_temperature(attn_scores, t), case,
                      "(..., L, S)", hint=lambda a, e: "Divide the scores by the temperature (not multiply).",
                      rescaled="weights")


@forbids(*package(attention.scaled_dot_product_attention, attention.attention_weights), *SDPA, *MHA)
def check_attention(fn, thorough=False, seed=5):
    """``fn(query, key, value) -> (context (..., L, Dv), attn_weights (..., L, S))``, unmasked SDPA."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, Dv, scale, dtype in attention_cases(thorough, seed):
        query = random_tensor(g, *batch, L, D, scale=scale, dtype=dtype)
        key, value = random_tensor(g, *batch, S, D, dtype=dtype), random_tensor(g, *batch, S, Dv, dtype=dtype)
        got = call_learner(fn, (query.clone(), key.clone(), value.clone()), case)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (context, attn_weights); got "
                                       f"{type_name(got)}")
        context, attn_weights = got
        ref_weights = attention.attention_weights(query, key)
        if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
            expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, "(..., L, S)",
                      hint=lambda a, e: "Are the scores divided by sqrt(d_k) before the softmax?", rescaled="weights")
        expect_tensor("context", context, ref_weights @ value, case, "(..., L, Dv)",
                      hint=lambda a, e: "context is attn_weights @ value.")


@forbids(*package(attention.attention_weights, attention.scaled_dot_product_attention), *SDPA, *MHA)
def check_attention_weights(fn, thorough=False, seed=6):
    """``fn(query (..., L, D), key (..., S, D)) -> attn_weights (..., L, S)``, softmax(q k^T / sqrt(D))."""
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, _, scale, dtype in attention_cases(thorough, seed):
        query = random_tensor(g, *batch, L, D, scale=scale, dtype=dtype)
        key = random_tensor(g, *batch, S, D, dtype=dtype)
        got = call_learner(fn, (query.clone(), key.clone()), case)
        ref_weights = attention.attention_weights(query, key)
        if isinstance(got, torch.Tensor) and got.shape == ref_weights.shape:
            expect_rows_sum_to_one("attn_weights", got, case)
        expect_tensor("attn_weights", got, ref_weights, case, "(..., L, S)",
                      hint=lambda a, e: "Are the scores divided by sqrt(d_k) before the softmax?", rescaled="weights")


@forbids(*package(data.token_embedding))
def check_token_embedding(fn, thorough=False, seed=9):
    """``fn(vocab_size, embed_dim, pad_id, generator) -> nn.Embedding`` whose pad row is zero and learns nothing.

    Compares the table with ``data.token_embedding`` from the same seed, then runs one backward pass on
    ids that contain padding: the pad row's gradient must be exactly zero (kind ``gradient``).
    """
    cases = [("V=10, E=4, pad_id=0", 10, 4, 0)]
    if thorough:
        cases += [("V=50, E=16, pad_id=49", 50, 16, 49), ("V=3, E=1, pad_id=1", 3, 1, 1)]
    for case, V, E, pad_id in cases:
        got = call_learner(fn, (V, E, pad_id, torch.Generator().manual_seed(seed)), case)
        if not is_instance(got, nn.Embedding):
            raise CheckFailure("type", f"{case}: return an nn.Embedding; got {type_name(got)}")
        ref = data.token_embedding(V, E, pad_id, torch.Generator().manual_seed(seed))
        expect_tensor("weight", got.weight, ref.weight, case, "(V, E)", hint=lambda a, e: (
            f"The pad row weight[{pad_id}] must be all zeros." if a[pad_id].abs().sum() > 0 else
            "Draw the table with torch.randn(V, E, generator=generator), then zero the pad row."))
        ids = torch.tensor([[1 % V, pad_id, pad_id], [pad_id, (2 % V), pad_id]])   # (B=2, T=3), padding included
        _, (grad,) = call_learner_grad(got, (ids,), case, wrt=("weight",),
                                       weight=torch.arange(1.0, E + 1))              # (B, T, E) -> a scalar
        if grad is None:
            raise CheckFailure("gradient", f"{case}: the embedding's weight received no gradient at all; "
                                           f"is requires_grad off?")
        if grad[pad_id].abs().sum() > 0:
            raise CheckFailure("gradient", f"{case}: the pad row weight[{pad_id}] received a gradient "
                                           f"({grad[pad_id].tolist()[:4]}...): after one optimizer step it is "
                                           f"no longer zero, and padding learns. Zeroing the row once is not "
                                           f"enough: pass padding_idx=pad_id to nn.Embedding.")


@forbids(*package(attention.scaled_dot_product_attention), *SDPA, *MHA)
def check_scaled_dot_product_attention(fn, thorough=False, seed=10):
    """``fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False) -> attn_output (..., L, Dv)``.

    Without dropout: equal to ``torch.nn.functional.scaled_dot_product_attention`` (no mask, a bool
    mask, ``is_causal``). With dropout: with ``value`` the identity, the output is the dropped weights;
    each entry must be 0 or the weight times 1 / (1 - p) (kind ``scale`` otherwise), about a fraction p
    zeroed, and the mean over many draws equal to the weights (inverted dropout, as ``torch.nn.functional.dropout``).
    """
    g = torch.Generator().manual_seed(seed)
    for case, batch, L, S, D, Dv, scale, dtype in attention_cases(thorough, seed):
        query = random_tensor(g, *batch, L, D, scale=scale, dtype=dtype)
        key, value = random_tensor(g, *batch, S, D, dtype=dtype), random_tensor(g, *batch, S, Dv, dtype=dtype)
        got = call_learner(fn, (query.clone(), key.clone(), value.clone()), case)
        expect_tensor("attn_output", got, F.scaled_dot_product_attention(query, key, value), case, "(..., L, Dv)",
                      hint=lambda a, e: "Without dropout this is softmax(Q K^T / sqrt(d_k)) V.")
        keep = torch.rand(*batch, L, S, generator=g) > 0.3
        keep[..., 0] = True                                                        # every query sees a key
        got = call_learner(fn, (query, key, value, keep), case + ", bool attn_mask (True = may attend)")
        expect_tensor("attn_output", got, F.scaled_dot_product_attention(query, key, value, attn_mask=keep),
                      case + ", bool attn_mask", "(..., L, Dv)",
                      hint=lambda a, e: "True in attn_mask means *may attend*, as in PyTorch's SDPA.")
    p_values = [0.25] + ([0.5, 0.1] if thorough else [])
    for p in p_values:
        case = f"dropout_p={p}, value = identity (S=5), 4000 queries"
        query, key = random_tensor(g, 4000, 1, 8), random_tensor(g, 4000, 5, 8)
        value = torch.eye(5).expand(4000, 5, 5)
        weights = attention.attention_weights(query, key)                           # (N, 1, S)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dropped = call_learner(fn, (query, key, value, None, p), case)                 # (N, 1, S)
        expect_tensor("attn_output", dropped, weights, case, "(N, 1, S)", atol=float("inf"))  # shape, dtype, finite
        kept = dropped != 0
        ratio = (dropped[kept] / weights[kept])
        zeroed = 1 - kept.double().mean().item()
        if not torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-4):
            r = ratio.median().item()
            raise CheckFailure("scale", f"{case}: the weights that survive dropout are multiplied by {r:.4g}; "
                                        f"expected 1 / (1 - p) = {1 / (1 - p):.4g}, so that their expectation "
                                        f"is unchanged" + (" (yours divide by p)." if abs(r - 1 / p) < 1e-3 else "."))
        sigma = math.sqrt(p * (1 - p) / kept.numel())
        if abs(zeroed - p) > 5 * sigma:
            raise CheckFailure("values", f"{case}: {zeroed:.3f} of the weights were zeroed; expected about "
                                         f"p = {p} (each weight independently).")
