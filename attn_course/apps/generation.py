"""Text generation with a small causal self-attention model: a character-level mini GPT.

``CharTransformer`` is the course's own parts put together as a decoder-only language model:
character embedding + positional encoding -> N pre-LN ``TransformerBlock`` s with a causal mask ->
LayerNorm -> a linear layer to one logit per character. Trained with next-character cross-entropy
(``train_char_model``), measured in bits per character against n-gram baselines (``ngram_bpc``),
sampled with a softmax temperature and top-k (``sample_next``, ``generate``), probed for causality
(``causality_probe``), and read per head (``attention_by_offset``). The checks of the lesson's
exercises are in ``attn_course.checks.generation``; its sampling widget in
``attn_course.widgets.generation``. Lesson 16 decodes it incrementally with a KV cache
(``new_cache``, ``decode_step``, ``generate(use_cache=True)``, ``decoding_speed``; the cache itself
is ``attn_course.kv_cache``).

Shape legend: B batch, L sequence length (context), E d_model (= H*D), H heads, D head_dim, V vocabulary.

**Mask polarity.** The blocks' ``attn_mask`` is ``nn.TransformerEncoderLayer``'s: **True = ignore**.
The causal mask given to them is ``triu(diagonal=1)``, True above the diagonal: position i ignores
i+1..L-1 and attends to 0..i (the complement of SDPA's ``causal_mask(L)``).

References: Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training"
(decoder-only transformer, section 3.1); Vaswani et al. 2017, section 3.2.3 (masking "illegal
connections" in the decoder); Karpathy, nanoGPT and "char-rnn" (character-level models of
Shakespeare); Holtzman et al. 2020 (top-k and temperature sampling); Shannon 1951 (n-gram baselines
and bits per character).
"""
import math
import re
import time

import torch
from torch import nn
from torch.nn import functional as F

from ..kv_cache import KVCache, cached_self_attention
from ..training import fit, replayable
from ..transformer import LearnedPositionalEncoding, SinusoidalPositionalEncoding, TransformerBlock

LOG2 = math.log(2.0)


class CharTransformer(nn.Module):
    """A decoder-only transformer over characters: logits for the next character at every position.

    ``h_0 = Embed(ids) + PE``; ``h_n = Block_n(h_{n-1}, attn_mask=causal)``; ``logits = W LN(h_N) + b``.
    Position l's logits depend on ``ids[:, :l+1]`` only (the causal mask), so they predict ``ids[:, l+1]``.

    Args:
        vocab_size: V. d_model: E. num_heads: H (E divisible by H). num_layers: N blocks.
        max_len: the longest context accepted (L <= max_len). d_ff: the feed-forward width (4E default).
        positional: ``"learned"`` or ``"sinusoidal"`` (``attn_course.transformer``).
        dropout: as in ``TransformerBlock`` (0 by default: the lesson trains too briefly to overfit).

    Forward args:
        ids: (B, L) int64 character ids, L <= max_len.
        need_weights: also return each block's attention weights.

    Returns:
        logits (B, L, V), or ``(logits, [attn_weights (B, H, L, L) per block])``.

    Raises:
        ValueError: ``ids`` not 2-D or L > max_len; ``positional`` unknown.

    References: Radford et al. 2018, section 3.1; Vaswani et al. 2017, sections 3.2.3 and 3.5;
    pre-LN as in GPT-2 (Radford et al. 2019) and Xiong et al. 2020.

    >>> model = CharTransformer(vocab_size=10, d_model=16, num_heads=2, num_layers=1, max_len=8)
    >>> model(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 10])
    """

    def __init__(self, vocab_size, d_model=64, num_heads=4, num_layers=2, max_len=64, d_ff=None,
                 positional="learned", dropout=0.0):
        super().__init__()
        positions = {"learned": LearnedPositionalEncoding, "sinusoidal": SinusoidalPositionalEncoding}
        if positional not in positions:
            raise ValueError(f"positional must be 'learned' or 'sinusoidal'; got {positional!r}")
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positional = positions[positional](max_len, d_model)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff or 4 * d_model, dropout=dropout,
                                                     norm_first=True, activation="gelu")
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)
        self.apply(_init_weights)

    def forward(self, ids, need_weights=False):
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have shape (B, L) with L <= max_len={self.max_len}; got {tuple(ids.shape)}")
        L = ids.shape[1]
        attn_mask = torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(diagonal=1)  # (L, L), True = the future: ignore
        x = self.positional(self.embedding(ids))                      # (B, L) -> (B, L, E)
        all_weights = []
        for block in self.blocks:
            x, attn_weights = block(x, attn_mask=attn_mask, need_weights=True)   # (B, L, E), (B, H, L, L)
            all_weights.append(attn_weights)
        logits = self.lm_head(self.norm(x))                           # (B, L, E) -> (B, L, V)
        return (logits, all_weights) if need_weights else logits


