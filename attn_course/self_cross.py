"""Self-attention and cross-attention: where the queries, keys and values come from.

Shape legend: B batch, L query length, S key/value length, D head_dim (the paper's d_k), Dv value
dim, E d_model (PyTorch's ``embed_dim``, Hugging Face's ``hidden_size``).

    self-attention:   Q = X W_Q,  K = X W_K,  V = X W_V          X (B, L, E): one sequence, S = L
    cross-attention:  Q = Y W_Q,  K = H W_K,  V = H W_V          Y (B, L, E) decoder states,
                                                                 H (B, S, E) encoder outputs
    context = softmax(Q K^T / sqrt(D)) V                         attn_weights (B, L, S)

Weights multiply on the right, as in the paper: ``w_query`` is (E, D) and ``query = x @ w_query``.
An ``nn.Linear(E, D)`` stores the transpose, (D, E), and computes ``x @ weight.T + bias``.

**Mask polarity.** ``key_padding_mask`` follows ``torch.nn.MultiheadAttention``: **True = padding,
ignore that key**. It is turned into an SDPA-style ``attn_mask`` (True = may attend) in one place,
``attention.key_padding_to_attn_mask``.
"""
import torch
from torch import nn

from .attention import attention_weights, causal_mask, key_padding_to_attn_mask


def _check_states(name, states, E):
    if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[-1] != E:
        got = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"{name} must be a tensor (B, length, E={E}); got {got}")


def validate_inputs(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None,
                  names=("decoder_states", "encoder_states")):
    """Shapes for ``cross_attention`` (and ``self_attention``, where both states are ``x``)."""
    if not isinstance(decoder_states, torch.Tensor) or decoder_states.dim() != 3:
        got = tuple(decoder_states.shape) if isinstance(decoder_states, torch.Tensor) else type(decoder_states).__name__
        raise ValueError(f"{names[0]} must be a tensor (B, L, E); got {got}")
    B, L, E = decoder_states.shape
    _check_states(names[1], encoder_states, E)
    if encoder_states.shape[0] != B:
        raise ValueError(f"{names[0]} (B, L, E) and {names[1]} (B, S, E) must share B; got "
                         f"{tuple(decoder_states.shape)} and {tuple(encoder_states.shape)}")
    for name, w in (("w_query", w_query), ("w_key", w_key), ("w_value", w_value)):
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[0] != E:
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"{name} must be (E, ·) with E = {E}, multiplying on the right; got {got} "
                             f"(an nn.Linear weight is (out, E): pass its .T)")
    if w_query.shape[1] != w_key.shape[1]:
        raise ValueError(f"w_query (E, D) and w_key (E, D) must share D; got {tuple(w_query.shape)} "
                         f"and {tuple(w_key.shape)}")
    S = encoder_states.shape[1]
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, S):
        raise ValueError(f"key_padding_mask must have shape (B, S) = {(B, S)}, True = padding; "
                         f"got {tuple(key_padding_mask.shape)}")


def attend(query, key, value, key_padding_mask=None, is_causal=False):
    """Unmasked or masked single-head attention on projected (B, L, D), (B, S, D), (B, S, Dv)."""
    B, L, S = query.shape[0], query.shape[1], key.shape[1]
    attn_mask = None
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (B, S):
            raise ValueError(f"key_padding_mask must have shape (B, S) = {(B, S)}, True = padding; "
                             f"got {tuple(key_padding_mask.shape)}")
        attn_mask = key_padding_to_attn_mask(key_padding_mask)              # (B, S) -> (B, 1, S)
    if is_causal:
        causal = causal_mask(L, S, device=query.device)                     # (L, S), True = may attend
        attn_mask = causal if attn_mask is None else attn_mask & causal      # (B, L, S)
    attn_weights = attention_weights(query, key, attn_mask)                 # (B, L, S), rows sum to 1
    context = attn_weights @ value                                           # (B, L, S) @ (B, S, Dv) -> (B, L, Dv)
    return context, attn_weights


