"""Attention pooling: one score per position -> a masked softmax over S -> one context vector.

Shape legend (that of ``attn_course.attention``): B batch, S the positions pooled over (keys and
values), Dq, Dk, Dv the sizes of a query, a key and a value, A the width of an additive scorer
(``attn_dim``). ``...`` stands for any leading batch dims: (B,), or (B, N) for the N sentences of B
articles.

    attn_scores (..., S) --softmax over S--> attn_weights (..., S) --weighted sum of value--> context (..., Dv)

This is ``attention.masked_softmax`` then ``attention.weighted_sum`` with a single query (L = 1).
Every application pools this way; only the scores differ: a learned query (lessons 11, 13), a
learned scoring layer (lessons 04, 10, 14), a decoder state scored by ``AdditiveAttention``
(lessons 09, 12) or, blind to content, one logit per position from ``LocationAttention`` (lesson 02: the
second article's ``Attn``). ``mean_pool`` is the baseline that gives every real position the same weight.

**Mask polarity.** ``key_padding_mask`` follows ``torch.nn.MultiheadAttention``: a bool tensor,
**True = padding (ignore)**. A padded position gets weight exactly 0; a row whose positions are all
padding gets all-zero weights and a zero context (not NaN), as in PyTorch's SDPA.

**Weight layout.** An additive scorer's ``w_query`` (A, Dq) and ``w_key`` (A, Dk) are laid out as
``nn.Linear.weight``, (out_features, in_features), and applied as ``query @ w_query.T``: Bahdanau et
al.'s ``W_a s_{i-1}``. The same layout as ``scoring.additive_scores`` and
``scoring.AttentionScore("additive")``, in the package and in every lesson.
"""
import torch
from torch import nn

from .attention import masked_softmax, weighted_sum


def validate_scores_value(attn_scores, value, key_padding_mask=None):
    """Raise ValueError unless attn_scores (..., S) and value (..., S, Dv) share S and their batch dims
    broadcast, and ``key_padding_mask`` is None or a bool tensor broadcastable to attn_scores (..., S)."""
    if attn_scores.dim() < 1 or value.dim() < 2 or attn_scores.shape[-1] != value.shape[-2]:
        raise ValueError(f"attn_scores (..., S) and value (..., S, Dv) must share S; got attn_scores "
                         f"{tuple(attn_scores.shape)} and value {tuple(value.shape)}")
    try:
        torch.broadcast_shapes(attn_scores.shape[:-1], value.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dims of attn_scores (..., S) {tuple(attn_scores.shape)} and value "
                         f"(..., S, Dv) {tuple(value.shape)} must broadcast") from None
    if key_padding_mask is None:
        return
    if key_padding_mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask must be a bool tensor, True = padding; got {key_padding_mask.dtype}")
    try:
        fits = torch.broadcast_shapes(key_padding_mask.shape, attn_scores.shape) == attn_scores.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"key_padding_mask must broadcast to attn_scores (..., S) {tuple(attn_scores.shape)}; "
                         f"got {tuple(key_padding_mask.shape)}")


