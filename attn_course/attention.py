"""Attention from scores to context: softmax, masks, weighted sums, SDPA and multi-head attention.

Shape legend: B batch, L query length, S key/value length, H heads, D head_dim (the paper's d_k),
E d_model (= H*D; PyTorch calls it ``embed_dim``, Hugging Face ``hidden_size``), V vocabulary.

    attn_scores (..., L, S) --softmax over S--> attn_weights (..., L, S) --@ value--> context (..., L, Dv)

**Mask polarity, as in PyTorch.** The functions (``masked_softmax``, ``attention_weights``,
``scaled_dot_product_attention``) take ``attn_mask`` as ``torch.nn.functional.scaled_dot_product_attention``
does: a bool ``True`` means *may attend*. The module ``MultiHeadAttention`` takes ``attn_mask`` and
``key_padding_mask`` as ``torch.nn.MultiheadAttention`` does: a bool ``True`` means *ignore* in both.
A float mask is added to the scores everywhere. The conversions are ``key_padding_to_attn_mask``
(padding -> may attend) and ``merge_masks`` (a module's masks -> one SDPA ``attn_mask``).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .scoring import validate_query_key


def softmax_with_temperature(attn_scores, temperature=1.0, dim=-1):
    """Softmax of ``attn_scores / temperature`` over ``dim`` (the key axis by default).

    T < 1 sharpens the distribution towards the largest score (T -> 0: one-hot argmax); T > 1
    flattens it (T -> inf: uniform).

    Args:
        attn_scores: float tensor (..., L, S).
        temperature: positive float.
        dim: the axis that sums to 1; -1 is the key axis.

    Returns:
        attn_weights: same shape, non-negative, summing to 1 over ``dim``.

    Raises:
        ValueError: ``temperature`` is not > 0.

    References: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", eq. 1.

    >>> softmax_with_temperature(torch.tensor([0.0, 0.0]), temperature=2.0)
    tensor([0.5000, 0.5000])
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    return torch.softmax(attn_scores / temperature, dim=dim)


def entropy(attn_weights, dim=-1):
    """Shannon entropy, in nats, of each distribution along ``dim``: ``-sum(p * log p)``.

    0 for a one-hot row, ``log(S)`` for a uniform row over S keys. Zero weights contribute 0.

    >>> entropy(torch.tensor([0.5, 0.5]))
    tensor(0.6931)
    """
    logs = torch.where(attn_weights > 0, attn_weights.log(), torch.zeros_like(attn_weights))
    return -(attn_weights * logs).sum(dim)


