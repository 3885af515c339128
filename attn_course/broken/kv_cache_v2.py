"""Broken copy of lesson 16's cached attention (attn_course.kv_cache)."""
from torch.nn import functional as F

from .. import kv_cache


def cached_attention_v2(query, key_all, value_all, past_length):
    L_new, S = query.shape[-2], key_all.shape[-2]
    if S != past_length + L_new:
        raise ValueError(f"key_all must hold past_length + L_new = {past_length} + {L_new} positions; "
                         f"got S = {S} (key_all {tuple(key_all.shape)})")
    return F.scaled_dot_product_attention(query, key_all, value_all, is_causal=True)  # (..., L_new, Dv)


cached_attention_v2.__doc__ = kv_cache.cached_attention.__doc__
