"""The KV cache: decoding one token at a time without recomputing the keys and values of the past.

Shape legend: B batch, H query heads, H_kv key/value heads (= H in multi-head attention), L_new the new
positions of this step, S = past_length + L_new all positions so far, D head_dim, N layers.

A causal decoder's keys and values at positions 0..t-1 do not change when position t arrives (the
causal mask keeps the past from seeing the future), so each step computes q, k, v for the new positions
only, appends k and v to the cache, and lets the new queries attend over everything cached::

    new positions x (B, L_new, E) --projections--> q, k, v (B, H, L_new, D)
    k, v --KVCache.append--> key_all, value_all (B, H_kv, S, D)
    q, key_all, value_all --cached_attention--> context (B, H, L_new, D) --out_proj--> (B, L_new, E)

``cached_self_attention`` is that flow for the course's ``MultiHeadAttention``.

A step then costs O(S) attention and O(L_new) projections instead of O(S^2) and O(S): generating n
tokens costs O(n^2) instead of O(n^3) in attention and O(n) instead of O(n^2) in the projections and
feed-forward layers, paid for with memory (``kv_cache_bytes``).

**Mask polarity.** ``attn_mask`` as in ``torch.nn.functional.scaled_dot_product_attention``:
**True = may attend**. The causal mask of the new queries is aligned **bottom-right**: the new query i
sits at position ``past_length + i`` and sees keys ``0 .. past_length + i``.
"""
import torch

from .attention import scaled_dot_product_attention


def kv_cache_bytes(num_layers, kv_heads, head_dim, length, batch=1, dtype=torch.float32):
    """Memory of a KV cache: ``2 x num_layers x batch x kv_heads x head_dim x length x bytes_per_element``.

    The 2 counts the keys and the values; every layer keeps both for every head and position.

    Args:
        num_layers: N. kv_heads: H_kv, the key/value heads (fewer than the query heads in grouped-query
            attention). head_dim: D. length: positions kept (``max_len`` for a preallocated cache).
        batch: B, sequences decoded together. dtype: the element type (4 bytes for float32).

    Returns:
        int, bytes.

    References: Pope et al. 2022, "Efficiently Scaling Transformer Inference" (the cache
    size formula); Ainslie et al. 2023, "GQA" (fewer key/value heads, a smaller cache).

    >>> kv_cache_bytes(num_layers=4, kv_heads=4, head_dim=32, length=1024)
    4194304
    """
    return 2 * num_layers * batch * kv_heads * head_dim * length * dtype.itemsize