def attention_pool(attn_scores, value, key_padding_mask=None):
    """Attention pooling: a softmax of the scores over the S positions, padding excluded, then the
    weighted sum of the values.

    ``attn_weights = softmax(attn_scores)`` over the last axis, with padded positions filled with
    ``-inf`` first (weight exactly 0); ``context = sum_s attn_weights[..., s] * value[..., s, :]``.
    Appending padding changes nothing.

    Args:
        attn_scores: float tensor (..., S), one score per position.
        value: float tensor (..., S, Dv) of the same dtype, one vector per position; its batch dims
            broadcast against those of ``attn_scores``.
        key_padding_mask: None, or a bool tensor broadcastable to (..., S), **True = padding
            (ignore)**, as in ``torch.nn.MultiheadAttention``. A row with every position padded gets
            zero weights and a zero context, not NaN.

    Returns:
        (context, attn_weights): context (..., Dv); attn_weights (..., S), non-negative, each row
        summing to 1 over its real positions.

    Raises:
        ValueError: S differs between ``attn_scores`` and ``value``, batch dims that do not
            broadcast, or a ``key_padding_mask`` that is not bool or does not broadcast to (..., S).

    References: Bahdanau et al. 2015, eqs. 5-6; Xu et al. 2015, section 4.2 ("deterministic soft
    attention"); Yang et al. 2016, eqs. 6-7 and 9-10. Numerically equal to
    ``torch.nn.functional.scaled_dot_product_attention`` with one query whose dot products with the
    keys are the scores (tests/test_pooling.py).

    >>> attention_pool(torch.zeros(1, 3), torch.tensor([[[1.0], [3.0], [100.0]]]),
    ...                torch.tensor([[False, False, True]]))
    (tensor([[2.]]), tensor([[0.5000, 0.5000, 0.0000]]))
    """
    validate_scores_value(attn_scores, value, key_padding_mask)
    attn_mask = None if key_padding_mask is None else ~key_padding_mask          # True = may attend
    attn_weights = masked_softmax(attn_scores, attn_mask)                        # (..., S); all padding -> 0
    context = weighted_sum(attn_weights.unsqueeze(-2), value).squeeze(-2)       # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, attn_weights


def mean_pool(value, key_padding_mask=None):
    """Mean pooling, the baseline of attention pooling: every real position weighs ``1 / n``.

    ``attn_weights[..., s] = 1 / n`` on the n real positions of a row (0 on padding), then the same
    weighted sum as :func:`attention_pool`: ``context = sum_s attn_weights[..., s] * value[..., s, :]``,
    the average of the real positions' vectors.

    Args:
        value: float tensor (..., S, Dv).
        key_padding_mask: None, or a bool tensor (..., S), **True = padding (ignore)**. A row with
            every position padded gets zero weights and a zero context.

    Returns:
        (context, attn_weights): context (..., Dv); attn_weights (..., S), in the dtype of ``value``.

    Raises:
        ValueError: ``value`` has fewer than 2 dims, or ``key_padding_mask`` is not a bool tensor of
            the shape (..., S) of ``value``.

    >>> mean_pool(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[False, False, True]]))
    (tensor([[2.]]), tensor([[0.5000, 0.5000, 0.0000]]))
    """
    if value.dim() < 2 or key_padding_mask is not None and (
            key_padding_mask.dtype != torch.bool or key_padding_mask.shape != value.shape[:-1]):
        raise ValueError(f"value must be (..., S, Dv) and key_padding_mask a bool tensor (..., S), True = "
                         f"padding; got value {tuple(value.shape)} and key_padding_mask "
                         f"{None if key_padding_mask is None else (key_padding_mask.dtype, tuple(key_padding_mask.shape))}")
    if key_padding_mask is None:
        keep = value.new_ones(value.shape[:-1])                                  # (..., S), 1 = real
    else:
        keep = (~key_padding_mask).to(value.dtype)                               # (..., S), 1 = real
    attn_weights = keep / keep.sum(-1, keepdim=True).clamp(min=1)                # (..., S), 1/n on real positions
    context = weighted_sum(attn_weights.unsqueeze(-2), value).squeeze(-2)       # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, attn_weights


