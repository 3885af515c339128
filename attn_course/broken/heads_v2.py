"""Second versions of the head-splitting functions (see the package docstring)."""
import math

import torch

from .. import heads
from ..attention import key_padding_to_attn_mask, masked_softmax
from ..heads import validate_split


def split_heads_v2(x, num_heads):
    validate_split(x, num_heads)
    B, L, E = x.shape
    return x.view(B, num_heads, L, E // num_heads)  # (B, L, E) -> (B, H, L, D)


def merge_heads_v2(x):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor (B, H, L, D); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    B, H, L, D = x.shape
    return x.reshape(B, L, H * D)  # (B, H, L, D) -> (B, L, E)


def multi_head_attention_v2(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
                            key_padding_mask=None):
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != tuple(key.shape[:2]):
        raise ValueError(f"key_padding_mask must be bool (B, S) = {tuple(key.shape[:2])}, True = padding; "
                         f"got {tuple(key_padding_mask.shape)}")
    q = heads.split_heads(q_proj(query), num_heads)                   # (B, L, E) -> (B, H, L, D)
    k = heads.split_heads(k_proj(key), num_heads)                     # (B, S, E) -> (B, H, S, D)
    v = heads.split_heads(v_proj(value), num_heads)                   # (B, S, E) -> (B, H, S, D)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, H, L, D) @ (B, H, D, S) -> (B, H, L, S)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)  # (B, S) -> (B, 1, 1, S), True = may attend
    attn_weights = masked_softmax(attn_scores, attn_mask)             # (B, H, L, S), rows sum to 1 over S
    context = heads.merge_heads(attn_weights @ v)                     # (B, H, L, D) -> (B, L, E)
    return out_proj(context), attn_weights


for _broken, _reference in ((split_heads_v2, heads.split_heads), (merge_heads_v2, heads.merge_heads),
                            (multi_head_attention_v2, heads.multi_head_attention)):
    _broken.__doc__ = _reference.__doc__