class KVCache:
    """Preallocated keys and values of every layer: N pairs of (B, H_kv, max_len, D) tensors, ``length`` filled.

    The memory is fixed when the cache is made (as inference engines do), so a step writes into it
    rather than concatenating. One decoding step of L_new positions, for every layer n in order::

        key_all, value_all = cache.append(n, k, v)   # writes positions length .. length + L_new - 1
        ...attend with cached_attention(q, key_all, value_all, cache.length)...
        cache.advance(L_new)                         # once, after the last layer

    ``length`` stays the same while the layers of one step append (every layer writes at the same
    positions, and ``cache.length`` is the ``past_length`` of the step); ``advance`` moves it on.

    Args:
        num_layers: N. batch_size: B. kv_heads: H_kv. head_dim: D.
        max_len: the most positions the cache holds. dtype, device: of the preallocated tensors.

    Attributes:
        keys, values: lists of N tensors (B, H_kv, max_len, D); positions >= ``length`` hold no data yet.
        length: the number of positions filled, 0 .. max_len.

    Raises:
        ValueError: a size that is not a positive int.

    References: Pope et al. 2022, "Efficiently Scaling Transformer Inference"; Kwon et
    al. 2023, "Efficient Memory Management for Large Language Model Serving with PagedAttention" (why
    preallocated memory matters).

    >>> cache = KVCache(num_layers=2, batch_size=1, kv_heads=4, head_dim=8, max_len=16)
    >>> key_all, value_all = cache.append(0, torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))
    >>> key_all.shape, cache.length
    (torch.Size([1, 4, 3, 8]), 0)
    >>> cache.append(1, torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))[0].shape
    torch.Size([1, 4, 3, 8])
    >>> cache.advance(3); cache.length
    3
    """

    def __init__(self, num_layers, batch_size, kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        sizes = dict(num_layers=num_layers, batch_size=batch_size, kv_heads=kv_heads, head_dim=head_dim,
                     max_len=max_len)
        bad = {name: n for name, n in sizes.items() if not isinstance(n, int) or n <= 0}
        if bad:
            raise ValueError(f"KVCache sizes must be positive ints; got {bad}")
        self.num_layers, self.max_len, self.dtype = num_layers, max_len, dtype
        shape = (batch_size, kv_heads, max_len, head_dim)                       # (B, H_kv, max_len, D)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @property
    def nbytes(self):
        """Bytes held by the keys and values of all layers: ``kv_cache_bytes(N, H_kv, D, max_len, B, dtype)``."""
        B, H_kv, max_len, D = self.keys[0].shape
        return kv_cache_bytes(self.num_layers, H_kv, D, max_len, batch=B, dtype=self.dtype)

    def append(self, layer, key, value):
        """Write the new positions' ``key`` and ``value`` of ``layer``; return all of that layer's so far.

        Args:
            layer: 0 .. N-1.
            key, value: (B, H_kv, L_new, D) tensors of the cache's dtype, for positions
                ``length .. length + L_new - 1``.

        Returns:
            (key_all, value_all): views of the cache, each (B, H_kv, length + L_new, D). They alias the
            cache's memory: a later ``append`` over the same positions changes them.

        Raises:
            ValueError: ``layer`` out of range; shapes other than (B, H_kv, L_new, D) with the cache's B,
                H_kv and D, or key and value that differ; a dtype other than the cache's; or a cache that
                would overflow (``length + L_new > max_len``).
        """
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must lie in 0..{self.num_layers - 1}; got {layer}")
        B, H_kv, _, D = self.keys[layer].shape
        if key.shape != value.shape or key.dim() != 4 or (key.shape[0], key.shape[1], key.shape[3]) != (B, H_kv, D):
            raise ValueError(f"key and value must both be (B, H_kv, L_new, D) = ({B}, {H_kv}, L_new, {D}); "
                             f"got key {tuple(key.shape)} and value {tuple(value.shape)}")
        if key.dtype != self.dtype or value.dtype != self.dtype:
            raise ValueError(f"key and value must have the cache's dtype {self.dtype}; got {key.dtype} and "
                             f"{value.dtype}")
        end = self.length + key.shape[2]
        if end > self.max_len:
            raise ValueError(f"the KV cache is full: {self.length} positions cached + {key.shape[2]} new > "
                             f"max_len={self.max_len}")
        self.keys[layer][:, :, self.length:end] = key                          # (B, H_kv, L_new, D) written
        self.values[layer][:, :, self.length:end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]    # (B, H_kv, length + L_new, D)

    def advance(self, num_new):
        """Count ``num_new`` more positions as filled, once per step after every layer has appended.

        Raises:
            ValueError: ``num_new`` < 0 or ``length + num_new > max_len``.
        """
        if num_new < 0 or self.length + num_new > self.max_len:
            raise ValueError(f"cannot advance a KV cache of length {self.length} by {num_new}: "
                             f"max_len={self.max_len}")
        self.length += num_new


def cached_attention(query, key_all, value_all, past_length):
    """Attention of the new queries over every cached key, with the causal mask aligned bottom-right.

    ``attn_output = softmax(q K^T / sqrt(D) + mask) V`` where the new query i sits at position
    ``p_i = past_length + i`` and **may attend to keys 0 .. p_i** (``attn_mask[i, j] = j <= p_i``,
    True = may attend): each new query sees the whole past and itself, never a later new position.

    The classic bug: ``scaled_dot_product_attention(q, key_all, value_all, is_causal=True)`` builds
    ``ones(L_new, S).tril()``, aligned **top-left**, so query i sees keys 0..i. For one new query
    against S cached keys, it sees key 0 only. It is right only when ``past_length == 0`` (prefill).
    PyTorch documents this alignment; ``torch.nn.attention.bias.causal_lower_right`` is its bottom-right
    variant.

    Args:
        query: (B, H, L_new, D) float tensor, the new positions' queries (any batch dims ``...`` work).
        key_all: (B, H, S, D), the keys of positions 0 .. S-1, S = past_length + L_new, same dtype
            (grouped-query attention: repeat the H_kv cached heads to H first).
        value_all: (B, H, S, Dv).
        past_length: int >= 0, positions cached before this step (``KVCache.length``).

    Returns:
        attn_output: (B, H, L_new, Dv), the query's dtype.

    Raises:
        ValueError: S != past_length + L_new, or shapes ``scaled_dot_product_attention`` rejects.

    References: Vaswani et al. 2017, section 3.2.3 (masked decoder self-attention); Pope et al. 2022,
    "Efficiently Scaling Transformer Inference" (incremental decoding). Equal to the last L_new rows
    of causal attention over all S positions (tests/test_kv_cache.py).

    >>> q, k = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 6, 4)
    >>> cached_attention(q, k, k, past_length=5).shape
    torch.Size([1, 2, 1, 4])
    """
    L_new, S = query.shape[-2], key_all.shape[-2]
    if S != past_length + L_new:
        raise ValueError(f"key_all must hold past_length + L_new = {past_length} + {L_new} positions; "
                         f"got S = {S} (key_all {tuple(key_all.shape)})")
    positions = past_length + torch.arange(L_new, device=query.device)         # (L_new,) p_i of each new query
    attn_mask = torch.arange(S, device=query.device) <= positions[:, None]     # (L_new, S), True = may attend
    return scaled_dot_product_attention(query, key_all, value_all, attn_mask=attn_mask)  # (..., L_new, Dv)


def cached_self_attention(attn, x, cache, layer):
    """Causal self-attention of the new positions ``x`` over themselves and the cached past, with the
    projections of ``attn`` (a ``MultiHeadAttention``); appends their keys and values to ``cache``.

    Equal to the last L_new rows of ``attn(x_all, is_causal=True)[0]`` for ``x_all`` the (B, S, E) inputs
    of all positions so far (tests/test_kv_cache.py); attention dropout is not applied (decode in eval mode).

    Args:
        attn: ``MultiHeadAttention`` (E, H). x: (B, L_new, E) inputs at positions ``cache.length ..``.
        cache: ``KVCache`` with H_kv = H and D = E / H. layer: this attention's layer in the cache.

    Returns:
        attn_output: (B, L_new, E).

    Raises:
        ValueError: from ``KVCache.append`` (full cache, shapes or dtype that disagree).
    """
    B, L_new, E = x.shape
    H, D = attn.num_heads, attn.head_dim
    q = attn.q_proj(x).view(B, L_new, H, D).transpose(1, 2)                   # (B, L_new, E) -> (B, H, L_new, D)
    k = attn.k_proj(x).view(B, L_new, H, D).transpose(1, 2)                   # (B, L_new, E) -> (B, H, L_new, D)
    v = attn.v_proj(x).view(B, L_new, H, D).transpose(1, 2)                   # (B, L_new, E) -> (B, H, L_new, D)
    key_all, value_all = cache.append(layer, k, v)                            # (B, H, past + L_new, D) each
    context = cached_attention(q, key_all, value_all, cache.length)           # (B, H, L_new, D)
    return attn.out_proj(context.transpose(1, 2).reshape(B, L_new, E))        # (B, H, L_new, D) -> (B, L_new, E)