def self_attention(x, w_query, w_key, w_value, key_padding_mask=None, is_causal=False):
    """Single-head self-attention: queries, keys and values all from the same sequence ``x``.

    ``Q = x W_Q``, ``K = x W_K``, ``V = x W_V``; ``attn_weights = softmax(Q K^T / sqrt(D))`` over the
    key axis; ``context = attn_weights V``. Every position attends to every position of ``x``.

    Args:
        x: float tensor (B, L, E), one sequence per batch element (embeddings or a layer's output).
        w_query: (E, D) projection to queries; w_key: (E, D) to keys; w_value: (E, Dv) to values.
            They multiply on the right (``x @ w_query``); an ``nn.Linear`` weight is the transpose.
        key_padding_mask: None or bool (B, L), **True = padding (ignore that key)**.
        is_causal: position i attends to positions 0..i only (decoder self-attention).

    Returns:
        (context (B, L, Dv), attn_weights (B, L, L)): rows of ``attn_weights`` sum to 1 over the keys.

    Raises:
        ValueError: ``x`` not 3-D; a weight that is not (E, ·); ``w_query`` and ``w_key`` of
            different D; a ``key_padding_mask`` that is not (B, L).

    References: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.3 (encoder
    self-attention) and eq. 1; Cheng, Dong & Lapata 2016 ("intra-attention"). With the weights of
    an ``nn.MultiheadAttention(num_heads=1)`` its ``out_proj(context)`` equals that module's output
    (tests/test_self_attention.py).

    >>> x = torch.randn(1, 4, 6)
    >>> context, attn_weights = self_attention(x, torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 5))
    >>> tuple(context.shape), tuple(attn_weights.shape)
    ((1, 4, 5), (1, 4, 4))
    """
    validate_inputs(x, x, w_query, w_key, w_value, key_padding_mask, names=("x", "x"))
    query = x @ w_query                                                      # (B, L, E) @ (E, D) -> (B, L, D)
    key = x @ w_key                                                          # (B, L, E) @ (E, D) -> (B, L, D)
    value = x @ w_value                                                      # (B, L, E) @ (E, Dv) -> (B, L, Dv)
    return attend(query, key, value, key_padding_mask, is_causal)


def cross_attention(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    """Single-head cross-attention: queries from the decoder, keys and values from the encoder outputs.

    ``Q = Y W_Q`` from the decoder states Y (L positions); ``K = H W_K`` and ``V = H W_V`` from the
    encoder outputs H (S positions); ``attn_weights = softmax(Q K^T / sqrt(D))`` (B, L, S) says, for
    each target position, how much it reads from each source position; ``context = attn_weights V``.

    Args:
        decoder_states: float tensor (B, L, E), one row per target (decoder) position.
        encoder_states: float tensor (B, S, E), the encoder outputs, one row per source position.
        w_query: (E, D); w_key: (E, D); w_value: (E, Dv). They multiply on the right
            (``decoder_states @ w_query``); an ``nn.Linear`` weight is the transpose.
        key_padding_mask: None or bool (B, S) over the encoder positions, **True = padding (ignore)**.

    Returns:
        (context (B, L, Dv), attn_weights (B, L, S)): rows of ``attn_weights`` sum to 1 over the
        S encoder positions (a padded position gets weight 0).

    Raises:
        ValueError: inputs not 3-D; batch sizes or E that differ; a weight that is not (E, ·);
            ``w_query`` and ``w_key`` of different D; a ``key_padding_mask`` that is not (B, S).

    References: Vaswani et al. 2017, section 3.2.3 ("encoder-decoder attention") and eq. 1;
    Bahdanau, Cho & Bengio 2015, section 3.1 (the decoder attends to the encoder's annotations).
    Equal to ``torch.nn.functional.scaled_dot_product_attention(Y W_Q, H W_K, H W_V)``
    (tests/test_self_attention.py).

    >>> Y, H = torch.randn(1, 3, 6), torch.randn(1, 5, 6)
    >>> context, attn_weights = cross_attention(Y, H, torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4))
    >>> tuple(context.shape), tuple(attn_weights.shape)
    ((1, 3, 4), (1, 3, 5))
    """
    validate_inputs(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask)
    query = decoder_states @ w_query                                         # (B, L, E) @ (E, D) -> (B, L, D)
    key = encoder_states @ w_key                                             # (B, S, E) @ (E, D) -> (B, S, D)
    value = encoder_states @ w_value                                         # (B, S, E) @ (E, Dv) -> (B, S, Dv)
    attn_mask = None if key_padding_mask is None else key_padding_to_attn_mask(key_padding_mask)
    attn_weights = attention_weights(query, key, attn_mask)                  # (B, L, S), rows sum to 1
    context = attn_weights @ value                                           # (B, L, S) @ (B, S, Dv) -> (B, L, Dv)
    return context, attn_weights


class SelfAttention(nn.Module):
    """Single-head self-attention with learned projections ``q_proj``, ``k_proj``, ``v_proj``.

    ``forward(x)`` computes ``Q = q_proj(x)``, ``K = k_proj(x)``, ``V = v_proj(x)`` from the same
    sequence and returns ``(context, attn_weights)`` as ``self_attention`` does. There is no output
    projection: one head's context is the output (lesson 06 concatenates several heads and adds one).

    Args:
        d_model: E, the width of the input.
        head_dim: D, the width of queries, keys, values and of the output.
        bias: whether the projections have a bias (as ``nn.MultiheadAttention``'s do by default).

    Forward args:
        x: (B, L, E). key_padding_mask: None or bool (B, L), **True = padding (ignore)**.
        is_causal: position i attends to 0..i only.

    Returns:
        (context (B, L, D), attn_weights (B, L, L)).

    Raises:
        ValueError: ``d_model`` or ``head_dim`` not a positive int; ``x`` not (B, L, d_model).

    References: Vaswani et al. 2017, section 3.2.3. With weights copied from
    ``nn.MultiheadAttention(d_model, num_heads=1)`` (``head_dim = d_model``),
    ``mha.out_proj(context)`` and ``attn_weights`` equal that module's two outputs
    (tests/test_self_attention.py).

    >>> attn = SelfAttention(d_model=8, head_dim=4)
    >>> [tuple(t.shape) for t in attn(torch.randn(2, 5, 8))]
    [(2, 5, 4), (2, 5, 5)]
    """

    def __init__(self, d_model, head_dim, bias=True):
        super().__init__()
        for name, n in (("d_model", d_model), ("head_dim", head_dim)):
            if not isinstance(n, int) or n <= 0:
                raise ValueError(f"{name} must be a positive int; got {n!r}")
        self.d_model, self.head_dim = d_model, head_dim
        self.q_proj = nn.Linear(d_model, head_dim, bias=bias)                # E -> D
        self.k_proj = nn.Linear(d_model, head_dim, bias=bias)                # E -> D
        self.v_proj = nn.Linear(d_model, head_dim, bias=bias)                # E -> D

    def forward(self, x, key_padding_mask=None, is_causal=False):
        _check_states("x", x, self.d_model)
        query, key, value = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, L, E) -> (B, L, D) each
        return attend(query, key, value, key_padding_mask, is_causal)


