"""FlashAttention's idea: the online softmax, and exact attention computed tile by tile.

Shape legend: B batch, L query length, S key/value length, H heads, D head_dim, Dv value size;
Lb and Sb the lengths of one query block and one key block. ``...`` stands for any batch dims.

A softmax row needs its maximum and its sum before any weight is known, so plain attention writes the
whole ``attn_scores (..., L, S)`` matrix. The *online softmax* (Milakov & Gimelshein 2018) reads the
scores block by block and keeps, per row, a running max ``m`` and a running sum ``l`` of
``exp(score - m)``; when the max grows from m to m', everything summed so far is rescaled by
``exp(m - m')``. FlashAttention (Dao et al. 2022; Dao 2023) keeps a running output ``acc`` as well and
rescales it the same way, so no (L, S) matrix ever exists:

    m, l, acc = -inf, 0, 0                                   (online_softmax_init)
    for each key block j:                                    (online_softmax_update)
        m_new = max(m, rowmax(attn_scores_j));  p = exp(attn_scores_j - m_new)
        l   = exp(m - m_new) * l   + rowsum(p)
        acc = exp(m - m_new) * acc + p @ value_j;  m = m_new
    attn_output = acc / l                                    (online_softmax_finish)

**Mask polarity.** ``attn_mask`` follows ``torch.nn.functional.scaled_dot_product_attention``, as in
``attn_course.attention``: a bool ``True`` means *may attend*; a float mask is added to the scores.
"""
# ruff: noqa: E741 -- `l` is the running sum, the papers' ell (Milakov & Gimelshein 2018; Dao et al. 2022)
import math
import os

import torch
from torch._C._profiler import _ExtraFields_Allocation
from torch.profiler import ProfilerActivity

from .scoring import validate_query_key


def _check_block(name, size):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name} must be an int >= 1; got {size!r}")


def online_softmax_stats(x, block_size):
    """The softmax statistics of each row, read in one pass over blocks: running max ``m`` and sum ``l``.

    ``m = max_j x_j`` and ``l = sum_j exp(x_j - m)``, so ``m + log(l) == torch.logsumexp(x, -1)``.
    Each block of ``block_size`` entries raises the max from m to m' and rescales the old sum by
    ``exp(m - m')``. A row whose entries are all ``-inf`` ends with ``m = -inf`` and ``l = 0``.

    Args:
        x: float tensor (..., S).
        block_size: entries read per step, an int >= 1 (``block_size >= S`` is one step).

    Returns:
        (m, l): two tensors (..., 1), the dtype of ``x``.

    Raises:
        ValueError: ``x`` is not a floating-point tensor with at least 1 dim, or ``block_size < 1``.

    References: Milakov & Gimelshein 2018, "Online normalizer calculation for softmax", Algorithm 3
    (block_size = 1 there), first loop.

    >>> online_softmax_stats(torch.tensor([1.0, 3.0, 2.0]), block_size=1)[0]
    tensor([3.])
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor (..., S); got "
                         f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__} "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
    _check_block("block_size", block_size)
    m = x.new_full((*x.shape[:-1], 1), float("-inf"))                   # (..., 1) running max
    l = x.new_zeros((*x.shape[:-1], 1))                                 # (..., 1) running sum of exp(x - m)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]                        # (..., S) -> (..., Sb)
        m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))      # (..., 1)
        m_safe = m_new.masked_fill(torch.isneginf(m_new), 0.0)         # all -inf so far: subtract 0, not -inf
        l = torch.exp(m - m_safe) * l + torch.exp(block - m_safe).sum(dim=-1, keepdim=True)  # (..., 1)
        m = m_new
    return m, l


def online_softmax(x, block_size):
    """Softmax over the last axis with the online normaliser: ``exp(x - m) / l``, (m, l) read in one pass.

    The safe softmax reads each row twice before writing (once for the max, once for the sum); the
    online softmax reads it once (``online_softmax_stats``), then writes the weights. A row of all
    ``-inf`` gives NaN (0 / 0), as ``torch.softmax`` does; ``masked_softmax`` turns such rows into zeros.

    Args:
        x: float tensor (..., S).
        block_size: entries read per step of the first pass, an int >= 1.

    Returns:
        (..., S): equal to ``torch.softmax(x, dim=-1)`` (tests/test_flash.py).

    Raises:
        ValueError: as ``online_softmax_stats``.

    References: Milakov & Gimelshein 2018, Algorithm 3.

    >>> online_softmax(torch.tensor([0.0, 0.0, 0.0, 0.0]), block_size=3)
    tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    m, l = online_softmax_stats(x, block_size)                          # (..., 1) each
    return torch.exp(x - m) / l                                         # (..., S)