class AdditiveAttention(nn.Module):
    """Additive attention of one query over S keys: ``attn_scores_j = v . tanh(W_q query + W_k key_j)``,
    then :func:`attention_pool` of the values.

    The scoring layer of Bahdanau et al.: a one-hidden-layer network of width A (``attn_dim``) that
    reads the query and one key. The key term ``W_k key_j`` does not depend on the query: a decoder
    computes it once per source sentence (``projected_key = attn.w_key(key)``) and reuses it at
    every step.

    Args:
        query_dim: Dq; key_dim: Dk; attn_dim: A, the width of the scoring layer.

    Attributes:
        w_query (``nn.Linear(Dq, A, bias=False)``): its weight (A, Dq) is W_q.
        w_key (``nn.Linear(Dk, A, bias=False)``): its weight (A, Dk) is W_k.
        v (``nn.Linear(A, 1, bias=False)``): its weight (1, A) is v.
        The layout of ``scoring.additive_scores(query, key, w_query.weight, w_key.weight, v.weight[0])``.

    Shape:
        ``forward(query (..., Dq), key (..., S, Dk), value (..., S, Dv), key_padding_mask (..., S)
        bool, **True = padding**, or None; projected_key (..., S, A) or None)`` -> context (..., Dv),
        attn_weights (..., S).

    Raises:
        ValueError: ``query`` or ``key`` whose last dim is not Dq or Dk; as :func:`attention_pool`.

    References: Bahdanau, Cho & Bengio 2015, eqs. 5-6 and appendix A.1.2 (``e_ij = v_a .
    tanh(W_a s_{i-1} + U_a h_j)``); Xu et al. 2015, eqs. 4-6 (f_att). Equal to
    ``scoring.additive_scores`` followed by ``attention_pool`` (tests/test_pooling.py).

    >>> attn = AdditiveAttention(query_dim=2, key_dim=3, attn_dim=4)
    >>> context, attn_weights = attn(torch.zeros(1, 2), torch.zeros(1, 5, 3), torch.ones(1, 5, 6))
    >>> context.shape, attn_weights.detach()
    (torch.Size([1, 6]), tensor([[0.2000, 0.2000, 0.2000, 0.2000, 0.2000]]))
    """

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__()
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def attn_scores(self, query, key, projected_key=None):
        """``v . tanh(W_q query + W_k key_j)``: query (..., Dq), key (..., S, Dk) -> attn_scores (..., S).

        With ``projected_key`` (..., S, A) = ``self.w_key(key)``, ``key`` is not read.
        """
        if query.shape[-1] != self.w_query.in_features or projected_key is None and (
                key.dim() < 2 or key.shape[-1] != self.w_key.in_features):
            raise ValueError(f"query must be (..., Dq={self.w_query.in_features}) and key (..., S, "
                             f"Dk={self.w_key.in_features}); got query {tuple(query.shape)} and key "
                             f"{tuple(key.shape)}")
        k = self.w_key(key) if projected_key is None else projected_key          # (..., S, Dk) -> (..., S, A)
        q = self.w_query(query).unsqueeze(-2)                                    # (..., Dq) -> (..., 1, A)
        return torch.tanh(q + k) @ self.v.weight[0]                              # (..., S, A) @ (A,) -> (..., S)

    def forward(self, query, key, value, key_padding_mask=None, projected_key=None):
        return attention_pool(self.attn_scores(query, key, projected_key), value, key_padding_mask)


