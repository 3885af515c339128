"""Scoring rules: how well does each query match each key?

Shape legend (the same in every module and lesson):
    B batch, L query length, S key/value length, H heads, D head_dim (the paper's d_k),
    E d_model (= H*D), V vocabulary. ``...`` stands for any leading batch dimensions.

Every rule maps ``query (..., L, Dq)`` and ``key (..., S, Dk)`` to ``attn_scores (..., L, S)``:
one unnormalised score per (query, key) pair. Softmax over the key axis (``dim=-1``) turns the
scores into attention weights (see ``attn_course.attention``).

| rule        | attn_scores[i, j]                     | source                                   |
|-------------|---------------------------------------|------------------------------------------|
| dot         | q_i . k_j                             | Luong et al. 2015, eq. 8 ("dot")         |
| scaled_dot  | q_i . k_j / sqrt(d_k)                 | Vaswani et al. 2017, eq. 1               |
| general     | q_i^T W k_j                           | Luong et al. 2015, eq. 8 ("general")     |
| concat      | w . [q_i ; k_j] + b                   | concatenation + one linear layer         |
| additive    | v . tanh(W_q q_i + W_k k_j)           | Bahdanau et al. 2015, appendix A.1.2     |
"""
import math

import torch
from torch import nn

METHODS = ("dot", "scaled_dot", "general", "concat", "additive")


def validate_query_key(query, key, same_dim, broadcast=False):
    """Raise ValueError unless query (..., L, Dq) and key (..., S, Dk) are tensors with the same batch dims
    (and Dq == Dk when ``same_dim``). With ``broadcast=True`` the batch dims need only broadcast
    against each other (PyTorch's rule: aligned from the right, each pair equal or one of them 1)."""
    for name, t in (("query", query), ("key", key)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (..., length, dim); "
                             f"got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, dim) with at least 2 dims; "
                             f"got shape {tuple(t.shape)}")
    if broadcast:
        try:
            torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
        except RuntimeError:
            raise ValueError(f"the batch dims of query and key must broadcast (aligned from the right, each pair "
                             f"equal or one of them 1); got query {tuple(query.shape)} (batch "
                             f"{tuple(query.shape[:-2])}) and key {tuple(key.shape)} (batch "
                             f"{tuple(key.shape[:-2])})") from None
    elif query.shape[:-2] != key.shape[:-2]:
        raise ValueError(f"query and key must share their batch dims; got query {tuple(query.shape)} "
                         f"(batch {tuple(query.shape[:-2])}) and key {tuple(key.shape)} "
                         f"(batch {tuple(key.shape[:-2])})")
    if same_dim and query.shape[-1] != key.shape[-1]:
        raise ValueError(f"a dot-product score needs query and key of the same last dim (d_k); got "
                         f"query {tuple(query.shape)} and key {tuple(key.shape)}")


def dot_scores(query, key):
    """Dot-product scores ``attn_scores[..., i, j] = query[..., i, :] . key[..., j, :]``.

    Args:
        query: (..., L, D) float tensor.
        key: (..., S, D) float tensor, same batch dims and D as ``query``.

    Returns:
        attn_scores: (..., L, S), same dtype as the inputs.

    Raises:
        ValueError: an input is not a tensor of rank >= 2, the batch dims differ, or the last dims differ.

    References: Luong, Pham & Manning 2015, "Effective Approaches to Attention-based NMT", eq. 8.

    >>> dot_scores(torch.eye(2), torch.tensor([[1., 2.], [3., 4.]]))
    tensor([[1., 3.],
            [2., 4.]])
    """
    validate_query_key(query, key, same_dim=True)
    return query @ key.transpose(-2, -1)  # (..., L, D) @ (..., D, S) -> (..., L, S)