def online_softmax_init(shape, Dv, dtype=torch.float32, device=None):
    """The state before the first key block: ``m = -inf``, ``l = 0``, ``acc = 0``.

    Args:
        shape: the rows, ``(..., L)`` (a query block's shape without its last dim).
        Dv: the value size.

    Returns:
        (m (..., L, 1), l (..., L, 1), acc (..., L, Dv)), in ``dtype`` on ``device``.

    References: Dao 2023, "FlashAttention-2", Algorithm 1, line 5.

    >>> [t.shape for t in online_softmax_init((2, 3), Dv=4)]
    [torch.Size([2, 3, 1]), torch.Size([2, 3, 1]), torch.Size([2, 3, 4])]
    """
    m = torch.full((*shape, 1), float("-inf"), dtype=dtype, device=device)   # (..., L, 1)
    l = torch.zeros((*shape, 1), dtype=dtype, device=device)                 # (..., L, 1)
    acc = torch.zeros((*shape, Dv), dtype=dtype, device=device)              # (..., L, Dv)
    return m, l, acc


def online_softmax_update(m, l, acc, attn_scores, value):
    """One key block of FlashAttention's inner loop: fold a block of scores and values into (m, l, acc).

    ``m_new = max(m, rowmax(attn_scores))``, ``p = exp(attn_scores - m_new)``,
    ``l_new = exp(m - m_new) * l + rowsum(p)``, ``acc_new = exp(m - m_new) * acc + p @ value``.
    When the running max grows, the sum and the output gathered so far were computed against the old
    max: both are multiplied by ``exp(m - m_new)`` (< 1) before this block is added. After the last
    block ``attn_output = acc / l`` (``online_softmax_finish``). Start from ``online_softmax_init``:
    m = -inf, l = 0, acc = 0.

    A row whose scores so far are all ``-inf`` (masked) keeps m = -inf, l = 0 and acc = 0, without NaN:
    where m_new is -inf the exponents subtract 0 instead (``exp(-inf - (-inf))`` would be NaN).

    Args:
        m: running max (..., L, 1); -inf where no key was allowed so far.
        l: running sum of ``exp(score - m)`` (..., L, 1).
        acc: unnormalised output, running sum of ``exp(score - m) * value`` (..., L, Dv).
        attn_scores: this block's scores (..., L, Sb), already scaled and masked (-inf = may not attend).
        value: this block's values (..., Sb, Dv).

    Returns:
        (m_new (..., L, 1), l_new (..., L, 1), acc_new (..., L, Dv)).

    References: Dao et al. 2022, "FlashAttention", Algorithm 1, lines 9-12, in the unnormalised form
    of Dao 2023, "FlashAttention-2", Algorithm 1, lines 9-10 (division by l once, at the end, line 12).

    >>> m, l, acc = online_softmax_init((1,), Dv=1)
    >>> m, l, acc = online_softmax_update(m, l, acc, torch.tensor([[0.0]]), torch.tensor([[2.0]]))
    >>> m, l, acc = online_softmax_update(m, l, acc, torch.tensor([[0.0]]), torch.tensor([[4.0]]))
    >>> acc / l
    tensor([[3.]])
    """
    m_new = torch.maximum(m, attn_scores.amax(dim=-1, keepdim=True))   # (..., L, 1)
    m_safe = m_new.masked_fill(torch.isneginf(m_new), 0.0)             # no key so far: subtract 0, not -inf
    rescale = torch.exp(m - m_safe)                                     # (..., L, 1), exp(old max - new max)
    p = torch.exp(attn_scores - m_safe)                                 # (..., L, Sb) unnormalised weights
    l_new = rescale * l + p.sum(dim=-1, keepdim=True)                   # (..., L, 1)
    acc_new = rescale * acc + p @ value                                 # (..., L, Sb) @ (..., Sb, Dv) -> (..., L, Dv)
    return m_new, l_new, acc_new


def online_softmax_finish(l, acc):
    """The attention output from the final state: ``acc / l``, and zeros in rows with no allowed key (l = 0).

    Args:
        l: (..., L, 1); acc: (..., L, Dv).

    Returns:
        attn_output: (..., L, Dv).

    References: Dao 2023, Algorithm 1, line 12.
    """
    return acc / torch.where(l > 0, l, 1.0)                             # (..., L, Dv); acc is 0 where l is 0