def _init_weights(module):
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases (embeddings and linear layers)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def random_windows(ids, block_size, batch_size, generator):
    """A batch of training windows: ``(inputs, targets)``, each (B, block_size), targets shifted by one.

    ``inputs[b] = ids[s : s + block_size]``, ``targets[b] = ids[s + 1 : s + block_size + 1]`` for a
    start s drawn uniformly (from ``generator``) in 0 .. len(ids) - block_size - 1.
    """
    starts = torch.randint(0, len(ids) - block_size, (batch_size,), generator=generator)   # (B,)
    return windows(ids, starts, block_size)


def windows(ids, starts, block_size):
    """The windows that start at ``starts`` (B,) int64: ``(inputs, targets)``, each (B, block_size),
    ``inputs[b] = ids[s_b : s_b + block_size]`` and ``targets`` the same shifted by one."""
    offsets = torch.arange(block_size, device=starts.device)                             # (L,)
    inputs = ids[starts[:, None] + offsets]                                               # (B, L)
    return inputs, ids[starts[:, None] + offsets + 1]                                     # (B, L) each


def lm_loss(logits, targets):
    """Mean next-character cross-entropy in nats: logits (B, L, V), targets (B, L) -> scalar."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))   # (B*L, V), (B*L,)


@replayable
def train_char_model(model, train_ids, steps=600, block_size=64, batch_size=32, lr=3e-3, seed=0, progress=True):
    """Train ``model`` on random windows of ``train_ids`` with AdamW; returns the training loss per step.

    Each step's ``batch_size`` window starts are drawn as ``random_windows`` draws them, from
    ``torch.Generator().manual_seed(seed)``; gradients are clipped to norm 1. The learning rate warms up
    linearly over the first 5 % of the steps, then decays to 10 % on a cosine. The windows go to the
    model's device. ``progress`` shows a tqdm bar (``disable=None`` hides it where there is no terminal).
    """
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * s / steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def batch_loss(starts):
        inputs, targets = windows(train_ids, starts, block_size)                # (B, L) each
        return lm_loss(model(inputs.to(device)), targets.to(device))           # logits (B, L, V)

    batches = [torch.randint(0, len(train_ids) - block_size, (batch_size,), generator=g) for _ in range(steps)]
    return fit(model, batches, batch_loss, opt, scheduler=sched, clip_grad_norm=1.0, progress=progress).step_loss


@torch.no_grad()
def evaluate_bpc(model, ids, block_size=64, batch_size=64, device="cpu"):
    """Bits per character of ``model`` on ``ids``: mean next-character cross-entropy / ln 2.

    The text is cut into consecutive windows of ``block_size + 1`` characters overlapping by one; every
    character after the first is predicted once, from the characters before it in its window (so from
    0 .. block_size - 1 characters of context).
    """
    model.eval()
    n = (len(ids) - 1) // block_size
    windows = ids[: n * block_size + 1]
    inputs = windows[:-1].view(n, block_size)                        # (n, L)
    targets = windows[1:].view(n, block_size)                        # (n, L)
    total = 0.0
    for i in range(0, n, batch_size):
        logits = model(inputs[i:i + batch_size].to(device))          # (b, L, V)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                 targets[i:i + batch_size].reshape(-1).to(device), reduction="sum").item()
    return total / targets.numel() / LOG2


@torch.no_grad()
def bpc_by_position(model, ids, block_size=64, stride=None, batch_size=64, device="cpu"):
    """Bits per character at each position of the context window: (block_size,) float64.

    Windows of ``block_size + 1`` characters start every ``stride`` characters (default ``block_size``:
    the windows of ``evaluate_bpc``, whose mean over t this then equals); a smaller stride averages
    over more windows, each character then being predicted at several positions. Entry t is the mean
    of ``-log2 p(x_{t+1} | x_0..x_t)``, the prediction made with t + 1 characters of context. A curve
    that keeps falling with t is evidence that the model uses long context; a count model of order n
    is flat from t = n - 2 on.

    Raises:
        ValueError: ``stride`` < 1 or a text shorter than one window.
    """
    stride = block_size if stride is None else stride
    if stride < 1 or len(ids) < block_size + 1:
        raise ValueError(f"need stride >= 1 and at least block_size + 1 = {block_size + 1} ids; got stride "
                         f"{stride}, {len(ids)} ids")
    model.eval()
    starts = torch.arange(0, len(ids) - block_size, stride)                               # (n,)
    total = torch.zeros(block_size, dtype=torch.float64)
    for i in range(0, len(starts), batch_size):
        inputs, targets = windows(ids, starts[i:i + batch_size], block_size)             # (b, L) each
        logits = model(inputs.to(device)).float()                                         # (b, L, V)
        nll = F.cross_entropy(logits.transpose(1, 2), targets.to(device), reduction="none")   # (b, L)
        total += nll.sum(0).double().cpu()
    return total / len(starts) / LOG2


def ngram_bpc(train_ids, eval_ids, vocab_size, order=2, alpha=0.1):
    """Bits per character of an n-gram character model with add-alpha smoothing, on ``eval_ids``.

    ``p(c | h) = (count(h c) + alpha) / (count(h) + alpha V)`` with h the previous ``order - 1``
    characters (order 1: unigram, no history; order 2: bigram). Counts come from ``train_ids``; the
    first ``order - 1`` characters of ``eval_ids`` are context only. Only the n-grams that occur are
    stored (sorted codes and ``torch.searchsorted``), so orders of 5 and more fit in memory; computed
    in float64.

    Raises:
        ValueError: ``order`` < 1, ``alpha`` <= 0, or ``vocab_size ** order`` beyond int64.
    """
    if order < 1 or not alpha > 0:
        raise ValueError(f"order must be >= 1 and alpha > 0; got order={order}, alpha={alpha}")
    V, k = vocab_size, order - 1
    if V ** order >= 2 ** 62:
        raise ValueError(f"vocab_size ** order = {V}^{order} does not fit the int64 n-gram codes")

    def codes(ids):                                                  # (N,) -> (N - k,) n-gram codes
        code = torch.zeros(len(ids) - k, dtype=torch.long)
        for j in range(order):
            code = code * V + ids[j: len(ids) - k + j]
        return code

    def count(table, keys):                                          # occurrences of each key in table
        seen, counts = torch.unique(table, return_counts=True)      # sorted codes, their counts
        at = torch.searchsorted(seen, keys).clamp(max=len(seen) - 1)
        return torch.where(seen[at] == keys, counts[at], 0).double()

    train_codes, eval_codes = codes(train_ids), codes(eval_ids)
    c_full = count(train_codes, eval_codes)                          # count(h c)
    c_hist = count(train_codes // V, eval_codes // V)                # count(h): h followed by anything
    probs = (c_full + alpha) / (c_hist + alpha * V)
    return -probs.log2().mean().item()


class NGramModel:
    """An n-gram character model with add-alpha smoothing that can be sampled like the transformer.

    ``logits(history)`` gives ``log p(c | h)`` for every character c (the probabilities of
    ``ngram_bpc``), so ``sample_next`` applies the same temperature and top-k to both models; with
    ``generate(ngram, ids, ...)`` it writes text (``max_len`` is ``order - 1``: it reads that many ids).

    Args:
        train_ids: (N,) int64 training text; vocab_size: V; order: n >= 1; alpha: > 0.

    Raises:
        ValueError: as ``ngram_bpc``.
    """

    def __init__(self, train_ids, vocab_size, order=3, alpha=0.1):
        if order < 1 or not alpha > 0 or vocab_size ** order >= 2 ** 62:
            raise ValueError(f"need order >= 1, alpha > 0 and V^order < 2^62; got order={order}, alpha={alpha}")
        self.V, self.order, self.alpha, self.max_len = vocab_size, order, alpha, order - 1
        code = torch.zeros(len(train_ids) - order + 1, dtype=torch.long)
        for j in range(order):
            code = code * vocab_size + train_ids[j: len(train_ids) - order + 1 + j]
        self.codes, self.counts = torch.unique(code, return_counts=True)                  # sorted n-gram codes

    def eval(self):
        return self

    def logits(self, history):
        """``history`` (B, k) int64 with k >= order - 1 -> (B, V) float32 log-probabilities of the next id."""
        B, V, k = history.shape[0], self.V, self.order - 1
        h = torch.zeros(B, dtype=torch.long)
        for j in range(k):
            h = h * V + history[:, history.shape[1] - k + j]
        keys = h[:, None] * V + torch.arange(V)                                           # (B, V) codes of h c
        at = torch.searchsorted(self.codes, keys).clamp(max=len(self.codes) - 1)
        c = torch.where(self.codes[at] == keys, self.counts[at], 0).double()              # (B, V) count(h c)
        probs = (c + self.alpha) / (c.sum(-1, keepdim=True) + self.alpha * V)
        return probs.log().float()

    def __call__(self, ids):
        """(B, L) ids -> (B, L, V) logits; only the last position is computed (what ``generate`` reads)."""
        out = torch.zeros(ids.shape[0], ids.shape[1], self.V)
        out[:, -1] = self.logits(ids)
        return out


def repetition_rate(text, n=2):
    """The share of a text's word n-grams that already occurred earlier in the same text (0 = none repeats).

    Words are lower-case letters and apostrophes (``re.findall(r"[a-z']+", text.lower())``). Returns nan
    for a text with no n-gram. A measure of degenerate repetition in generated text (Holtzman et al. 2020
    report repetition of n-grams; Welleck et al. 2020, "seq-rep-n", is 1 - distinct / total).

    >>> repetition_rate("the cat and the cat and the dog")
    0.42857142857142855
    """
    words = re.findall(r"[a-z']+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return float("nan")
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """Draw one id per row from ``softmax(logits / temperature)``, keeping only the ``top_k`` largest logits.

    ``p_i ∝ exp(z_i / T)`` for the k largest logits ``z_i`` of the row, 0 for the others; then
    ``torch.multinomial(p, 1, generator=generator)``. T < 1 sharpens (T -> 0: argmax), T > 1 flattens.

    Args:
        logits: (B, V) float tensor, one row of next-character logits per sequence.
        temperature: T > 0.
        top_k: None (keep all V) or an int in 1..V; ties at the k-th value are all kept.
        generator: a ``torch.Generator`` on the logits' device, for reproducible draws.

    Returns:
        ids: (B,) int64 tensor of sampled ids.

    Raises:
        ValueError: ``logits`` not 2-D, ``temperature`` <= 0, or ``top_k`` outside 1..V.

    References: Hinton et al. 2015, eq. 1 (temperature); Fan et al. 2018 and Holtzman et al. 2020
    (top-k sampling).

    >>> sample_next(torch.tensor([[0.0, 5.0, 1.0]]), top_k=1)
    tensor([1])
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V); got {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    V = logits.shape[-1]
    scaled = logits / temperature                                             # (B, V)
    if top_k is not None:
        if not 1 <= top_k <= V:
            raise ValueError(f"top_k must be None or in 1..{V}; got {top_k}")
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]                 # (B, 1), k-th largest
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))              # drop all but the top k
    probs = torch.softmax(scaled, dim=-1)                                     # (B, V), rows sum to 1
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)       # (B, 1) -> (B,)


