"""Probes for the bug hunts: ways to make a silent bug visible.

A bug in attention code keeps every shape right. What gives it away is a property: rows that do not
sum to 1, an entropy that moves the wrong way, an output that depends on the future, a pad vector
that learns. Each probe here measures one such property and returns plain tensors to print or draw.
"""
import torch


def influence_matrix(attend, L, dim=8, seed=0):
    """Which inputs each output depends on: ``M[i, j] = |change of output i|`` when only position j changes.

    Args:
        attend: ``attend(query, key, value) -> output (1, L, Dv)``; for example
            ``lambda q, k, v: scaled_dot_product_attention(q, k, v, attn_mask=my_mask(L))``.
        L: the sequence length (query and key positions).
        dim: the width of the random query, key and value vectors.
        seed: the seed of the CPU generator that draws them.

    Returns:
        (L, L) float64 tensor, non-negative; a causal ``attend`` gives a lower-triangular matrix
        (``M[i, j] == 0`` for every j > i): the causality probe.
    """
    g = torch.Generator().manual_seed(seed)
    query, key, value = (torch.randn(1, L, dim, generator=g, dtype=torch.float64) for _ in range(3))
    base = attend(query, key, value)                                             # (1, L, Dv)
    out = torch.zeros(L, L, dtype=torch.float64)
    for j in range(L):                                                           # move position j only
        k2, v2 = key.clone(), value.clone()
        k2[:, j] += 3 * torch.randn(dim, generator=g, dtype=torch.float64)
        v2[:, j] += 3 * torch.randn(dim, generator=g, dtype=torch.float64)
        out[:, j] = (attend(query, k2, v2) - base).abs().amax(-1)[0]            # (L,)
    return out


def pad_row_gradient(embedding, ids, pad_id):
    """The gradient that one backward pass through ``embedding(ids)`` leaves on the pad row, (E,).

    With ``padding_idx=pad_id`` it is exactly zero; otherwise padding learns. The embedding's own
    ``.grad`` is left as it was.
    """
    weight = embedding.weight
    saved = None if weight.grad is None else weight.grad.clone()
    weight.grad = None
    out = embedding(ids)                                                          # (..., E)
    c = torch.arange(1.0, out.shape[-1] + 1, dtype=out.dtype, device=out.device)
    (out * c).sum().backward()                                                   # linear: the gradient does not vanish at 0
    grad = weight.grad[pad_id].detach().clone()
    weight.grad = saved
    return grad
