"""Second versions of reference functions (see the package docstring)."""
import math

import torch

from .. import attention, data, scoring
from ..attention import causal_mask, masked_softmax
from ..scoring import _check_pair


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
    _check_pair(query, key, same_dim=True)
    scale = 1.0 / query.shape[-1] if scale is None else scale
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


def attention_weights_v2(query, key, attn_mask=None, is_causal=False, scale=None):
    _check_pair(query, key, same_dim=True)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., L, D) @ (..., D, S) -> (..., L, S)
    return masked_softmax(attn_scores, attn_mask, dim=-2)


for _broken, _reference in ((pad_batch_v2, data.pad_batch), (scaled_dot_scores_v2, scoring.scaled_dot_scores),
                            (attention_weights_v2, attention.attention_weights)):
    _broken.__doc__ = _reference.__doc__
