"""Second and later versions of the head-splitting functions and of multi-head attention (see the package docstring)."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import attention, heads
from ..attention import (
    add_attn_bias,
    attention_weights,
    causal_mask,
    key_padding_to_attn_mask,
    masked_softmax,
    merge_masks,
    validate_projection_inputs,
)
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


class MultiHeadAttention_v2(nn.Module):

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True, positional=None):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(f"d_model must be divisible by num_heads; got d_model={d_model}, "
                             f"num_heads={num_heads}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.positional = positional
        self.q_proj = nn.Linear(self.head_dim, self.head_dim, bias=bias)
        self.k_proj = nn.Linear(self.head_dim, self.head_dim, bias=bias)
        self.v_proj = nn.Linear(self.head_dim, self.head_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query, key=None, value=None, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=True):
        key = query if key is None else key
        value = key if value is None else value
        validate_projection_inputs(query, key, value, key_padding_mask, self.d_model)
        B, L, E = query.shape
        S, H, D = key.shape[1], self.num_heads, self.head_dim
        q = self.q_proj(query.reshape(B, L, H, D)).transpose(1, 2)  # (B, L, E) -> (B, L, H, D) -> (B, H, L, D)
        k = self.k_proj(key.reshape(B, S, H, D)).transpose(1, 2)    # (B, S, E) -> (B, H, S, D)
        v = self.v_proj(value.reshape(B, S, H, D)).transpose(1, 2)  # (B, S, E) -> (B, H, S, D)
        attn_mask = merge_masks(attn_mask, key_padding_mask, is_causal, L, S, device=query.device)
        if self.positional is not None:
            q, k, attn_bias = self.positional(q, k)                          # rotated q, k; None or (H, L, S)
            attn_mask = add_attn_bias(attn_mask, attn_bias)
        attn_weights = attention_weights(q, k, attn_mask)                    # (B, H, L, S)
        dropped = F.dropout(attn_weights, p=self.dropout, training=self.training)
        context = (dropped @ v).transpose(1, 2).reshape(B, L, E)             # (B, H, L, D) -> (B, L, E)
        return self.out_proj(context), (attn_weights if need_weights else None)


class MultiHeadAttention_v3(nn.Module):

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True, positional=None):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(f"d_model must be divisible by num_heads; got d_model={d_model}, "
                             f"num_heads={num_heads}")
        if positional is not None:
            raise ValueError("positional is not supported here: PyTorch's fused layer below takes no "
                             "per-head positions")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, bias=bias)  # PyTorch's fused layer

    def forward(self, query, key=None, value=None, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=True):
        key = query if key is None else key
        value = key if value is None else value
        validate_projection_inputs(query, key, value, key_padding_mask, self.d_model)
        if is_causal:
            attn_mask = ~causal_mask(query.shape[1], key.shape[1], device=query.device)  # (L, S), True = ignore
        return self.attn(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                         attn_mask=attn_mask, average_attn_weights=False)   # every head's weights


for _broken, _reference in ((split_heads_v2, heads.split_heads), (merge_heads_v2, heads.merge_heads),
                            (multi_head_attention_v2, heads.multi_head_attention),
                            (MultiHeadAttention_v2, attention.MultiHeadAttention),
                            (MultiHeadAttention_v3, attention.MultiHeadAttention)):
    _broken.__doc__ = _reference.__doc__