def _mask_tile(attn_mask, rows, cols):
    """The (..., Lb, Sb) part of a mask broadcastable to (..., L, S); a size-1 axis is kept whole."""
    attn_mask = attn_mask if attn_mask.shape[-2] == 1 else attn_mask[..., rows, :]
    return attn_mask if attn_mask.shape[-1] == 1 else attn_mask[..., cols]


def tiled_attention(query, key, value, attn_mask=None, is_causal=False, scale=None, block_q=64, block_k=64):
    """Exact scaled dot-product attention, computed over (block_q, block_k) tiles with the online softmax.

    For each block of ``block_q`` queries, the key blocks are folded in one at a time by
    ``online_softmax_update``; at most one (..., block_q, block_k) tile of scores exists at a time,
    never the (..., L, S) matrix, so the extra memory grows with L * block_k, not with L * S. With
    ``is_causal`` the key blocks entirely above the diagonal are skipped, as FlashAttention does.
    Gradients flow through the tiles by autograd, which saves every tile's weights for the backward
    pass (FlashAttention recomputes them instead); the memory saving holds for the forward pass.

    Args:
        query: (..., L, D) float tensor.
        key: (..., S, D), the batch dims of ``query``.
        value: (..., S, Dv).
        attn_mask: None, a bool tensor broadcastable to (..., L, S) with **True = may attend**, or a
            float tensor added to the scores; sliced per tile.
        is_causal: query i attends to keys 0..i (top-left aligned, as PyTorch's SDPA); not together
            with ``attn_mask``.
        scale: score multiplier; ``None`` means ``1 / sqrt(D)``.
        block_q, block_k: queries and keys per tile, ints >= 1 (need not divide L or S).

    Returns:
        attn_output: (..., L, Dv). A query with no allowed key gets zeros, as in
        ``attn_course.attention.scaled_dot_product_attention``.

    Raises:
        ValueError: ``query``/``key`` rejected by ``validate_query_key``; ``value`` not (..., S, Dv); an
            ``attn_mask`` that is not bool or float or does not broadcast to (..., L, S), or that comes
            with ``is_causal``; ``block_q`` or ``block_k`` not an int >= 1.

    References: Dao et al. 2022, "FlashAttention", Algorithm 1; Dao 2023, "FlashAttention-2",
    Algorithm 1 and section 3.1.1 (causal block skipping). Numerically equal to
    ``torch.nn.functional.scaled_dot_product_attention``, outputs and gradients (tests/test_flash.py).

    >>> q = k = v = torch.ones(1, 5, 4)
    >>> tiled_attention(q, k, v, is_causal=True, block_q=2, block_k=2).shape
    torch.Size([1, 5, 4])
    """
    validate_query_key(query, key, same_dim=True)
    if not isinstance(value, torch.Tensor) or value.dim() < 2 or key.shape[:-1] != value.shape[:-1]:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"key (..., S, D) and value (..., S, Dv) must share batch dims and S; got key "
                         f"{tuple(key.shape)} and value {got}")
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    *batch, L, D = query.shape
    S, Dv = value.shape[-2], value.shape[-1]
    if attn_mask is not None:
        if is_causal:
            raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise ValueError(f"attn_mask must be bool (True = may attend) or float (added); got {attn_mask.dtype}")
        try:
            fits = torch.broadcast_shapes(attn_mask.shape, (*batch, L, S)) == (*batch, L, S)
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"attn_mask must broadcast to (..., L, S) = {(*batch, L, S)}; got "
                             f"{tuple(attn_mask.shape)}")
        attn_mask = attn_mask.reshape((1,) * (2 - attn_mask.dim()) + attn_mask.shape)  # at least (L or 1, S or 1)
    q = query * (1.0 / math.sqrt(D) if scale is None else scale)       # (..., L, D), scaled once, not per tile
    outputs = []
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        q_blk = q[..., i0:i1, :]                                        # (..., L, D) -> (..., Lb, D)
        m, l, acc = online_softmax_init(q_blk.shape[:-1], Dv, dtype=query.dtype, device=query.device)
        for j0 in range(0, min(S, i1) if is_causal else S, block_k):    # causal: no key block past the last query
            j1 = min(j0 + block_k, S)
            attn_scores = q_blk @ key[..., j0:j1, :].transpose(-2, -1)  # (..., Lb, D) @ (..., D, Sb) -> (..., Lb, Sb)
            if is_causal and j1 - 1 > i0:                               # a tile the diagonal crosses
                rows, cols = torch.arange(i0, i1, device=query.device), torch.arange(j0, j1, device=query.device)
                allowed = rows[:, None] >= cols                         # (Lb, Sb), True where key j <= query i
                attn_scores = attn_scores.masked_fill(~allowed, float("-inf"))
            elif attn_mask is not None:
                tile = _mask_tile(attn_mask, slice(i0, i1), slice(j0, j1))              # (..., Lb, Sb)
                attn_scores = (attn_scores.masked_fill(~tile, float("-inf")) if tile.dtype == torch.bool
                               else attn_scores + tile)
            m, l, acc = online_softmax_update(m, l, acc, attn_scores, value[..., j0:j1, :])
        outputs.append(online_softmax_finish(l, acc))                   # (..., Lb, Dv)
    if not outputs:                                                     # L = 0
        return query.new_zeros((*batch, 0, Dv))
    return torch.cat(outputs, dim=-2)                                   # Lb blocks -> (..., L, Dv)


