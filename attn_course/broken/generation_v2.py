"""A character-level language model whose forward pass looks right and is not (lesson 15)."""
import torch

from ..apps.generation import CharTransformer


class CharTransformer_v2(CharTransformer):
    __doc__ = CharTransformer.__doc__

    def forward(self, ids, need_weights=False):
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have shape (B, L) with L <= max_len={self.max_len}; got {tuple(ids.shape)}")
        L = ids.shape[1]
        attn_mask = torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(diagonal=2)  # (L, L), True = the future: ignore
        x = self.positional(self.embedding(ids))                      # (B, L) -> (B, L, E)
        all_weights = []
        for block in self.blocks:
            x, attn_weights = block(x, attn_mask=attn_mask, need_weights=True)   # (B, L, E), (B, H, L, L)
            all_weights.append(attn_weights)
        logits = self.lm_head(self.norm(x))                           # (B, L, E) -> (B, L, V)
        return (logits, all_weights) if need_weights else logits
