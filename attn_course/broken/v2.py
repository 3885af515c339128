"""Second versions of reference functions (see the package docstring)."""
import math

import torch
from torch import nn

from .. import attention, data, scoring
from ..attention import attention_weights, causal_mask, masked_softmax, validate_query_key_value
from ..scoring import validate_query_key

d_k = 64  # the head size of the examples in the lessons


def pad_batch_v2(sequences, pad_id=0):
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence; got an empty list")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)   # (B, T)
    key_padding_mask = torch.zeros(len(sequences), T, dtype=torch.bool)  # (B, T)
    for b, seq in enumerate(sequences):
        ids[b, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        key_padding_mask[b, :len(seq)] = True
    return ids, key_padding_mask


def scaled_dot_scores_v2(query, key, scale=None):
    validate_query_key(query, key, same_dim=True)
    scale = 1.0 / query.shape[-1] if scale is None else scale
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


def attention_weights_v2(query, key, attn_mask=None, is_causal=False, scale=None):
    validate_query_key(query, key, same_dim=True)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., L, D) @ (..., D, S) -> (..., L, S)
    return masked_softmax(attn_scores, attn_mask, dim=-2)


def token_embedding_v2(vocab_size, embed_dim, pad_id=0, generator=None):
    for name, n in (("vocab_size", vocab_size), ("embed_dim", embed_dim)):
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id must lie in [0, vocab_size={vocab_size}); got {pad_id}")
    weight = torch.randn(vocab_size, embed_dim, generator=generator)       # (V, E)
    embedding = nn.Embedding(vocab_size, embed_dim)                        # zeroes the pad row of its own table
    with torch.no_grad():
        embedding.weight.copy_(weight)
        embedding.weight[pad_id] = 0.0
    return embedding


def softmax_with_temperature_v2(attn_scores, temperature=1.0, dim=-1):
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    return torch.softmax(attn_scores * temperature, dim=dim)


def additive_scores_v2(query, key, w_query, w_key, v):
    validate_query_key(query, key, same_dim=False)
    A = v.shape[0] if v.dim() == 1 else -1
    if (v.dim() != 1 or tuple(w_query.shape) != (A, query.shape[-1])
            or tuple(w_key.shape) != (A, key.shape[-1])):
        raise ValueError(f"expected w_query (A, Dq={query.shape[-1]}), w_key (A, Dk={key.shape[-1]}), "
                         f"v (A,); got w_query {tuple(w_query.shape)}, w_key {tuple(w_key.shape)}, "
                         f"v {tuple(v.shape)}")
    q = (query @ w_query.T).unsqueeze(-2)   # (..., L, Dq) -> (..., L, 1, A)
    k = (key @ w_key.T).unsqueeze(-3)       # (..., S, Dk) -> (..., 1, S, A)
    return (q + k) @ v                      # (..., L, S, A) -> (..., L, S)


def attention_weights_v3(query, key, attn_mask=None, is_causal=False, scale=None):
    validate_query_key(query, key, same_dim=True)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., L, D) @ (..., D, S) -> (..., L, S)
    return masked_softmax(attn_scores, attn_mask)


def scaled_dot_product_attention_v2(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                    scale=None, enable_gqa=False):
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1); got {dropout_p}")
    validate_query_key_value(query, key, value, enable_gqa)
    if enable_gqa:
        Hq = query.shape[-3]
        key = key.repeat_interleave(Hq // key.shape[-3], dim=-3)        # (..., Hkv, S, D) -> (..., Hq, S, D)
        value = value.repeat_interleave(Hq // value.shape[-3], dim=-3)  # (..., Hkv, S, Dv) -> (..., Hq, S, Dv)
    attn_weights = attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    if dropout_p > 0.0:  # inverted dropout (F.dropout's scaling at training time): E[attn_weights] is unchanged
        keep = torch.rand_like(attn_weights) >= dropout_p                    # (..., L, S), True w.p. 1 - p
        attn_weights = attn_weights * keep / dropout_p
    return attn_weights @ value  # (..., L, S) @ (..., S, Dv) -> (..., L, Dv)


for _broken, _reference in ((pad_batch_v2, data.pad_batch), (scaled_dot_scores_v2, scoring.scaled_dot_scores),
                            (attention_weights_v2, attention.attention_weights),
                            (token_embedding_v2, data.token_embedding),
                            (softmax_with_temperature_v2, attention.softmax_with_temperature),
                            (additive_scores_v2, scoring.additive_scores),
                            (attention_weights_v3, attention.attention_weights),
                            (scaled_dot_product_attention_v2, attention.scaled_dot_product_attention)):
    _broken.__doc__ = _reference.__doc__