def scaled_dot_scores(query, key, scale=None):
    """Scaled dot-product scores ``query . key / sqrt(d_k)``.

    Dividing by sqrt(d_k) keeps the scores' variance near 1 when the entries of query and key have
    unit variance, so softmax does not saturate as d_k grows.

    Args:
        query: (..., L, D) float tensor.
        key: (..., S, D) float tensor.
        scale: multiplier for the scores; ``None`` means ``1 / sqrt(D)`` as in PyTorch's SDPA.

    Returns:
        attn_scores: (..., L, S).

    Raises:
        ValueError: as ``dot_scores``.

    References: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1, eq. 1.

    >>> scaled_dot_scores(torch.ones(1, 4), torch.ones(2, 4))
    tensor([[2., 2.]])
    """
    validate_query_key(query, key, same_dim=True)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


def general_scores(query, key, weight):
    """General (bilinear) scores ``query_i^T W key_j``.

    Args:
        query: (..., L, Dq) float tensor.
        key: (..., S, Dk) float tensor.
        weight: (Dq, Dk) float tensor W.

    Returns:
        attn_scores: (..., L, S).

    Raises:
        ValueError: bad ranks or batch dims, or ``weight`` is not (Dq, Dk).

    References: Luong, Pham & Manning 2015, eq. 8 ("general").

    >>> general_scores(torch.ones(1, 2), torch.ones(3, 2), 2 * torch.eye(2))
    tensor([[4., 4., 4.]])
    """
    validate_query_key(query, key, same_dim=False)
    if tuple(weight.shape) != (query.shape[-1], key.shape[-1]):
        raise ValueError(f"weight must have shape (Dq, Dk) = ({query.shape[-1]}, {key.shape[-1]}); "
                         f"got {tuple(weight.shape)}")
    return (query @ weight) @ key.transpose(-2, -1)  # (..., L, Dq) -> (..., L, Dk) -> (..., L, S)


def concat_scores(query, key, weight, bias=None):
    """Concat scores: one linear layer on the concatenation, ``w . [query_i ; key_j] + b``.

    Note: ``w . [q ; k] = w_q . q + w_k . k``, so for a fixed query the query's term is the same for
    every key and cancels in the softmax: this rule ranks keys without looking at the query.
    The additive rule puts a tanh between the two terms to fix exactly that. Not to be confused with
    the second article's ``softmax(Linear([q ; k]))``, whose layer has one output per *position*:
    location-based attention, ``pooling.LocationAttention``.

    Args:
        query: (..., L, Dq) float tensor.
        key: (..., S, Dk) float tensor.
        weight: (Dq + Dk,) float tensor w.
        bias: optional scalar tensor b.

    Returns:
        attn_scores: (..., L, S).

    Raises:
        ValueError: bad ranks or batch dims, or ``weight`` is not (Dq + Dk,).

    >>> concat_scores(torch.ones(1, 1), torch.tensor([[1.], [2.]]), torch.tensor([1., 10.]))
    tensor([[11., 21.]])
    """
    validate_query_key(query, key, same_dim=False)
    L, S = query.shape[-2], key.shape[-2]
    if tuple(weight.shape) != (query.shape[-1] + key.shape[-1],):
        raise ValueError(f"weight must have shape (Dq + Dk,) = ({query.shape[-1] + key.shape[-1]},); "
                         f"got {tuple(weight.shape)}")
    q = query.unsqueeze(-2).expand(*query.shape[:-1], S, query.shape[-1])  # (..., L, S, Dq)
    k = key.unsqueeze(-3).expand(*key.shape[:-2], L, S, key.shape[-1])    # (..., L, S, Dk)
    attn_scores = torch.cat([q, k], dim=-1) @ weight                       # (..., L, S, Dq+Dk) -> (..., L, S)
    return attn_scores if bias is None else attn_scores + bias