def causal_mask(L, S=None, device=None):
    """Causal ``attn_mask`` (L, S) of bools, **True = may attend**: query i sees keys 0..i.

    Aligned to the top-left like ``is_causal=True`` in PyTorch's SDPA: ``torch.ones(L, S).tril()``.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()


def padding_mask(lengths, max_len=None):
    """``key_padding_mask`` (B, S) from sequence lengths, **True = padding (ignore)**.

    Args:
        lengths: (B,) int tensor or list of ints, each in [0, max_len].
        max_len: S; default ``max(lengths)``.

    Raises:
        ValueError: a length is negative or greater than ``max_len``.

    >>> padding_mask([2, 3]).int()
    tensor([[0, 0, 1],
            [0, 0, 0]], dtype=torch.int32)
    """
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    if (lengths < 0).any() or (lengths > max_len).any():
        raise ValueError(f"lengths must lie in [0, {max_len}]; got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device) >= lengths[:, None]  # (B, S)


def key_padding_to_attn_mask(key_padding_mask):
    """Convert ``key_padding_mask`` (B, S), True = padding, to ``attn_mask`` (B, 1, S), True = may attend.

    The result broadcasts against scores (B, L, S); add a head axis with ``.unsqueeze(1)`` for
    (B, H, L, S).

    >>> key_padding_to_attn_mask(torch.tensor([[False, True]]))
    tensor([[[ True, False]]])
    """
    if key_padding_mask.dtype != torch.bool or key_padding_mask.dim() != 2:
        raise ValueError(f"key_padding_mask must be a bool tensor (B, S), True = padding; got "
                         f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
    return ~key_padding_mask[:, None, :]  # (B, S) -> (B, 1, S)


def masked_softmax(attn_scores, attn_mask=None, dim=-1):
    """Softmax over the key axis that gives exactly zero weight where ``attn_mask`` forbids.

    Args:
        attn_scores: float tensor (..., L, S).
        attn_mask: None; a bool tensor broadcastable to (..., L, S), **True = may attend**; or a
            float tensor added to the scores (``-inf`` forbids).

    Returns:
        attn_weights (..., L, S): each row sums to 1 over the allowed keys; a row with no allowed
        key is all zeros (not NaN), as in PyTorch's SDPA.

    Masked scores are filled with ``-inf`` rather than ``-1e9``, which overflows in float16.

    >>> masked_softmax(torch.zeros(1, 3), torch.tensor([[True, True, False]]))
    tensor([[0.5000, 0.5000, 0.0000]])
    """
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_scores = attn_scores.masked_fill(~attn_mask, float("-inf"))
        else:
            attn_scores = attn_scores + attn_mask
    attn_weights = torch.softmax(attn_scores, dim=dim)
    fully_masked = torch.isneginf(attn_scores).all(dim=dim, keepdim=True)  # rows with no key to see
    return attn_weights.masked_fill(fully_masked, 0.0)


def weighted_sum(attn_weights, value):
    """Context vectors: each query's weighted average of the values, ``attn_weights @ value``.

    Args:
        attn_weights: (..., L, S), rows summing to 1 over S.
        value: (..., S, Dv).

    Returns:
        context: (..., L, Dv).

    Raises:
        ValueError: S differs between ``attn_weights`` and ``value``.

    >>> weighted_sum(torch.tensor([[0.25, 0.75]]), torch.tensor([[0.0], [4.0]]))
    tensor([[3.]])
    """
    if attn_weights.shape[-1] != value.shape[-2]:
        raise ValueError(f"attn_weights (..., L, S) and value (..., S, Dv) must share S; got "
                         f"attn_weights {tuple(attn_weights.shape)} and value {tuple(value.shape)}")
    return attn_weights @ value  # (..., L, S) @ (..., S, Dv) -> (..., L, Dv)


def _broadcast(*shapes):
    """``torch.broadcast_shapes(*shapes)``, or None where the shapes do not broadcast."""
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return None


def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    """The attention weights inside SDPA: ``softmax(query key^T * scale + mask)`` over the key axis.

    Arguments and shape rule as in ``scaled_dot_product_attention``; returns ``attn_weights (..., L, S)``,
    ``...`` the broadcast batch dims of ``query`` and ``key``.
    """
    validate_query_key(query, key, same_dim=True, broadcast=True)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., L, D) @ (..., D, S) -> (..., L, S)
    if attn_mask is not None and _broadcast(attn_mask.shape, attn_scores.shape) != attn_scores.shape:
        raise ValueError(f"attn_mask must broadcast to the attention weights (..., L, S) = "
                         f"{tuple(attn_scores.shape)}; got {tuple(attn_mask.shape)}")
    return masked_softmax(attn_scores, attn_mask)


def validate_query_key_value(query, key, value, enable_gqa=False):
    """Raise ValueError, naming the three shapes, unless query (..., L, D), key (..., S, D) and value
    (..., S, Dv) follow the shape rule of ``scaled_dot_product_attention`` (with ``enable_gqa``, its head rule)."""
    qkv, rank = (query, key, value), 3 if enable_gqa else 2
    got = "query {}, key {}, value {}".format(*(tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                                                for t in qkv))
    if not all(isinstance(t, torch.Tensor) and t.dim() >= rank for t in qkv):
        problem = (f"query (..., L, D), key (..., S, D) and value (..., S, Dv) must be tensors of at least {rank} "
                   f"dims" + (" (with enable_gqa=True, dim -3 is the head axis)" if enable_gqa else ""))
    elif query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        problem = "query and key must share D (dim -1); key and value must share S (dim -2)"
    elif enable_gqa and any(t.shape[-3] == 0 or query.shape[-3] % t.shape[-3] for t in qkv[1:]):
        problem = "enable_gqa=True needs the query heads Hq (dim -3) to be a multiple of the key and the value heads"
    elif _broadcast(*[t.shape[:-3] + query.shape[-3:-2] if enable_gqa else t.shape[:-2] for t in qkv]) is None:
        problem = ("the batch dims of query, key and value (all but the last two" + ("; the key/value heads count as "
                   "Hq" if enable_gqa else "") + ") must broadcast: aligned from the right, each size equal or 1")
    else:
        return
    raise ValueError(f"{problem}; got {got}")


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """Scaled dot-product attention: ``softmax(Q K^T / sqrt(d_k) + mask) V``.

    **Shape rule** (PyTorch's): all dims of ``query``, ``key``, ``value`` but the last two are batch dims
    that broadcast together (aligned from the right, each size equal or 1 or missing), e.g. query
    (H, L, D) or (B, 1, L, D) with key (B, H, S, D) and value (S, Dv). ``enable_gqa=True`` makes dim -3
    the head axis: key/value head g serves query heads ``g*r .. g*r+r-1``, ``r = Hq / Hkv``
    (``repeat_interleave`` on dim -3, as ``attn_course.gqa.repeat_kv``), before the dims broadcast.

    Args:
        query: (..., L, D) float tensor; with ``enable_gqa``, (..., Hq, L, D).
        key: (..., S, D) float tensor; with ``enable_gqa``, (..., Hkv, S, D), Hkv dividing Hq.
        value: (..., S, Dv) float tensor; with ``enable_gqa``, (..., Hv, S, Dv), Hv dividing Hq.
        attn_mask: None, a bool tensor broadcastable to (..., L, S) with **True = may attend**, or a
            float tensor added to the scores.
        dropout_p: probability of zeroing an attention weight (survivors scaled by 1 / (1 - p)).
        is_causal: apply ``causal_mask(L, S)``; not together with ``attn_mask``.
        scale: score multiplier; ``None`` means ``1 / sqrt(D)``.
        enable_gqa: grouped-query attention (Ainslie et al. 2023), see the shape rule.

    Returns:
        attn_output: (..., L, Dv), ``...`` the broadcast batch dims. A query with no allowed key gets zeros.

    Raises:
        ValueError: ranks < 2 (< 3 with ``enable_gqa``), batch dims that do not broadcast, D or S that
            differ, Hq not a multiple of Hkv, an ``attn_mask`` that does not broadcast to (..., L, S),
            ``attn_mask`` together with ``is_causal``, or ``dropout_p`` outside [0, 1).

    References: Vaswani et al. 2017, section 3.2.1, eq. 1. Numerically equal to
    ``torch.nn.functional.scaled_dot_product_attention``, broadcasting and ``enable_gqa`` included
    (tests/test_attention.py).

    >>> q = k = v = torch.ones(1, 2, 4)
    >>> scaled_dot_product_attention(q, k, v, is_causal=True).shape
    torch.Size([1, 2, 4])
    >>> scaled_dot_product_attention(torch.ones(8, 2, 4), k, v, enable_gqa=True).shape  # Hq=8, Hkv=1
    torch.Size([8, 2, 4])
    """
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1); got {dropout_p}")
    validate_query_key_value(query, key, value, enable_gqa)
    if enable_gqa:
        Hq = query.shape[-3]
        key = key.repeat_interleave(Hq // key.shape[-3], dim=-3)        # (..., Hkv, S, D) -> (..., Hq, S, D)
        value = value.repeat_interleave(Hq // value.shape[-3], dim=-3)  # (..., Hkv, S, Dv) -> (..., Hq, S, Dv)
    attn_weights = attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    if dropout_p > 0.0:  # inverted dropout (F.dropout's scaling at training time): E[attn_weights] is unchanged
        keep = torch.rand_like(attn_weights) >= dropout_p                    # (..., L, S), True w.p. 1 - p
        attn_weights = attn_weights * keep / (1.0 - dropout_p)
    return attn_weights @ value  # (..., L, S) @ (..., S, Dv) -> (..., L, Dv)


def validate_projection_inputs(query, key, value, key_padding_mask, d_model):
    """Raise ValueError unless query (B, L, E), key (B, S, E) and value (B, S, E) are tensors with
    E = ``d_model`` that agree on B and S, and ``key_padding_mask`` is None or (B, S): the inputs of
    ``MultiHeadAttention`` and ``attn_course.gqa.GroupedQueryAttention``."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != d_model:
            raise ValueError(f"{name} must have shape (B, length, d_model={d_model}); got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if not query.shape[0] == key.shape[0] == value.shape[0] or key.shape[1] != value.shape[1]:
        raise ValueError(f"query (B, L, E), key (B, S, E) and value (B, S, E) must agree on B and S; "
                         f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != tuple(key.shape[:2]):
        raise ValueError(f"key_padding_mask must have shape (B, S) = {tuple(key.shape[:2])}; "
                         f"got {tuple(key_padding_mask.shape)}")


def merge_masks(attn_mask, key_padding_mask, is_causal, L, S, device=None):
    """One SDPA ``attn_mask`` (True = may attend) for (B, H, L, S) scores from a module's three masks.

    The module's masks follow ``torch.nn.MultiheadAttention``: a bool ``True`` means *ignore*, in
    ``attn_mask`` and ``key_padding_mask`` alike. The result follows
    ``torch.nn.functional.scaled_dot_product_attention``: a bool ``True`` means *may attend*.

    Args:
        attn_mask: None, bool broadcastable to (B, H, L, S) with **True = ignore (may not attend)**,
            or float, added to the scores.
        key_padding_mask: None or bool (B, S), **True = padding (ignore)**.
        is_causal: mask the future, as ``causal_mask(L, S)``; not together with ``attn_mask``.

    Returns:
        None (nothing masked), or a mask broadcastable to (B, H, L, S): bool with **True = may attend**,
        or float (``-inf`` on padded keys) when ``attn_mask`` is float.

    Raises:
        ValueError: ``attn_mask`` together with ``is_causal``.

    >>> merge_masks(torch.tensor([[False, True], [False, False]]), None, False, 2, 2)
    tensor([[ True, False],
            [ True,  True]])
    """
    if is_causal:
        if attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        attn_mask = causal_mask(L, S, device=device)                           # (L, S), True = may attend
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask                                                 # True = ignore -> True = may attend
    if key_padding_mask is not None:
        keep = key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)         # (B, S) -> (B, 1, 1, S)
        if attn_mask is None:
            attn_mask = keep
        elif attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & keep
        else:
            attn_mask = attn_mask.masked_fill(~keep, float("-inf"))
    return attn_mask


def add_attn_bias(attn_mask, attn_bias):
    """An SDPA ``attn_mask`` with a float ``attn_bias`` added to the scores: the float mask SDPA accepts.

    Args:
        attn_mask: None, bool with **True = may attend**, or float; broadcastable with ``attn_bias``.
        attn_bias: None or a float tensor added to the scores, e.g. ALiBi's (H, L, S).

    Returns:
        ``attn_mask`` unchanged when ``attn_bias`` is None; else a float mask: ``attn_bias`` where the bool
        mask allows and ``-inf`` where it forbids, or the sum of two float masks.

    >>> add_attn_bias(torch.tensor([True, False]), torch.tensor([-1.0, -2.0]))
    tensor([-1., -inf])
    """
    if attn_bias is None:
        return attn_mask
    if attn_mask is None:
        return attn_bias
    if attn_mask.dtype == torch.bool:
        return torch.where(attn_mask, attn_bias, torch.tensor(float("-inf"), dtype=attn_bias.dtype,
                                                              device=attn_bias.device))
    return attn_mask + attn_bias


class MultiHeadAttention(nn.Module):
    """Multi-head attention: H scaled dot-product attentions on learned projections, concatenated.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_O``, ``head_h = Attention(Q W_Q^h, K W_K^h, V W_V^h)``.

    Args:
        d_model: E, the model width (``embed_dim`` in PyTorch).
        num_heads: H; ``head_dim = d_model // num_heads``.
        dropout: dropout probability on the attention weights (training mode only).
        bias: whether the four projections have a bias.
        positional: None, or a module that gives the heads their positions after the projections:
            ``positional(q (B, H, L, D), k (B, H, S, D)) -> (q, k, attn_bias)``, ``attn_bias`` None or a
            float (H, L, S) added to the scores (``attn_course.rotary.Rotary`` rotates q and k, RoPE;
            ``attn_course.rotary.ALiBi`` returns a bias). It holds no weights: ``from_torch`` and
            ``state_dict`` are unchanged.

    Forward args:
        query: (B, L, E); key: (B, S, E), default ``query``; value: (B, S, E), default ``key``.
        attn_mask: bool (L, S) or (B, H, L, S)-broadcastable, **True = ignore (may not attend)**, or
            float, added to the scores: as in ``nn.MultiheadAttention``, the opposite of SDPA's bool mask.
        key_padding_mask: bool (B, S), **True = padding (ignore)**, as in ``nn.MultiheadAttention``.
        is_causal: apply a causal mask; not together with ``attn_mask``.
        need_weights: also return the per-head attention weights.

    Returns:
        (attn_output (B, L, E), attn_weights (B, H, L, S) or None).

    Raises:
        ValueError: ``d_model`` not divisible by ``num_heads``; inputs not (B, *, E); batch sizes or
            key/value lengths that differ; a ``key_padding_mask`` that is not (B, S).

    References: Vaswani et al. 2017, section 3.2.2. With weights copied (``from_torch``), numerically
    equal to ``torch.nn.MultiheadAttention(batch_first=True)``; its averaged weights equal
    ``attn_weights.mean(1)`` (tests/test_attention.py).

    >>> mha = MultiHeadAttention(d_model=8, num_heads=2)
    >>> [t.shape for t in mha(torch.randn(1, 3, 8))]
    [torch.Size([1, 3, 8]), torch.Size([1, 2, 3, 3])]
    """

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True, positional=None):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(f"d_model must be divisible by num_heads; got d_model={d_model}, "
                             f"num_heads={num_heads}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.positional = positional
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query, key=None, value=None, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=True):
        key = query if key is None else key
        value = key if value is None else value
        validate_projection_inputs(query, key, value, key_padding_mask, self.d_model)
        B, L, E = query.shape
        S, H, D = key.shape[1], self.num_heads, self.head_dim
        q = self.q_proj(query).view(B, L, H, D).transpose(1, 2)  # (B, L, E) -> (B, H, L, D)
        k = self.k_proj(key).view(B, S, H, D).transpose(1, 2)    # (B, S, E) -> (B, H, S, D)
        v = self.v_proj(value).view(B, S, H, D).transpose(1, 2)  # (B, S, E) -> (B, H, S, D)
        attn_mask = merge_masks(attn_mask, key_padding_mask, is_causal, L, S, device=query.device)
        if self.positional is not None:
            q, k, attn_bias = self.positional(q, k)                          # rotated q, k; None or (H, L, S)
            attn_mask = add_attn_bias(attn_mask, attn_bias)
        attn_weights = attention_weights(q, k, attn_mask)                    # (B, H, L, S)
        dropped = F.dropout(attn_weights, p=self.dropout, training=self.training)
        context = (dropped @ v).transpose(1, 2).reshape(B, L, E)             # (B, H, L, D) -> (B, L, E)
        return self.out_proj(context), (attn_weights if need_weights else None)

    @classmethod
    def from_torch(cls, mha):
        """A ``MultiHeadAttention`` with the weights of a ``torch.nn.MultiheadAttention`` (same E)."""
        if not mha._qkv_same_embed_dim:
            raise ValueError(f"from_torch needs kdim == vdim == embed_dim; got kdim={mha.kdim}, "
                             f"vdim={mha.vdim}, embed_dim={mha.embed_dim}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("from_torch cannot copy add_bias_kv=True or add_zero_attn=True: they append "
                             "extra keys that this module does not have")
        has_bias = mha.in_proj_bias is not None
        ours = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=has_bias)
        ours = ours.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
                E = mha.embed_dim
                proj.weight.copy_(mha.in_proj_weight[i * E:(i + 1) * E])  # (3E, E) -> (E, E) each
                if has_bias:
                    proj.bias.copy_(mha.in_proj_bias[i * E:(i + 1) * E])
            ours.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                ours.out_proj.bias.copy_(mha.out_proj.bias)
        return ours
