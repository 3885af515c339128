"""Broken copies of lesson 18's decoder block and shifted target (attn_course.encoder_decoder)."""
import torch

from .. import encoder_decoder
from ..encoder_decoder import DecoderBlock


class DecoderBlock_v2(DecoderBlock):

    def cross_attention(self, x, memory, memory_mask=None, memory_key_padding_mask=None):
        attn_output, attn_weights = self.multihead_attn(x, memory, memory, attn_mask=memory_mask,
                                                        key_padding_mask=memory_key_padding_mask, is_causal=True)
        return self.dropout(attn_output), attn_weights

    def forward(self, x, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, need_weights=False):
        if self.norm_first:
            attn_output, self_weights = self.self_attn(self.norm1(x), attn_mask=tgt_mask,
                                                       key_padding_mask=tgt_key_padding_mask, is_causal=tgt_is_causal)
            x = x + self.dropout(attn_output)
            attn_output, cross_weights = self.multihead_attn(self.norm2(x), memory, memory, attn_mask=memory_mask,
                                                             key_padding_mask=memory_key_padding_mask, is_causal=True)
            x = x + self.dropout(attn_output)
            x = x + self.dropout(self.feed_forward(self.norm3(x)))
        else:
            attn_output, self_weights = self.self_attn(x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask,
                                                       is_causal=tgt_is_causal)
            x = self.norm1(x + self.dropout(attn_output))
            attn_output, cross_weights = self.multihead_attn(x, memory, memory, attn_mask=memory_mask,
                                                             key_padding_mask=memory_key_padding_mask, is_causal=True)
            x = self.norm2(x + self.dropout(attn_output))
            x = self.norm3(x + self.dropout(self.feed_forward(x)))
        return (x, self_weights, cross_weights) if need_weights else x


def shift_right_v2(tgt_out, bos_id):
    if not isinstance(tgt_out, torch.Tensor) or tgt_out.dim() != 2 or tgt_out.is_floating_point():
        raise ValueError(f"tgt_out must be a (B, L) integer tensor; got "
                         f"{tuple(tgt_out.shape) if isinstance(tgt_out, torch.Tensor) else type(tgt_out).__name__}")
    bos = torch.full_like(tgt_out[:, :1], bos_id)                              # (B, 1)
    return torch.cat([bos, tgt_out[:, 1:]], dim=1)                             # (B, L)


DecoderBlock_v2.__doc__ = DecoderBlock.__doc__
DecoderBlock_v2.cross_attention.__doc__ = DecoderBlock.cross_attention.__doc__
shift_right_v2.__doc__ = encoder_decoder.shift_right.__doc__
