"""Broken copies of lesson 10's text-classification code (attn_course.apps.classification)."""
import torch

from ..apps import classification


def attention_pooling_v2(attn_scores, value, key_padding_mask=None):
    if attn_scores.dim() != 2 or value.dim() != 3 or value.shape[:2] != attn_scores.shape:
        raise ValueError(f"attn_scores must be (B, S) and value (B, S, Dv); got {tuple(attn_scores.shape)} "
                         f"and {tuple(value.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != attn_scores.shape:
            raise ValueError(f"key_padding_mask must be a bool tensor (B, S) = {tuple(attn_scores.shape)}; got "
                             f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        attn_scores.masked_fill(key_padding_mask, float("-inf"))                  # padding: exp(-inf) = 0
    attn_weights = torch.softmax(attn_scores, dim=-1)                             # (B, S), rows sum to 1
    attn_weights = torch.nan_to_num(attn_weights, nan=0.0)                        # all-padding rows -> 0
    context = (attn_weights.unsqueeze(1) @ value).squeeze(1)                      # (B, 1, S) @ (B, S, Dv) -> (B, Dv)
    return context, attn_weights


attention_pooling_v2.__doc__ = classification.attention_pooling.__doc__
