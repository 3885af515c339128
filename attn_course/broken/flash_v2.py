"""A second version of one key block of FlashAttention's inner loop (lesson 16)."""
# ruff: noqa: E741 -- `l` is the running sum, the papers' ell (Milakov & Gimelshein 2018; Dao et al. 2022)
import torch

from .. import flash


def online_softmax_update_v2(m, l, acc, attn_scores, value):
    m_new = torch.maximum(m, attn_scores.amax(dim=-1, keepdim=True))   # (..., L, 1)
    m_safe = m_new.masked_fill(torch.isneginf(m_new), 0.0)            # no key so far: subtract 0, not -inf
    rescale = torch.exp(m - m_safe)                                     # (..., L, 1), exp(old max - new max)
    p = torch.exp(attn_scores - m_safe)                                 # (..., L, Sb) unnormalised weights
    l_new = rescale * l + p.sum(dim=-1, keepdim=True)                   # (..., L, 1)
    acc_new = acc + p @ value                                           # (..., L, Sb) @ (..., Sb, Dv) -> (..., L, Dv)
    return m_new, l_new, acc_new


online_softmax_update_v2.__doc__ = flash.online_softmax_update.__doc__
