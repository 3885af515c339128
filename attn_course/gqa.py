"""Grouped-query and multi-query attention: H query heads share fewer key/value heads.

Shape legend: B batch, L query length, S key/value length, H query heads (``num_heads``), Hkv key/value
heads (``num_kv_heads``), r = H / Hkv query heads per key/value head, D head_dim, E d_model (= H*D).

The H query heads fall into Hkv groups of r consecutive heads; group g reads key/value head g::

    query heads  0 .. r-1 | r .. 2r-1 | ... | H-r .. H-1
    k/v head         0    |     1     | ... |   Hkv-1

    k (B, Hkv, S, D) --repeat_kv(k, r)--> (B, H, S, D), then multi-head attention as usual.

Hkv = H is multi-head attention (Vaswani et al. 2017); Hkv = 1 is multi-query attention (Shazeer
2019); in between is grouped-query attention (Ainslie et al. 2023). Key/value projections and the
key/value cache of a decoder shrink by the factor r = H / Hkv; the query heads stay H.

**Mask polarity**, as in ``attn_course.attention.MultiHeadAttention`` and ``torch.nn.MultiheadAttention``:
a bool ``attn_mask`` and ``key_padding_mask`` both mean **True = ignore** (a float mask is added to the scores).
"""
import torch
from torch import nn
from torch.nn import functional as F

from .attention import MultiHeadAttention, attention_weights, merge_masks, validate_projection_inputs