class LocationAttention(nn.Module):
    """Location-based attention, the second article's ``Attn``: one weight per *position*, from ``[q ; k]``.

    ``attn_weights = softmax(W_a [q ; k] + b_a)`` over a fixed number S = ``value_size1`` of positions;
    ``context = sum_s attn_weights[s] * value[s]`` (:func:`attention_pool`);
    ``output = W_c [q ; context] + b_c``. The article's three steps: score, ``bmm`` of the weights with
    the values, concatenate with the query and ``attn_combine``.

    The query (and the extra vector ``key``) decide the weights; the content of the values never does:
    position s gets the same weight whatever ``value[:, s]`` holds. Hence its two limits: it takes exactly
    ``value_size1`` positions (the PyTorch tutorial pads its encoder outputs to ``MAX_LENGTH``; a longer
    sentence cannot be read), and it cannot find a value by its content, as the content-based rules of
    ``attn_course.scoring`` do with one score per key. It works where the right position is fixed or
    follows from the query alone. Not to be confused with ``scoring.concat_scores``: that linear layer has
    one output, applied to ``[q_i ; k_j]`` for each key j; this one has one output per position.

    Args:
        query_size: Dq, the query's last dim (in the tutorial, the decoder's embedded input word).
        key_size: Dk, the extra vector's last dim (in the tutorial, the decoder's previous hidden state:
            one vector per step, not one key per position).
        value_size1: S, the fixed number of positions (the tutorial's ``max_length``).
        value_size2: Dv, the values' last dim (the encoder outputs' size).
        output_size: the last dim of the output.

    Attributes (the article's names, so that its weights load with ``load_state_dict``):
        attn (``nn.Linear(Dq + Dk, S)``): one logit per position; attn_combine (``nn.Linear(Dq + Dv, output_size)``).

    Shape: ``forward(query (B, 1, Dq), key (B, 1, Dk), value (B, S, Dv))`` -> output (B, 1, output_size),
    attn_weights (B, S), each row summing to 1 over S. Dim 0 is the batch, dim 1 the one decoder step; the
    article runs B = 1. Float tensors of the parameters' dtype (``.double()`` for float64).

    Raises:
        ValueError: an input that is not a 3-D tensor of the shape above, batch sizes that differ, or a
            value whose number of positions is not ``value_size1`` (the fixed length).

    References: Luong, Pham & Manning 2015, section 3.1, eq. 9 (location-based, ``a_t = softmax(W_a h_t)``);
    the PyTorch tutorial "Translation with a Sequence to Sequence Network and Attention", ``AttnDecoderRNN``
    (``attn = nn.Linear(2 * hidden_size, max_length)``). Equal to the article's ``Attn`` for B = 1, and to
    it run on each batch element for B > 1 (tests/test_scoring.py).

    >>> attn = LocationAttention(query_size=32, key_size=32, value_size1=32, value_size2=64, output_size=64)
    >>> output, attn_weights = attn(torch.randn(1, 1, 32), torch.randn(1, 1, 32), torch.randn(1, 32, 64))
    >>> output.shape, attn_weights.shape
    (torch.Size([1, 1, 64]), torch.Size([1, 32]))
    """

    def __init__(self, query_size, key_size, value_size1, value_size2, output_size):
        super().__init__()
        self.query_size, self.key_size = query_size, key_size
        self.value_size1, self.value_size2, self.output_size = value_size1, value_size2, output_size
        self.attn = nn.Linear(query_size + key_size, value_size1)              # [q ; k] -> one logit per position
        self.attn_combine = nn.Linear(query_size + value_size2, output_size)   # [q ; context] -> output

    def validate(self, query, key, value):
        """Raise ValueError unless query (B, 1, Dq), key (B, 1, Dk), value (B, S, Dv) fit this module."""
        S, Dv = self.value_size1, self.value_size2
        for name, t, size in (("query", query, (1, self.query_size)), ("key", key, (1, self.key_size)),
                              ("value", value, (S, Dv))):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or tuple(t.shape[2:]) != size[1:]:
                found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a tensor (B, {size[0]}, {size[1]}); got {found}")
        if query.shape[1] != 1 or key.shape[1] != 1:
            raise ValueError(f"query and key hold one decoder step each, (B, 1, D); got query {tuple(query.shape)} "
                             f"and key {tuple(key.shape)}")
        if not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(f"query, key and value must share the batch size B; got query {tuple(query.shape)}, "
                             f"key {tuple(key.shape)}, value {tuple(value.shape)}")
        if value.shape[1] != S:
            raise ValueError(f"location-based attention has one weight per position for exactly value_size1 = {S} "
                             f"positions; got value {tuple(value.shape)} with {value.shape[1]}. Pad shorter "
                             f"sequences to {S} positions; for any length, score each key by its content "
                             f"(attn_course.scoring)")

    def forward(self, query, key, value):
        self.validate(query, key, value)
        q, k = query[:, 0], key[:, 0]                                        # (B, 1, Dq) -> (B, Dq); (B, Dk)
        attn_scores = self.attn(torch.cat((q, k), dim=1))                    # (B, Dq + Dk) -> (B, S)
        context, attn_weights = attention_pool(attn_scores, value)           # (B, S), (B, S, Dv) -> (B, Dv), (B, S)
        output = self.attn_combine(torch.cat((q, context), dim=1))           # (B, Dq + Dv) -> (B, output_size)
        return output.unsqueeze(1), attn_weights                             # (B, 1, output_size), (B, S)