@torch.no_grad()
def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, generator=None, use_cache=False):
    """Extend ``ids`` by ``max_new_tokens`` sampled characters, one at a time (autoregressive decoding).

    At each step the model reads the last ``model.max_len`` ids, and ``sample_next`` draws the next id
    from the logits of the last position. With ``use_cache=True`` (a ``CharTransformer``) the first step
    reads the prompt into a KV cache and every later step reads only the id sampled last
    (``decode_step``): the same logits up to float rounding, so the same ids with the same ``generator``.

    Args:
        model: a ``CharTransformer`` (or any module mapping (B, L) ids to (B, L, V) logits with ``max_len``).
        ids: (B, L0) int64 prompt ids. generator: a seeded ``torch.Generator`` for reproducible text.
        use_cache: decode with a KV cache (needs ``L0 + max_new_tokens - 1 <= model.max_len``).

    Returns:
        (B, L0 + max_new_tokens) int64 ids: the prompt followed by the sampled characters.

    Raises:
        ValueError: ``use_cache`` and ``L0 + max_new_tokens - 1 > model.max_len``. Without a cache the
            window slides on past ``max_len``; a cache cannot slide: each move puts every id at a new
            position, so every cached key and value would change (and learned positions stop at max_len).
    """
    model.eval()
    cache, new_ids = None, ids
    if use_cache and max_new_tokens > 0:
        needed = ids.shape[1] + max_new_tokens - 1                            # positions the model reads
        if needed > model.max_len:
            raise ValueError(f"generate(use_cache=True) reads prompt + max_new_tokens - 1 = {needed} positions, "
                             f"more than max_len={model.max_len}; shorten it or use use_cache=False (a sliding window)")
        cache = new_cache(model, ids.shape[0], max_len=needed)
    for _ in range(max_new_tokens):
        if cache is not None:
            logits = decode_step(model, new_ids, cache)[:, -1]                # (B, L_new, V) -> (B, V)
        else:
            context = ids[:, -model.max_len:]                                 # (B, <= max_len)
            logits = model(context)[:, -1]                                    # (B, L, V) -> (B, V)
        next_id = sample_next(logits, temperature, top_k, generator)          # (B,)
        new_ids = next_id[:, None]                                            # (B,) -> (B, 1)
        ids = torch.cat([ids, new_ids], dim=1)                                # (B, L) -> (B, L + 1)
    return ids