class CrossAttention(SelfAttention):
    """Single-head cross-attention: ``q_proj`` reads the decoder states, ``k_proj`` and ``v_proj`` the encoder's.

    Same parameters as ``SelfAttention``; only ``forward`` differs.

    Forward args:
        decoder_states: (B, L, E). encoder_states: (B, S, E), the encoder outputs.
        key_padding_mask: None or bool (B, S) over the encoder positions, **True = padding (ignore)**.

    Returns:
        (context (B, L, D), attn_weights (B, L, S)).

    Raises:
        ValueError: inputs not (B, ·, d_model) or batch sizes that differ.

    References: Vaswani et al. 2017, section 3.2.3 ("encoder-decoder attention"). With copied
    weights equal to ``nn.MultiheadAttention(num_heads=1)`` called as ``mha(Y, H, H)`` before its
    output projection (tests/test_self_attention.py).

    >>> attn = CrossAttention(d_model=8, head_dim=4)
    >>> [tuple(t.shape) for t in attn(torch.randn(2, 3, 8), torch.randn(2, 6, 8))]
    [(2, 3, 4), (2, 3, 6)]
    """

    def forward(self, decoder_states, encoder_states, key_padding_mask=None):
        _check_states("decoder_states", decoder_states, self.d_model)
        _check_states("encoder_states", encoder_states, self.d_model)
        if decoder_states.shape[0] != encoder_states.shape[0]:
            raise ValueError(f"decoder_states (B, L, E) and encoder_states (B, S, E) must share B; got "
                             f"{tuple(decoder_states.shape)} and {tuple(encoder_states.shape)}")
        query = self.q_proj(decoder_states)                                  # (B, L, E) -> (B, L, D)
        key = self.k_proj(encoder_states)                                    # (B, S, E) -> (B, S, D)
        value = self.v_proj(encoder_states)                                  # (B, S, E) -> (B, S, D)
        return attend(query, key, value, key_padding_mask)