def additive_scores(query, key, w_query, w_key, v):
    """Additive (Bahdanau) scores ``v . tanh(W_q query_i + W_k key_j)``.

    Equal to ``v . tanh(W [query_i ; key_j])`` with ``W = [W_q  W_k]``: concatenation, a linear layer,
    tanh, and a second linear layer to one number.

    Args:
        query: (..., L, Dq) float tensor.
        key: (..., S, Dk) float tensor.
        w_query: (A, Dq) float tensor, A the width of the scoring layer (``attn_dim``); laid out as
            ``nn.Linear.weight`` (out_features, in_features) and applied as ``query @ w_query.T``.
        w_key: (A, Dk) float tensor, laid out the same way.
        v: (A,) float tensor.

    Returns:
        attn_scores: (..., L, S).

    Raises:
        ValueError: bad ranks or batch dims, or weight shapes that do not fit Dq, Dk and A.

    References: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning to Align
    and Translate", appendix A.1.2.

    >>> additive_scores(torch.zeros(1, 2), torch.zeros(3, 2), torch.ones(4, 2), torch.ones(4, 2), torch.ones(4))
    tensor([[0., 0., 0.]])
    """
    validate_query_key(query, key, same_dim=False)
    A = v.shape[0] if v.dim() == 1 else -1
    if (v.dim() != 1 or tuple(w_query.shape) != (A, query.shape[-1])
            or tuple(w_key.shape) != (A, key.shape[-1])):
        raise ValueError(f"expected w_query (A, Dq={query.shape[-1]}), w_key (A, Dk={key.shape[-1]}), "
                         f"v (A,); got w_query {tuple(w_query.shape)}, w_key {tuple(w_key.shape)}, "
                         f"v {tuple(v.shape)}")
    q = (query @ w_query.T).unsqueeze(-2)   # (..., L, Dq) -> (..., L, 1, A)
    k = (key @ w_key.T).unsqueeze(-3)       # (..., S, Dk) -> (..., 1, S, A)
    return torch.tanh(q + k) @ v            # (..., L, S, A) -> (..., L, S)


class AttentionScore(nn.Module):
    """Every scoring rule behind one interface: ``AttentionScore(method, ...)(query, key) -> attn_scores``.

    Args:
        method: one of ``"dot"``, ``"scaled_dot"``, ``"general"``, ``"concat"``, ``"additive"``.
        query_dim: Dq, the last dim of ``query``.
        key_dim: Dk, the last dim of ``key`` (default ``query_dim``).
        attn_dim: A, the width of the additive rule's scoring layer (default ``query_dim``).

    Shapes: ``query (..., L, Dq)``, ``key (..., S, Dk)`` -> ``attn_scores (..., L, S)``.

    Raises:
        ValueError: unknown method, or ``dot``/``scaled_dot`` with ``key_dim != query_dim``.

    >>> AttentionScore("additive", query_dim=4)(torch.randn(2, 3, 4), torch.randn(2, 5, 4)).shape
    torch.Size([2, 3, 5])
    """

    def __init__(self, method, query_dim, key_dim=None, attn_dim=None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        key_dim = query_dim if key_dim is None else key_dim
        attn_dim = query_dim if attn_dim is None else attn_dim
        if method in ("dot", "scaled_dot") and key_dim != query_dim:
            raise ValueError(f"{method} needs key_dim == query_dim; got {key_dim} and {query_dim}")
        self.method = method
        if method == "general":
            self.weight = nn.Parameter(torch.randn(query_dim, key_dim) / math.sqrt(query_dim))
        elif method == "concat":
            self.linear = nn.Linear(query_dim + key_dim, 1)
        elif method == "additive":
            self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
            self.w_key = nn.Linear(key_dim, attn_dim, bias=False)
            self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, key):
        if self.method == "dot":
            return dot_scores(query, key)
        if self.method == "scaled_dot":
            return scaled_dot_scores(query, key)
        if self.method == "general":
            return general_scores(query, key, self.weight)
        if self.method == "concat":
            return concat_scores(query, key, self.linear.weight[0], self.linear.bias[0])
        return additive_scores(query, key, self.w_query.weight, self.w_key.weight, self.v.weight[0])

    def extra_repr(self):
        return f"method={self.method!r}"