def new_cache(model, batch_size, max_len=None, dtype=None):
    """An empty ``KVCache`` for ``model`` (a ``CharTransformer``): one layer per block, H_kv = H.

    ``max_len`` defaults to ``model.max_len``; ``dtype`` and the device to the model's parameters'.
    """
    attn, param = model.blocks[0].self_attn, next(model.parameters())
    return KVCache(len(model.blocks), batch_size, attn.num_heads, attn.head_dim, max_len or model.max_len,
                   dtype=dtype or param.dtype, device=param.device)


def cached_block(block, x, cache, layer):
    """``TransformerBlock.forward`` of the new positions x (B, L_new, E) -> (B, L_new, E), attending over the
    cached past (``cached_self_attention``) with the block's own weights, pre-LN or post-LN."""
    if block.norm_first:
        x = x + block.dropout(cached_self_attention(block.self_attn, block.norm1(x), cache, layer))
        return x + block.dropout(block.feed_forward(block.norm2(x)))
    x = block.norm1(x + block.dropout(cached_self_attention(block.self_attn, x, cache, layer)))
    return block.norm2(x + block.dropout(block.feed_forward(x)))


def decode_step(model, ids_new, cache):
    """Logits of the new ids at positions ``cache.length ..``, reading the past from ``cache``: one decoding step.

    ``decode_step(model, ids[:, :P], cache)`` then ``decode_step(model, ids[:, P:P+1], cache)`` ... give
    the logits of ``model(ids)`` position by position (equal up to float rounding, tests/test_kv_cache.py).
    The first call (the prompt, "prefill") may pass many ids, the next ones one id each; each call appends
    the new keys and values of every block and advances the cache by L_new.

    Args:
        model: a ``CharTransformer`` in eval mode. ids_new: (B, L_new) int64, the ids the cache has not seen.
        cache: a ``KVCache`` from ``new_cache(model, B)``.

    Returns:
        logits (B, L_new, V).

    Raises:
        ValueError: ``ids_new`` not 2-D, or ``cache.length + L_new`` > ``model.max_len`` or the cache's max_len.

    References: Pope et al. 2022, "Efficiently Scaling Transformer Inference".

    >>> model = CharTransformer(vocab_size=10, d_model=16, num_heads=2, num_layers=1, max_len=8).eval()
    >>> cache = new_cache(model, batch_size=1)
    >>> decode_step(model, torch.tensor([[1, 2, 3]]), cache).shape, cache.length
    (torch.Size([1, 3, 10]), 3)
    """
    if ids_new.dim() != 2 or cache.length + ids_new.shape[1] > model.max_len:
        raise ValueError(f"ids_new must have shape (B, L_new) with cache.length + L_new <= max_len={model.max_len}; "
                         f"got {tuple(ids_new.shape)} after {cache.length} cached positions")
    past, L_new = cache.length, ids_new.shape[1]
    x = model.embedding(ids_new)                                              # (B, L_new) -> (B, L_new, E)
    pe = model.positional(x.new_zeros(1, past + L_new, x.shape[-1]))          # both encodings add PE: zeros + PE = PE
    x = x + pe[:, past:]                                                      # (B, L_new, E) + PE[past : past + L_new]
    for layer, block in enumerate(model.blocks):
        x = cached_block(block, x, cache, layer)                              # (B, L_new, E)
    cache.advance(L_new)
    return model.lm_head(model.norm(x))                                       # (B, L_new, E) -> (B, L_new, V)


