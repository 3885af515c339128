"""Broken copies of the vision lessons' references (lessons 11 and 12)."""
import torch

from ..apps import captioning, vision


def attention_map_v2(attn_weights, height, width):
    if attn_weights.dim() != 2 or attn_weights.shape[1] != height * width:
        raise ValueError(f"attn_weights must be (B, height * width) = (B, {height * width}); "
                         f"got {tuple(attn_weights.shape)}")
    B = attn_weights.shape[0]
    return attn_weights.reshape(B, width, height).transpose(1, 2)      # (B, S) -> (B, H, W)


def soft_attention_v2(query, features, w_query, w_key, v):
    if query.dim() != 2 or features.dim() != 3 or query.shape[0] != features.shape[0]:
        raise ValueError(f"query must be (B, Hd) and features (B, S, C); got {tuple(query.shape)} and "
                         f"{tuple(features.shape)}")
    A = v.shape[0] if v.dim() == 1 else -1
    if tuple(w_query.shape) != (A, query.shape[1]) or tuple(w_key.shape) != (A, features.shape[2]):
        raise ValueError(f"expected w_query (A, Hd={query.shape[1]}), w_key (A, C={features.shape[2]}), v (A,); "
                         f"got {tuple(w_query.shape)}, {tuple(w_key.shape)}, {tuple(v.shape)}")
    hidden = torch.tanh((query @ w_query.T).unsqueeze(1) + features @ w_key.T)   # (B, 1, A) + (B, S, A) -> (B, S, A)
    attn_scores = hidden @ v                                                     # (B, S, A) @ (A,) -> (B, S)
    attn_weights = torch.softmax(attn_scores, dim=0)
    context = (attn_weights.unsqueeze(1) @ features).squeeze(1)              # (B, 1, S) @ (B, S, C) -> (B, C)
    return context, attn_weights


attention_map_v2.__doc__ = vision.attention_map.__doc__
soft_attention_v2.__doc__ = captioning.soft_attention.__doc__
