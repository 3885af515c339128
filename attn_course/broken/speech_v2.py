"""Broken copies of lesson 13's speech code (attn_course.apps.speech)."""
import math

from ..apps import speech
from ..attention import masked_softmax


def subsample_padding_mask_v2(key_padding_mask, stride=2):
    if stride < 1 or key_padding_mask.dim() != 2:
        raise ValueError(f"need stride >= 1 and a (B, S) mask; got stride={stride}, shape {tuple(key_padding_mask.shape)}")
    return key_padding_mask[:, :math.ceil(key_padding_mask.shape[1] / stride)]       # (B, S) -> (B, ceil(S / stride))


def query_attention_pool_v2(query, key, value, key_padding_mask=None):
    B, S, E = key.shape
    if query.shape[-1] != E or value.shape[:2] != (B, S) or (
            key_padding_mask is not None and key_padding_mask.shape != (B, S)):
        raise ValueError(f"query (E,) or (B, E), key (B, S, E), value (B, S, Dv), key_padding_mask (B, S); got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}, "
                         f"{None if key_padding_mask is None else tuple(key_padding_mask.shape)}")
    attn_scores = (key @ query.reshape(-1, E, 1)).squeeze(-1) / math.sqrt(E)        # (B, S, E) @ (., E, 1) -> (B, S)
    attn_mask = None if key_padding_mask is None else ~key_padding_mask             # True = may attend
    attn_weights = masked_softmax(attn_scores)                                       # (B, S), rows sum to 1
    context = (attn_weights.unsqueeze(1) @ value).squeeze(1)                         # (B, 1, S) @ (B, S, Dv) -> (B, Dv)
    return context, attn_weights


subsample_padding_mask_v2.__doc__ = speech.subsample_padding_mask.__doc__
query_attention_pool_v2.__doc__ = speech.query_attention_pool.__doc__
