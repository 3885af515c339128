"""Implementations that look right, run, and are wrong: material for the bug hunts.

Each function keeps the signature and the docstring of the reference it copies, word for word, and
differs from it by a small change that a real tutorial or a real code base has shipped. The names
do not say what is wrong: finding that out is the exercise. The answers live with the solutions.
"""
from .block_v2 import (
    SinusoidalPositionalEncoding_v2,
    TransformerBlock_v2,
    causal_mask_v2,
    masked_softmax_v2,
    masked_softmax_v3,
    masked_softmax_v4,
)
from .classification_v2 import attention_pooling_v2
from .encoder_decoder_v2 import DecoderBlock_v2, shift_right_v2
from .flash_v2 import online_softmax_update_v2
from .generation_v2 import CharTransformer_v2
from .gqa_v2 import repeat_kv_v2
from .hard_v2 import hard_attention_v2
from .heads_v2 import (
    MultiHeadAttention_v2,
    MultiHeadAttention_v3,
    merge_heads_v2,
    multi_head_attention_v2,
    split_heads_v2,
)
from .kv_cache_v2 import cached_attention_v2
from .rotary_v2 import apply_rotary_v2
from .self_v2 import cross_attention_v2
from .speech_v2 import query_attention_pool_v2, subsample_padding_mask_v2
from .summarization_v2 import word_attention_v2
from .translation_v2 import Seq2Seq_v2
from .v2 import (
    additive_scores_v2,
    attention_weights_v2,
    attention_weights_v3,
    pad_batch_v2,
    scaled_dot_product_attention_v2,
    scaled_dot_scores_v2,
    softmax_with_temperature_v2,
    token_embedding_v2,
)
from .vision_v2 import attention_map_v2, soft_attention_v2

__all__ = [
    "cross_attention_v2",
    "attention_weights_v2",
    "pad_batch_v2",
    "scaled_dot_scores_v2",
    "additive_scores_v2",
    "attention_weights_v3",
    "scaled_dot_product_attention_v2",
    "softmax_with_temperature_v2",
    "token_embedding_v2",
    "causal_mask_v2",
    "merge_heads_v2",
    "multi_head_attention_v2",
    "split_heads_v2",
    "MultiHeadAttention_v2",
    "MultiHeadAttention_v3",
    "hard_attention_v2",
    "SinusoidalPositionalEncoding_v2",
    "TransformerBlock_v2",
    "masked_softmax_v2",
    "masked_softmax_v3",
    "masked_softmax_v4",
    "query_attention_pool_v2",
    "subsample_padding_mask_v2",
    "CharTransformer_v2",
    "attention_pooling_v2",
    "Seq2Seq_v2",
    "word_attention_v2",
    "attention_map_v2",
    "soft_attention_v2",
    "online_softmax_update_v2",
    "cached_attention_v2",
    "repeat_kv_v2",
    "apply_rotary_v2",
    "DecoderBlock_v2",
    "shift_right_v2",
]
