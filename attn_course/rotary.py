"""Where a token is, as a rotation of queries and keys (RoPE) or as a bias on the scores (ALiBi).

Shape legend: B batch, H heads, L query length, S key length, D head_dim (even for RoPE).

**Rotary position embedding** (RoPE; Su et al. 2021, "RoFormer", section 3.4, eq. 34). The D features
of a query or key at position p form D/2 pairs; pair i is rotated by the angle ``p * theta_i`` with
``theta_i = base ** (-2i / D)``::

    (x_a, x_b) -> (x_a cos(p theta_i) - x_b sin(p theta_i),  x_b cos(p theta_i) + x_a sin(p theta_i))

A rotation by ``m theta`` of the query and by ``n theta`` of the key leaves ``q_m . k_n`` a function of
``m - n`` only: the score sees how far apart two tokens are, not where they are. Two conventions pair
the features differently, and weights trained with one are wrong under the other:

- ``interleaved=True``: pairs (0, 1), (2, 3), ... (the paper, GPT-J, Meta's original Llama code);
- ``interleaved=False``: pairs (i, i + D/2), "rotate half" (GPT-NeoX, Hugging Face's Llama).

**ALiBi** (Press et al. 2022, "Train Short, Test Long", section 3): no position is added to the tokens;
head h adds ``-m_h * |i - j|`` to the score of query i and key j, with fixed slopes ``m_h`` forming a
geometric sequence (``alibi_slopes``). With a causal mask (j <= i) this is the paper's bias
``-m_h (i - j)``; without one, the same penalty on both sides.
"""
import math

import torch
from torch import nn


def _validate_positions(positions, length, name):
    if not isinstance(positions, torch.Tensor) or positions.shape[-1:] != (length,):
        got = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise ValueError(f"{name} must be a tensor whose last dimension has the sequence length {length}; got {got}")


