"""Checks for the learner's code: used by the lessons, the public tests and the hidden tests.

Each check calls the learner's function on inputs drawn from a seeded generator, compares the result
with the package's reference, and on failure raises ``CheckFailure`` whose message says what was
expected, what came, and where to look. ``CheckFailure.kind`` names the property that failed:

    type, shape, dtype     the returned object is not a tensor (tuple, ...) of the expected shape or dtype
    finite                 NaN or inf where the reference is finite
    normalisation          attention weights that do not sum to 1 over the key axis
    scale                  right up to a constant factor: a scale or a temperature is off
    mask                   weight on a key the mask forbids, or a query with no allowed key not all zeros
    causality              an output changed when only inputs it must not see changed (the future, or
                           another sequence of the batch)
    values                 any other difference from the reference
    error                  the function raised (or is not implemented yet)
    gradient               autograd gives no gradient, or the wrong one, where one is expected
    reference              grading only: the function called what its exercise asks you to write
                           (see ``attn_course.checks.tripwire``)
    pairing                the right rotation applied to the wrong pairs of features: (2i, 2i+1) where
                           (i, i + D/2) was asked, or the reverse (RoPE's two conventions)

``thorough=False`` runs one small case (what a learner sees); ``thorough=True`` adds batch dims,
L != S, float64 and large scores (what grading adds). One module per concept, named after the
reference it checks (``checks.attention`` checks ``attn_course.attention``, ``checks.translation``
checks ``attn_course.apps.translation``); every check is importable from here. Each check declares
with ``@forbids`` what its exercise asks the learner to write (``check.forbidden``).
"""
from .attention import (
    check_additive_scores,
    check_attention,
    check_attention_weights,
    check_embedding_lookup,
    check_pad_batch,
    check_scaled_dot_product_attention,
    check_scaled_dot_scores,
    check_softmax_with_temperature,
    check_token_embedding,
)
from .captioning import check_greedy_decode, check_soft_attention
from .classification import check_attention_pooling, check_padding_probe
from .core import (
    KINDS,
    CheckFailure,
    call_learner,
    call_learner_grad,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    format_shape,
    random_tensor,
)
from .encoder_decoder import check_beam_search_step, check_decoder_block, check_shift_right
from .flash import check_online_softmax_update
from .generation import check_lm_forward, check_sample_next
from .gqa import check_repeat_kv
from .hard import check_gumbel_softmax_st, check_hard_attention, check_hard_attention_argmax
from .heads import check_merge_heads, check_multi_head_attention, check_split_heads
from .kv_cache import check_cached_attention
from .multi_head_module import check_multi_head_attention_module
from .rotary import check_apply_rotary
from .rotary_weights import check_interleaved_to_half_split
from .self_cross import check_cross_attention, check_self_attention
from .speech import check_query_attention_pool, check_stack_frames, check_subsample_padding_mask
from .summarization import check_rouge_1_f1, check_word_attention
from .transformer import check_causal_mask, check_masked_softmax, check_positional_encoding, check_transformer_block
from .translation import check_additive_attention, check_alignment_crosses, check_seq2seq_forward
from .vision import check_attention_map, check_attention_on_ink, check_spatial_attention_pool

__all__ = [
    "KINDS", "CheckFailure", "call_learner", "call_learner_grad", "expect_rows_sum_to_one", "expect_tensor", "forbids", "format_shape",
    "random_tensor",
    # lessons 01-08
    "check_pad_batch", "check_embedding_lookup", "check_token_embedding", "check_scaled_dot_product_attention",
    "check_scaled_dot_scores", "check_additive_scores", "check_softmax_with_temperature", "check_attention",
    "check_attention_weights", "check_hard_attention_argmax", "check_hard_attention", "check_gumbel_softmax_st",
    "check_self_attention", "check_cross_attention", "check_split_heads", "check_merge_heads",
    "check_multi_head_attention", "check_causal_mask", "check_masked_softmax", "check_transformer_block",
    "check_positional_encoding", "check_multi_head_attention_module",
    # lessons 09-15
    "check_additive_attention", "check_seq2seq_forward", "check_alignment_crosses", "check_attention_pooling",
    "check_padding_probe", "check_spatial_attention_pool", "check_attention_on_ink",
    "check_attention_map", "check_soft_attention", "check_greedy_decode", "check_query_attention_pool", "check_subsample_padding_mask", "check_stack_frames",
    "check_rouge_1_f1", "check_word_attention", "check_sample_next", "check_lm_forward",
    # lesson 16
    "check_online_softmax_update", "check_cached_attention", "check_repeat_kv",
    # lesson 17
    "check_apply_rotary",
    "check_interleaved_to_half_split",
    # lesson 18
    "check_decoder_block", "check_shift_right", "check_beam_search_step",
]