def decoding_speed(model, lengths=(128, 512), new_tokens=None, batch_size=1):
    """Tokens per second of greedy generation (top_k=1), without and with the KV cache (wall clock).

    For each n, the prompt holds ``n - k + 1`` ids (zeros) and ``k = new_tokens`` (default n) are
    generated, so the last step reads n positions: the default times a whole generation from a one-id
    prompt; a small k times the steps at context about n (what a long generation slows down to), the
    cache's time including the prompt's prefill. One short generation each way warms up first.

    Returns:
        a list of dicts, one per n: ``{"tokens": n, "new_tokens": k, "no_cache": tokens/s, "cache":
        tokens/s, "speedup": their ratio, "same_ids": whether both generated the same ids}``.

    Raises:
        ValueError: n > ``model.max_len``, or k outside 1..n.
    """
    for n in lengths:
        if n > model.max_len or not 1 <= (n if new_tokens is None else new_tokens) <= n:
            raise ValueError(f"need new_tokens in 1..n and n <= max_len={model.max_len}; got n={n}, "
                             f"new_tokens={new_tokens}")
    rows, device = [], next(model.parameters()).device
    for use_cache in (False, True):                                           # warm up: first calls allocate
        generate(model, torch.zeros(batch_size, 1, dtype=torch.long, device=device), 2, top_k=1, use_cache=use_cache)
    for n in lengths:
        k = n if new_tokens is None else new_tokens
        prompt, ids, seconds = torch.zeros(batch_size, n - k + 1, dtype=torch.long, device=device), {}, {}
        for use_cache in (False, True):
            start = time.perf_counter()
            ids[use_cache] = generate(model, prompt, k, top_k=1, use_cache=use_cache)
            seconds[use_cache] = time.perf_counter() - start
        rows.append({"tokens": n, "new_tokens": k, "no_cache": k / seconds[False], "cache": k / seconds[True],
                     "speedup": seconds[False] / seconds[True], "same_ids": torch.equal(ids[False], ids[True])})
    return rows