def rotary_angles(positions, head_dim, base=10000.0, dtype=torch.float32):
    """The rotation angles ``positions[..., l] * theta_i``, shape ``(..., L, D/2)``.

    Args:
        positions: (..., L) int or float tensor, the position of each token (need not start at 0).
        head_dim: D, even. base: the base of the geometric sequence of frequencies (10000 in the paper).
        dtype: the dtype of the angles (computed in float64, then cast).

    Returns:
        (..., L, D/2) tensor of ``dtype``: ``angle[..., l, i] = positions[..., l] * base ** (-2i / D)``.

    Raises:
        ValueError: ``head_dim`` not a positive even number, or ``positions`` not a tensor.

    >>> rotary_angles(torch.tensor([0, 1, 2]), 4, base=100.0)
    tensor([[0.0000, 0.0000],
            [1.0000, 0.1000],
            [2.0000, 0.2000]])
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number (features are rotated in pairs); got {head_dim}")
    if not isinstance(positions, torch.Tensor):
        raise ValueError(f"positions must be a tensor (..., L); got {type(positions).__name__}")
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)  # (D/2,)
    return (positions.to(torch.float64)[..., None] * theta).to(dtype)          # (..., L, 1) * (D/2,) -> (..., L, D/2)


def apply_rotary(x, positions, base=10000.0, interleaved=False):
    """Rotate the feature pairs of queries or keys by their positions: RoPE, ``(..., L, D) -> (..., L, D)``.

    Args:
        x: (..., L, D) float tensor, D even: queries or keys, e.g. (B, H, L, D).
        positions: (L,) or broadcastable to x's (..., L): int or float positions of the L tokens.
        base: the frequency base (10000 in the paper; Llama 3 uses 500000).
        interleaved: pair features (2i, 2i + 1) if True (the paper, GPT-J); (i, i + D/2) if False
            (GPT-NeoX, Hugging Face's Llama).

    Returns:
        Tensor of x's shape and dtype; the angles are computed in float64 and cast to x's dtype.

    Raises:
        ValueError: x not a floating tensor with at least 2 dimensions and an even last one;
            positions whose last dimension is not L.

    References: Su et al. 2021, section 3.4.2, eq. 34; equal to Hugging Face's
    ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb`` (``interleaved=False``) and to
    GPT-J's ``apply_rotary_pos_emb`` (``interleaved=True``) on the same tensors (tests/test_rotary.py).

    >>> x = torch.tensor([[1.0, 0.0]])                 # one token, D = 2: one pair
    >>> apply_rotary(x, torch.tensor([1]), base=1.0)   # rotated by 1 radian
    tensor([[0.5403, 0.8415]])
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[-1] % 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor (..., L, D) with D even; got {got}")
    L, D = x.shape[-2:]
    _validate_positions(positions, L, "positions")
    angle = rotary_angles(positions.to(x.device), D, base, dtype=x.dtype)      # (..., L, D/2)
    cos, sin = angle.cos(), angle.sin()
    if interleaved:
        x_a, x_b = x[..., 0::2], x[..., 1::2]                                   # (..., L, D/2) each: pairs (2i, 2i+1)
        rotated = torch.stack((x_a * cos - x_b * sin, x_b * cos + x_a * sin), dim=-1)   # (..., L, D/2, 2)
        return rotated.flatten(-2)                                              # -> (..., L, D), pairs side by side
    x_a, x_b = x[..., :D // 2], x[..., D // 2:]                                 # (..., L, D/2) each: pairs (i, i+D/2)
    return torch.cat((x_a * cos - x_b * sin, x_b * cos + x_a * sin), dim=-1)   # (..., L, D)


def alibi_slopes(num_heads):
    """ALiBi's fixed head slopes ``m_1 .. m_H``, a float64 tensor ``(H,)``.

    For H a power of two, ``m_h = 2 ** (-8 h / H)``, h = 1..H (H = 8: 1/2, 1/4, ..., 1/256). Otherwise the
    slopes of the nearest smaller power of two, followed by every other slope of twice that many
    (Press et al. 2022, section 3 and footnote 3; their reference code).

    Raises:
        ValueError: ``num_heads`` not a positive int.

    >>> alibi_slopes(4)
    tensor([0.2500, 0.0625, 0.0156, 0.0039], dtype=torch.float64)
    """
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int; got {num_heads!r}")

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][:num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(num_heads, query_positions, key_positions, dtype=torch.float32):
    """ALiBi's additive bias ``-m_h * |i - j|`` for every head, query and key: ``(H, L, S)``.

    Add it to the scores ``(B, H, L, S)`` before the softmax (or pass it as a float ``attn_mask``).

    Args:
        num_heads: H. query_positions: (L,) positions of the queries. key_positions: (S,) of the keys
            (with a KV cache, the new queries sit at the end: ``arange(S - L, S)``).
        dtype: the bias's dtype.

    Returns:
        (H, L, S) tensor on the positions' device: ``bias[h, l, s] = -m_h * |q_l - k_s|``.

    Raises:
        ValueError: positions that are not 1-D tensors; ``num_heads`` not a positive int.

    >>> alibi_bias(2, torch.arange(3), torch.arange(3))[0]
    tensor([[ 0.0000, -0.0625, -0.1250],
            [-0.0625,  0.0000, -0.0625],
            [-0.1250, -0.0625,  0.0000]])
    """
    for name, p in (("query_positions", query_positions), ("key_positions", key_positions)):
        if not isinstance(p, torch.Tensor) or p.dim() != 1:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"{name} must be a 1-D tensor of positions; got {got}")
    slopes = alibi_slopes(num_heads).to(query_positions.device)                # (H,)
    distance = (query_positions[:, None] - key_positions[None, :]).abs().to(torch.float64)   # (L, S)
    return (0.0 - slopes[:, None, None] * distance).to(dtype)                  # (H, 1, 1) * (L, S) -> (H, L, S)


def _self_positions(query, key):
    """Key positions 0..S-1 and query positions S-L..S-1: the queries are the last L of the keys
    (all of them in self-attention; the new tokens after a KV cache)."""
    L, S = query.shape[-2], key.shape[-2]
    return torch.arange(S - L, S, device=key.device), torch.arange(S, device=key.device)


class Rotary(nn.Module):
    """RoPE for ``MultiHeadAttention(positional=Rotary())``: rotates each head's queries and keys.

    Forward args: query (..., L, D), key (..., S, D), D even. Keys sit at positions 0..S-1, queries at
    S-L..S-1 (self-attention, or the new tokens after a cache).

    Returns: (rotated query, rotated key, None): no bias, the positions are in the rotation.

    Args:
        base: the frequency base. interleaved: the pairing (``apply_rotary``).

    >>> q, k, bias = Rotary()(torch.ones(1, 3, 4), torch.ones(1, 3, 4))
    >>> q.shape, bias
    (torch.Size([1, 3, 4]), None)
    """

    def __init__(self, base=10000.0, interleaved=False):
        super().__init__()
        self.base, self.interleaved = base, interleaved

    def forward(self, query, key):
        query_positions, key_positions = _self_positions(query, key)
        return (apply_rotary(query, query_positions, self.base, self.interleaved),
                apply_rotary(key, key_positions, self.base, self.interleaved), None)

    def extra_repr(self):
        return f"base={self.base}, interleaved={self.interleaved}"


class ALiBi(nn.Module):
    """ALiBi for ``MultiHeadAttention(positional=ALiBi(num_heads))``: a per-head distance penalty.

    Forward args: query (B, H, L, D), key (B, H, S, D), H = ``num_heads``; positions as in ``Rotary``.

    Returns: (query, key, attn_bias (H, L, S)) with ``attn_bias = alibi_bias(...)`` in the query's dtype.

    Raises:
        ValueError: the query's head axis (dim -3) is not ``num_heads``.

    >>> _, _, bias = ALiBi(2)(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> bias.shape
    torch.Size([2, 3, 3])
    """

    def __init__(self, num_heads):
        super().__init__()
        self.num_heads = num_heads
        alibi_slopes(num_heads)                                                 # validates num_heads

    def forward(self, query, key):
        if query.dim() < 3 or query.shape[-3] != self.num_heads:
            raise ValueError(f"ALiBi({self.num_heads}) needs queries (B, H={self.num_heads}, L, D); "
                             f"got {tuple(query.shape)}")
        query_positions, key_positions = _self_positions(query, key)
        return query, key, alibi_bias(self.num_heads, query_positions, key_positions, dtype=query.dtype)

    def extra_repr(self):
        return f"num_heads={self.num_heads}"


def interleaved_to_half_split(weight, num_heads):
    """Reorder a query or key projection trained with interleaved RoPE for code that applies the half-split one.

    Within each head, output feature ``2i`` moves to ``i`` and ``2i + 1`` to ``i + D/2``: the pair that
    interleaved RoPE rotated together, (2i, 2i+1), becomes the pair half-split RoPE rotates together,
    (i, i + D/2). Queries and keys permuted alike keep every score: ``q . k`` is a sum over features,
    whatever their order. Hugging Face's ``convert_llama_weights_to_hf.py`` does this (its ``permute``)
    when it converts Meta's Llama checkpoints.

    Args:
        weight: (H * D, ...) tensor: an ``nn.Linear`` weight (H * D, E) or bias (H * D,), heads stacked
            along dim 0, D even.
        num_heads: H.

    Returns:
        A tensor of ``weight``'s shape and dtype with the rows permuted (a copy).

    Raises:
        ValueError: dim 0 not divisible into ``num_heads`` heads of an even size.

    >>> interleaved_to_half_split(torch.arange(8.0), num_heads=2)
    tensor([0., 2., 1., 3., 4., 6., 5., 7.])
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() == 0 or num_heads <= 0 \
            or weight.shape[0] % (2 * num_heads):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must have H * D rows with D even (H = num_heads = {num_heads}); got {got}")
    D = weight.shape[0] // num_heads
    rows = weight.reshape(num_heads, D // 2, 2, *weight.shape[1:])               # (H, D/2, 2, ...): pairs (2i, 2i+1)
    return rows.transpose(1, 2).reshape(weight.shape).clone()                   # (H, 2, D/2, ...): evens, then odds