def repeat_kv(x, n_rep):
    """Repeat each key/value head ``n_rep`` times: ``(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D)``.

    ``out[:, h] == x[:, h // r]`` with ``r = n_rep``: key/value head g serves the r consecutive
    query heads ``g*r .. g*r + r - 1``. Done as ``x.repeat_interleave(r, dim=-3)``, what PyTorch's
    ``scaled_dot_product_attention(..., enable_gqa=True)`` does to its key and value; ``x`` itself
    when r = 1.

    Args:
        x: (B, Hkv, S, D) tensor, the keys or the values of Hkv heads.
        n_rep: r = H / Hkv, how many query heads share one key/value head; a positive int.

    Returns:
        (B, Hkv * r, S, D) tensor (a copy, unless r = 1).

    Raises:
        ValueError: ``x`` is not 4-D, or ``n_rep`` is not a positive int.

    References: Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
    Multi-Head Checkpoints", section 2.2; Shazeer 2019, "Fast Transformer Decoding: One Write-Head is
    All You Need" (Hkv = 1). With it, attention equals ``torch.nn.functional.scaled_dot_product_attention``
    with ``enable_gqa=True`` (tests/test_gqa.py).

    >>> repeat_kv(torch.tensor([10., 20.]).view(1, 2, 1, 1), n_rep=2).flatten()
    tensor([10., 10., 20., 20.])
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor (B, Hkv, S, D); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(n_rep, int) or isinstance(n_rep, bool) or n_rep <= 0:
        raise ValueError(f"n_rep must be a positive int (query heads per key/value head); got {n_rep!r}")
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=-3)  # (B, Hkv, S, D) -> (B, Hkv*r, S, D)


class GroupedQueryAttention(nn.Module):
    """Grouped-query attention: H query heads, Hkv key/value heads, each shared by r = H / Hkv query heads.

    ``head_h = Attention(Q W_Q^h, K W_K^g, V W_V^g)`` with ``g = h // r``; the heads are concatenated
    and projected by ``W_O`` as in multi-head attention. ``num_kv_heads = num_heads`` is multi-head
    attention, ``num_kv_heads = 1`` multi-query attention.

    Args:
        d_model: E, the model width (``embed_dim`` in PyTorch).
        num_heads: H query heads; ``head_dim = d_model // num_heads``.
        num_kv_heads: Hkv key/value heads, dividing ``num_heads``.
        dropout: dropout probability on the attention weights (training mode only).
        bias: whether the four projections have a bias.

    Projections: ``q_proj`` E -> E, ``k_proj`` and ``v_proj`` E -> Hkv * D, ``out_proj`` E -> E.

    Forward args:
        query: (B, L, E); key: (B, S, E), default ``query``; value: (B, S, E), default ``key``.
        attn_mask: bool (L, S) or (B, H, L, S)-broadcastable, **True = ignore (may not attend)**, or
            float, added to the scores: as in ``nn.MultiheadAttention``.
        key_padding_mask: bool (B, S), **True = padding (ignore)**, as in ``nn.MultiheadAttention``.
        is_causal: apply a causal mask; not together with ``attn_mask``.
        need_weights: also return the per-head attention weights.

    Returns:
        (attn_output (B, L, E), attn_weights (B, H, L, S) or None).

    Raises:
        ValueError: ``d_model`` not divisible by ``num_heads``, ``num_heads`` not divisible by
            ``num_kv_heads``; inputs not (B, *, E); batch sizes or key/value lengths that differ; a
            ``key_padding_mask`` that is not (B, S); ``attn_mask`` together with ``is_causal``.

    References: Ainslie et al. 2023, section 2.2; Shazeer 2019 (multi-query). Numerically equal to
    ``torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)`` on its own
    projections, and to ``MultiHeadAttention`` with the same weights when Hkv = H (tests/test_gqa.py).

    >>> gqa = GroupedQueryAttention(d_model=8, num_heads=4, num_kv_heads=2)
    >>> [t.shape for t in gqa(torch.randn(1, 3, 8))], gqa.k_proj.weight.shape
    ([torch.Size([1, 3, 8]), torch.Size([1, 4, 3, 3])], torch.Size([4, 8]))
    """

    def __init__(self, d_model, num_heads, num_kv_heads, dropout=0.0, bias=True):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(f"d_model must be divisible by num_heads; got d_model={d_model}, num_heads={num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads must be divisible by num_kv_heads (each key/value head serves "
                             f"num_heads // num_kv_heads query heads); got num_heads={num_heads}, "
                             f"num_kv_heads={num_kv_heads}")
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query, key=None, value=None, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=True):
        key = query if key is None else key
        value = key if value is None else value
        validate_projection_inputs(query, key, value, key_padding_mask, self.d_model)
        B, L, E = query.shape
        S, H, Hkv, D = key.shape[1], self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(query).view(B, L, H, D).transpose(1, 2)    # (B, L, E) -> (B, H, L, D)
        k = self.k_proj(key).view(B, S, Hkv, D).transpose(1, 2)    # (B, S, E) -> (B, Hkv, S, D)
        v = self.v_proj(value).view(B, S, Hkv, D).transpose(1, 2)  # (B, S, E) -> (B, Hkv, S, D)
        k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)      # (B, Hkv, S, D) -> (B, H, S, D)
        attn_mask = merge_masks(attn_mask, key_padding_mask, is_causal, L, S, device=query.device)
        attn_weights = attention_weights(q, k, attn_mask)                    # (B, H, L, S)
        dropped = F.dropout(attn_weights, p=self.dropout, training=self.training)
        context = (dropped @ v).transpose(1, 2).reshape(B, L, E)             # (B, H, L, D) -> (B, L, E)
        return self.out_proj(context), (attn_weights if need_weights else None)

    @classmethod
    def from_multi_head(cls, mha, num_kv_heads):
        """A ``GroupedQueryAttention`` from a ``MultiHeadAttention``: the paper's conversion ("uptraining").

        Query and output projections are copied; the key and value heads of each group of
        r = H / Hkv consecutive heads are mean-pooled into one head (Ainslie et al. 2023, section 2.1),
        ``W_K^g = mean(W_K^{g*r}, ..., W_K^{g*r + r - 1})``, biases alike. With ``num_kv_heads = H``
        the result equals ``mha`` exactly; with fewer heads it is the starting point of uptraining.

        Raises:
            ValueError: ``mha`` is not a ``MultiHeadAttention``, or its H is not divisible by ``num_kv_heads``.
        """
        if not isinstance(mha, MultiHeadAttention):
            raise ValueError(f"from_multi_head needs an attn_course MultiHeadAttention; got {type(mha).__name__}")
        E, H, D = mha.d_model, mha.num_heads, mha.head_dim
        has_bias = mha.q_proj.bias is not None
        ours = cls(E, H, num_kv_heads, dropout=mha.dropout, bias=has_bias)   # raises unless Hkv divides H
        ours = ours.to(device=mha.q_proj.weight.device, dtype=mha.q_proj.weight.dtype)
        Hkv, r = num_kv_heads, H // num_kv_heads
        with torch.no_grad():
            ours.q_proj.load_state_dict(mha.q_proj.state_dict())
            ours.out_proj.load_state_dict(mha.out_proj.state_dict())
            for theirs, mine in ((mha.k_proj, ours.k_proj), (mha.v_proj, ours.v_proj)):
                mine.weight.copy_(theirs.weight.view(Hkv, r, D, E).mean(1).reshape(Hkv * D, E))  # (H*D, E) -> (Hkv*D, E)
                if has_bias:
                    mine.bias.copy_(theirs.bias.view(Hkv, r, D).mean(1).reshape(Hkv * D))       # (H*D,) -> (Hkv*D,)
        return ours
