"""attn-course: reference implementations, checks, plots and widgets for a course on attention.

Shape legend: B batch, L query length, S key/value length, H heads, D head_dim, E d_model (= H*D),
V vocabulary.
"""
from .attention import (
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    entropy,
    key_padding_to_attn_mask,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
    softmax_with_temperature,
    weighted_sum,
)
from .device import get_device, randn, seed_everything
from .pooling import AdditiveAttention, LocationAttention, attention_pool, mean_pool
from .scoring import AttentionScore, additive_scores, concat_scores, dot_scores, general_scores, scaled_dot_scores

__version__ = "0.1.0"
__all__ = [
    "AdditiveAttention", "AttentionScore", "LocationAttention", "MultiHeadAttention", "additive_scores",
    "attention_pool",
    "attention_weights", "causal_mask", "concat_scores", "dot_scores", "entropy", "general_scores", "get_device",
    "key_padding_to_attn_mask", "masked_softmax", "mean_pool", "padding_mask", "randn", "scaled_dot_product_attention",
    "scaled_dot_scores", "seed_everything", "softmax_with_temperature", "weighted_sum",
]

from .self_cross import CrossAttention, SelfAttention, cross_attention, self_attention  # noqa: E402

__all__ += ["CrossAttention", "SelfAttention", "cross_attention", "self_attention"]

from .gqa import GroupedQueryAttention, repeat_kv  # noqa: E402

__all__ += ["GroupedQueryAttention", "repeat_kv"]
