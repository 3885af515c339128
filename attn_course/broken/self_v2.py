"""Second versions of the self- and cross-attention references (see the package docstring)."""
from .. import self_cross
from ..attention import attention_weights, key_padding_to_attn_mask
from ..self_cross import validate_inputs


def cross_attention_v2(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    validate_inputs(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask)
    query = decoder_states @ w_query                                         # (B, L, E) @ (E, D) -> (B, L, D)
    key = decoder_states @ w_key                                             # (B, S, E) @ (E, D) -> (B, S, D)
    value = decoder_states @ w_value                                         # (B, S, E) @ (E, Dv) -> (B, S, Dv)
    attn_mask = None if key_padding_mask is None else key_padding_to_attn_mask(key_padding_mask)
    attn_weights = attention_weights(query, key, attn_mask)                  # (B, L, S), rows sum to 1
    context = attn_weights @ value                                           # (B, L, S) @ (B, S, Dv) -> (B, L, Dv)
    return context, attn_weights


cross_attention_v2.__doc__ = self_cross.cross_attention.__doc__
