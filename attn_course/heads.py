"""Heads: split a model-width tensor into H heads, merge them back, multi-head attention as a function.

Shape legend: B batch, L query length, S key/value length, H heads (``num_heads``), D head_dim,
E d_model (= H*D; PyTorch calls it ``embed_dim``, Hugging Face ``hidden_size``).

A head is a slice of the E features: head h owns features ``h*D .. (h+1)*D - 1`` of every token.
Splitting keeps each token's features together and only regroups them::

    x (B, L, E) --view--> (B, L, H, D) --transpose(1, 2)--> (B, H, L, D)

``merge_heads`` undoes it exactly. ``multi_head_attention`` is ``MultiHeadAttention.forward`` written
as one function of the four projections, the form the lessons ask learners to write.
"""
import math

import torch
from torch import nn

from .attention import key_padding_to_attn_mask, masked_softmax


def validate_split(x, num_heads):
    """Raise ValueError unless x is (B, L, E) with E divisible by num_heads."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a tensor (B, L, E); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(num_heads, int) or num_heads <= 0 or x.shape[-1] % num_heads:
        raise ValueError(f"E = {x.shape[-1]} must be divisible by num_heads; got num_heads={num_heads!r}")


def split_heads(x, num_heads):
    """Split the last axis into ``num_heads`` heads: ``(B, L, E) -> (B, H, L, D)``, ``D = E // H``.

    ``out[b, h, l, :] == x[b, l, h*D:(h+1)*D]``: head h sees its own D features of every token.
    Done as ``x.view(B, L, H, D).transpose(1, 2)``; the result is a view of ``x``, not a copy.

    Args:
        x: (B, L, E) float tensor, contiguous in its last axis (an ``nn.Linear`` output is).
        num_heads: H, a positive int dividing E.

    Returns:
        (B, H, L, D) tensor (not contiguous).

    Raises:
        ValueError: ``x`` is not 3-D, or E is not divisible by ``num_heads``.

    References: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.2.

    >>> split_heads(torch.arange(8.).view(1, 2, 4), num_heads=2)[0, 1]
    tensor([[2., 3.],
            [6., 7.]])
    """
    validate_split(x, num_heads)
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads).transpose(1, 2)  # (B, L, E) -> (B, H, L, D)


def merge_heads(x):
    """Concatenate the heads back: ``(B, H, L, D) -> (B, L, E)``, ``E = H * D``; undoes ``split_heads``.

    ``out[b, l, h*D:(h+1)*D] == x[b, h, l, :]``. Done as ``x.transpose(1, 2).reshape(B, L, E)``
    (``reshape``, because the transposed tensor is not contiguous and ``view`` would refuse it).

    Args:
        x: (B, H, L, D) tensor.

    Returns:
        (B, L, H*D) tensor.

    Raises:
        ValueError: ``x`` is not 4-D.

    References: Vaswani et al. 2017, section 3.2.2 ("concatenated").

    >>> x = torch.randn(2, 3, 4)
    >>> torch.equal(merge_heads(split_heads(x, 2)), x)
    True
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor (B, H, L, D); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)  # (B, H, L, D) -> (B, L, H, D) -> (B, L, E)


def multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
                         key_padding_mask=None):
    """Multi-head attention of ``query`` over ``key``/``value`` with four given projections.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_O`` with
    ``head_h = softmax(Q W_Q^h (K W_K^h)^T / sqrt(D)) V W_V^h``; the per-head ``W^h`` are the column
    blocks of ``q_proj``, ``k_proj``, ``v_proj``, so one (E, E) matmul projects all heads at once.

    Args:
        query: (B, L, E) float tensor.
        key: (B, S, E) float tensor.
        value: (B, S, E) float tensor.
        q_proj, k_proj, v_proj, out_proj: callables (E,) -> (E,) on the last axis, usually
            ``nn.Linear(E, E)``.
        num_heads: H, a positive int dividing E; ``head_dim = D = E // H``.
        key_padding_mask: None or bool (B, S), **True = padding (ignore)**, as in
            ``nn.MultiheadAttention``; padded keys get weight exactly 0.

    Returns:
        (attn_output (B, L, E), attn_weights (B, H, L, S)); every row of attn_weights sums to 1 over S.

    Raises:
        ValueError: inputs not 3-D, E not divisible by ``num_heads``, a ``key_padding_mask`` that is
            not bool (B, S).

    References: Vaswani et al. 2017, section 3.2.2. Numerically equal to
    ``attn_course.MultiHeadAttention`` and ``torch.nn.MultiheadAttention`` with the same weights
    (tests/test_heads.py).

    >>> proj = torch.nn.Linear(8, 8)
    >>> x = torch.randn(1, 3, 8)
    >>> [t.shape for t in multi_head_attention(x, x, x, proj, proj, proj, proj, num_heads=2)]
    [torch.Size([1, 3, 8]), torch.Size([1, 2, 3, 3])]
    """
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != tuple(key.shape[:2]):
        raise ValueError(f"key_padding_mask must be bool (B, S) = {tuple(key.shape[:2])}, True = padding; "
                         f"got {tuple(key_padding_mask.shape)}")
    q = split_heads(q_proj(query), num_heads)                         # (B, L, E) -> (B, H, L, D)
    k = split_heads(k_proj(key), num_heads)                           # (B, S, E) -> (B, H, S, D)
    v = split_heads(v_proj(value), num_heads)                         # (B, S, E) -> (B, H, S, D)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])    # (B, H, L, D) @ (B, H, D, S) -> (B, H, L, S)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)  # (B, S) -> (B, 1, 1, S), True = may attend
    attn_weights = masked_softmax(attn_scores, attn_mask)             # (B, H, L, S), rows sum to 1 over S
    context = merge_heads(attn_weights @ v)                           # (B, H, L, D) -> (B, L, E)
    return out_proj(context), attn_weights


class FunctionalAttention(nn.Module):
    """A module around a function with ``multi_head_attention``'s signature, owning the four projections.

    Lets a learner's ``multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj,
    num_heads, key_padding_mask=None)`` stand wherever an ``attn_course.MultiHeadAttention`` is
    expected, e.g. inside ``pretrained.MiniLMEncoder`` (weights loaded by
    ``pretrained.load_attention_weights``).

    Args:
        fn: the function; called without ``key_padding_mask`` when there is none.
        d_model: E; num_heads: H.
        bias: whether the projections ``nn.Linear(E, E)`` have a bias.

    Forward args and returns: as ``MultiHeadAttention``'s ``query, key=None, value=None,
    key_padding_mask=None`` -> ``(attn_output (B, L, E), attn_weights (B, H, L, S))``.

    >>> mha = FunctionalAttention(multi_head_attention, d_model=8, num_heads=2)
    >>> [t.shape for t in mha(torch.randn(1, 3, 8))]
    [torch.Size([1, 3, 8]), torch.Size([1, 2, 3, 3])]
    """

    def __init__(self, fn, d_model, num_heads, bias=True):
        super().__init__()
        self.fn, self.num_heads = fn, num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query, key=None, value=None, key_padding_mask=None):
        key = query if key is None else key
        value = key if value is None else value
        args = (query, key, value, self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.num_heads)
        return self.fn(*args) if key_padding_mask is None else self.fn(*args, key_padding_mask)