def _allocations(events, found):
    """Append (time_ns, address, +bytes or -bytes) of every CPU allocation and free among profiler ``events``."""
    for event in events:
        fields = event.extra_fields
        if isinstance(fields, _ExtraFields_Allocation):
            if fields.device.type == "cpu":
                found.append((event.start_time_ns, fields.ptr, fields.alloc_size))
        else:                                                           # a record_function scope of fn's
            _allocations(event.children, found)
    return found


def peak_memory(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on the CPU and measure the most tensor bytes it had allocated at once.

    ``peak_bytes`` is the maximum, over the run, of the bytes that ``fn`` has allocated and not yet
    freed: the memory it needs on top of what existed before (its result, alive at the end, included).

    How: with ``profile_memory`` on, PyTorch's CPU allocator reports every allocation and every free,
    with its address and size, to the profiler. Walking them in time order, adding the size of each
    allocation and subtracting it again when that address is freed, gives the bytes alive at every
    moment; the peak is their maximum. Frees of tensors that existed before ``fn`` match no allocation
    and are ignored. Only these events are recorded, not one per operator (``RecordScope.USER_SCOPE``),
    so the bookkeeping costs about as much again as the run itself for a loop of small tiles (each
    allocation is an event). The bytes are exact and repeat to the byte for a given number of threads
    (the fused SDPA allocates per-thread scratch). Unlike a ``TorchDispatchMode`` that watches operator
    outputs, this sees the scratch buffers kernels allocate inside; unlike the peak RSS it does not
    depend on what malloc keeps. It misses memory that libraries take outside PyTorch's allocator
    (BLAS) and Python objects.

    Args:
        fn: a callable; ``args`` and ``kwargs`` are passed to it.

    Returns:
        (result, peak_bytes): what ``fn`` returned, and an int >= 0.

    Raises:
        RuntimeError: a profiler is already running.

    Sets ``KINETO_LOG_LEVEL=99`` unless it is set, so that the profiler prints no start and stop lines on
    stderr (Jupyter would show them under the cell).

    >>> peak_memory(torch.zeros, 1000, 1000)[1]
    4000000
    """
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    activities = {ProfilerActivity.CPU}
    try:                                            # the allocator's events only, not one per operator
        from torch._C._profiler import RecordScope, _ExperimentalConfig
        from torch.autograd import ProfilerConfig, ProfilerState, _disable_profiler, _enable_profiler, _prepare_profiler
        config = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())
        _prepare_profiler(config, activities)
        _enable_profiler(config, activities, {RecordScope.USER_SCOPE})
    except (ImportError, TypeError):                # another PyTorch: the public profiler, the same events, slower
        with torch.profiler.profile(activities=list(activities), profile_memory=True) as prof:
            result = fn(*args, **kwargs)
        events = prof.profiler.kineto_results.experimental_event_tree()
    else:
        try:
            result = fn(*args, **kwargs)
        finally:
            events = _disable_profiler().experimental_event_tree()
    alive, peak, sizes = 0, 0, {}
    for _, address, nbytes in sorted(_allocations(events, []), key=lambda event: event[0]):
        if nbytes > 0:
            sizes[address] = nbytes
            alive += nbytes
            peak = max(peak, alive)
        else:
            alive -= sizes.pop(address, 0)                              # 0: allocated before fn started
    return result, peak