@torch.no_grad()
def causality_probe(forward, ids, position, vocab_size, seed=0):
    """How much the logits before ``position`` change when the character at ``position`` changes.

    Replaces ``ids[:, position]`` by a different id (drawn from ``seed``) and runs ``forward`` on both.

    Args:
        forward: a callable (B, L) ids -> (B, L, V) logits (a model, or ``lambda ids: fn(model, ids)``).
        ids: (B, L) int64. position: the position changed, 1 <= position < L. vocab_size: V.

    Returns:
        dict with ``"before"``: the largest absolute change of the logits at positions 0..position-1
        (exactly 0.0 for a causal model), and ``"at_and_after"``: the same at position..L-1 (> 0: the
        change is seen there).
    """
    g = torch.Generator().manual_seed(seed)
    changed = ids.clone()
    shift = torch.randint(1, vocab_size, (ids.shape[0],), generator=g).to(ids.device)
    changed[:, position] = (ids[:, position] + shift) % vocab_size            # a different character
    diff = (forward(changed) - forward(ids)).abs()                            # (B, L, V)
    return {"before": diff[:, :position].max().item() if position > 0 else 0.0,
            "at_and_after": diff[:, position:].max().item()}


def attention_by_offset(attn_weights, max_offset=8):
    """Mean attention weight on the key ``offset`` characters back, per head: what each head looks at.

    ``result[h, k] = mean over queries l >= k of attn_weights[:, h, l, l - k]`` (and over the batch):
    k = 0 is the character itself, k = 1 the previous one.

    Args:
        attn_weights: (B, H, L, L) causal attention weights of one block. max_offset: the largest k.

    Returns:
        (H, max_offset + 1) float tensor; each entry in [0, 1].
    """
    B, H, L, _ = attn_weights.shape
    rows = [torch.diagonal(attn_weights, offset=-k, dim1=-2, dim2=-1).mean(dim=(0, -1))   # (B, H, L-k) -> (H,)
            for k in range(min(max_offset, L - 1) + 1)]
    return torch.stack(rows, dim=-1)                                          # (H, K+1)
