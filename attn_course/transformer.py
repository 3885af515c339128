"""The transformer block and a small text classifier built on ``attention.MultiHeadAttention``.

Positional encodings (sinusoidal and learned), the block (self-attention and a position-wise
feed-forward layer, each wrapped in a residual connection and a LayerNorm), and ``TextTransformer``:
embedding -> positions -> blocks -> masked mean pooling -> logits.

Shape legend: B batch, L sequence length, E d_model (= H*D), H heads, F d_ff, V vocabulary, C classes.

**Mask polarity**, as in ``torch.nn.TransformerEncoderLayer`` (``src_mask``) and
``torch.nn.MultiheadAttention``: a bool ``attn_mask`` and ``key_padding_mask`` both mean **True = ignore**
(a float mask is added to the scores). The same masks go to ``TransformerBlock`` and to PyTorch's layer.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .attention import MultiHeadAttention

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def sinusoidal_positional_encoding(seq_len, d_model, base=10000.0, dtype=torch.float32, device=None):
    """The fixed positional encodings of Vaswani et al. (2017): one row of sines and cosines per position.

    ``PE[pos, 2i] = sin(pos / base^(2i / d_model))``, ``PE[pos, 2i+1] = cos(pos / base^(2i / d_model))``.
    Column pairs (2i, 2i+1) turn at wavelengths from 2*pi (i = 0) to about ``2*pi*base``; for any fixed
    offset k, ``PE[pos + k]`` is a linear function (a rotation per column pair) of ``PE[pos]``.

    Args:
        seq_len: L, the number of positions (an int >= 0); positions are 0 .. L-1.
        d_model: E, the encoding width (an int >= 1; odd E drops the last cosine column).
        base: the wavelength base (10000 in the paper).
        dtype, device: of the result; the table is computed in float64 and then cast.

    Returns:
        pe: (L, E) tensor with entries in [-1, 1]; row 0 is (0, 1, 0, 1, ...).

    Raises:
        ValueError: ``seq_len`` < 0 or ``d_model`` < 1 (or not ints), or ``base`` <= 0.

    References: Vaswani et al. 2017, "Attention Is All You Need", section 3.5.

    >>> sinusoidal_positional_encoding(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    if not isinstance(seq_len, int) or seq_len < 0 or not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"seq_len must be an int >= 0 and d_model an int >= 1; got seq_len={seq_len!r}, "
                         f"d_model={d_model!r}")
    if not base > 0:
        raise ValueError(f"base must be > 0; got {base}")
    position = torch.arange(seq_len, dtype=torch.float64)[:, None]              # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)                    # (ceil(E/2),)
    angle = position / base ** (two_i / d_model)                                # (L, 1) / (E/2,) -> (L, E/2)
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)                     # (L, E)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, :d_model // 2])
    return pe.to(dtype=dtype, device=device)


def validate_positions(x, max_len, d_model):
    """Raise ValueError unless x is (B, L, d_model) with L <= max_len."""
    if x.dim() != 3 or x.shape[-1] != d_model or x.shape[1] > max_len:
        raise ValueError(f"x must have shape (B, L, d_model={d_model}) with L <= max_len={max_len}; "
                         f"got {tuple(x.shape)}")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds each position's fixed sinusoidal encoding to the token embeddings: ``x + PE[:L]``.

    Args:
        max_len: the longest sequence the module accepts (rows of the table).
        d_model: E.

    Forward args:
        x: (B, L, E) float tensor, token embeddings; L <= max_len.

    Returns:
        (B, L, E), same dtype as ``x``: row l of every sequence plus ``PE[l]``.

    Raises:
        ValueError: ``x`` not (B, L, E) with L <= max_len.

    Attributes:
        pe: (1, max_len, E) float32 buffer, ``sinusoidal_positional_encoding(max_len, d_model)``.

    References: Vaswani et al. 2017, section 3.5.

    >>> SinusoidalPositionalEncoding(max_len=8, d_model=4)(torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model)[None], persistent=False)

    def forward(self, x):
        validate_positions(x, self.max_len, self.d_model)
        return x + self.pe[:, :x.shape[1]].to(x.dtype)  # (B, L, E) + (1, L, E)


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned vector per position to the token embeddings: ``x + P[:L]``, P trained with the model.

    Args:
        max_len: the number of positions with a vector (rows of P).
        d_model: E.

    Forward args:
        x: (B, L, E) float tensor; L <= max_len.

    Returns:
        (B, L, E), same dtype as ``x``.

    Raises:
        ValueError: ``x`` not (B, L, E) with L <= max_len.

    Attributes:
        position_embeddings: ``nn.Embedding(max_len, d_model)``, initialised N(0, 1) like token embeddings.

    References: Gehring et al. 2017, "Convolutional Sequence to Sequence Learning", section 3.1;
    Vaswani et al. 2017, section 3.5 (learned and sinusoidal performed nearly the same); BERT and GPT-2.

    >>> LearnedPositionalEncoding(max_len=8, d_model=4)(torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.position_embeddings = nn.Embedding(max_len, d_model)

    def forward(self, x):
        validate_positions(x, self.max_len, self.d_model)
        return x + self.position_embeddings.weight[:x.shape[1]].to(x.dtype)  # (B, L, E) + (L, E)


class TransformerBlock(nn.Module):
    """One transformer encoder block: self-attention and a feed-forward layer, each with residual + LayerNorm.

    Post-LN (``norm_first=False``, the paper's):   ``x = LN(x + SelfAttn(x));  x = LN(x + FFN(x))``.
    Pre-LN (``norm_first=True``):                   ``x = x + SelfAttn(LN(x));  x = x + FFN(LN(x))``.
    ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``, applied to each position separately (E -> F -> E).

    Args:
        d_model: E. num_heads: H (E divisible by H). d_ff: F, the feed-forward width (4E in the paper).
        dropout: dropout on the attention weights, inside the FFN and on each sublayer's output (training only).
        norm_first: pre-LN if True, post-LN if False.
        activation: ``"relu"`` or ``"gelu"`` (exact erf form, as ``F.gelu``).
        layer_norm_eps: LayerNorm's epsilon. bias: biases in every Linear and LayerNorm.
        positional: given to ``MultiHeadAttention``: None, or a weight-free module that gives the heads
            their positions (``attn_course.rotary.Rotary``, ``attn_course.rotary.ALiBi``).

    Forward args:
        x: (B, L, E) float tensor.
        attn_mask: bool (L, L) or broadcastable to (B, H, L, L), **True = ignore (may not attend)**, or
            float, added to the scores: as ``src_mask`` of ``nn.TransformerEncoderLayer``.
        key_padding_mask: bool (B, L), **True = padding (ignore)**.
        is_causal: apply a causal mask (position i sees 0..i).
        need_weights: also return the attention weights.

    Returns:
        x (B, L, E), or ``(x, attn_weights (B, H, L, L))`` with ``need_weights=True``.

    Raises:
        ValueError: ``activation`` not relu/gelu, E not divisible by H, or inputs of the wrong shape
            (from ``MultiHeadAttention``).

    References: Vaswani et al. 2017, sections 3.1 and 3.3 (eq. 2); He et al. 2016 (residual connections);
    Ba et al. 2016 (LayerNorm); Xiong et al. 2020 (pre-LN). With weights copied (``from_torch``),
    numerically equal to ``torch.nn.TransformerEncoderLayer(batch_first=True)`` in eval mode, post-LN and
    pre-LN, relu and gelu, with padding and causal masks (tests/test_transformer.py).

    >>> block = TransformerBlock(d_model=8, num_heads=2, d_ff=16)
    >>> block(torch.randn(2, 5, 8), key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0, norm_first=False, activation="relu",
                 layer_norm_eps=1e-5, bias=True, positional=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.norm_first, self.activation = norm_first, activation
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias, positional=positional)
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)    # E -> F
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)    # F -> E
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def feed_forward(self, x):
        """The position-wise feed-forward layer, eq. 2: (B, L, E) -> (B, L, F) -> (B, L, E)."""
        hidden = self.dropout(ACTIVATIONS[self.activation](self.linear1(x)))  # (B, L, E) -> (B, L, F)
        return self.linear2(hidden)                                            # (B, L, F) -> (B, L, E)

    def _attend(self, x, attn_mask, key_padding_mask, is_causal):
        attn_output, attn_weights = self.self_attn(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                                   is_causal=is_causal)
        return self.dropout(attn_output), attn_weights

    def forward(self, x, attn_mask=None, key_padding_mask=None, is_causal=False, need_weights=False):
        if self.norm_first:
            attn_output, attn_weights = self._attend(self.norm1(x), attn_mask, key_padding_mask, is_causal)
            x = x + attn_output
            x = x + self.dropout(self.feed_forward(self.norm2(x)))
        else:
            attn_output, attn_weights = self._attend(x, attn_mask, key_padding_mask, is_causal)
            x = self.norm1(x + attn_output)
            x = self.norm2(x + self.dropout(self.feed_forward(x)))
        return (x, attn_weights) if need_weights else x

    @classmethod
    def from_torch(cls, layer):
        """A ``TransformerBlock`` with the weights of a ``torch.nn.TransformerEncoderLayer(batch_first=True)``."""
        activation = {1: "relu", 2: "gelu"}.get(getattr(layer, "activation_relu_or_gelu", 0))
        if activation is None:
            raise ValueError(f"from_torch copies layers whose activation is relu or gelu; got {layer.activation}")
        ours = cls(layer.linear1.in_features, layer.self_attn.num_heads, layer.linear1.out_features,
                   dropout=layer.dropout.p, norm_first=layer.norm_first, activation=activation,
                   layer_norm_eps=layer.norm1.eps, bias=layer.linear1.bias is not None)
        ours = ours.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(ours, name).load_state_dict(getattr(layer, name).state_dict())
        return ours


class TextTransformer(nn.Module):
    """A transformer text classifier: embeddings + positions -> N blocks -> masked mean pooling -> logits.

    ``h = Blocks(Embed(ids) + PE)``; ``logits = W_c mean_{l not padding} h_l + b_c``. Padding tokens are
    masked out of every attention (``key_padding_mask``) and out of the pooling.

    Args:
        vocab_size: V. d_model: E. num_heads: H. d_ff: F. num_layers: the number of blocks.
        num_classes: C. max_len: the longest sequence accepted.
        positional: ``"sinusoidal"``, ``"learned"``, ``"none"`` (no positions: the model cannot see word
            order), or an ``nn.Module`` mapping (B, L, E) -> (B, L, E).
        padding_idx: the id of the padding token (its embedding is zero and receives no gradient).
        dropout, norm_first, activation: as in ``TransformerBlock``; pre-LN adds a final LayerNorm.

    Forward args:
        ids: (B, L) int64 token ids.
        key_padding_mask: bool (B, L), **True = padding**; default ``ids == padding_idx``.
        need_weights: also return the attention weights of every block.

    Returns:
        logits (B, C), or ``(logits, [attn_weights (B, H, L, L) per block])``.

    Raises:
        ValueError: ``positional`` unknown, ``ids`` not 2-D, or L > max_len.

    References: Vaswani et al. 2017 (the encoder, sections 3.1-3.5); Devlin et al. 2019 (classifying with
    an encoder). Token embeddings start N(0, 1), the scale of the encodings, so there is no sqrt(E) factor.

    >>> model = TextTransformer(vocab_size=10, d_model=8, num_heads=2, d_ff=16, num_layers=1,
    ...                         num_classes=2, max_len=6)
    >>> model(torch.tensor([[3, 4, 5], [6, 7, 0]])).shape
    torch.Size([2, 2])
    """

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, num_classes, max_len,
                 positional="sinusoidal", padding_idx=0, dropout=0.0, norm_first=False, activation="relu"):
        super().__init__()
        if isinstance(positional, nn.Module):
            self.positional = positional
        elif positional == "sinusoidal":
            self.positional = SinusoidalPositionalEncoding(max_len, d_model)
        elif positional == "learned":
            self.positional = LearnedPositionalEncoding(max_len, d_model)
        elif positional == "none":
            self.positional = nn.Identity()
        else:
            raise ValueError(f"positional must be 'sinusoidal', 'learned', 'none' or an nn.Module; got {positional!r}")
        self.max_len, self.padding_idx = max_len, padding_idx
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff, dropout, norm_first, activation)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, ids, key_padding_mask=None, need_weights=False):
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have shape (B, L) with L <= max_len={self.max_len}; got {tuple(ids.shape)}")
        if key_padding_mask is None:
            key_padding_mask = ids == self.padding_idx                         # (B, L), True = padding
        x = self.dropout(self.positional(self.embedding(ids)))                 # (B, L) -> (B, L, E)
        all_weights = []
        for block in self.blocks:
            x, attn_weights = block(x, key_padding_mask=key_padding_mask, need_weights=True)  # (B, L, E)
            all_weights.append(attn_weights)
        x = self.norm(x)
        keep = (~key_padding_mask).unsqueeze(-1).to(x.dtype)                   # (B, L) -> (B, L, 1)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)                # (B, L, E) -> (B, E)
        logits = self.classifier(pooled)                                       # (B, E) -> (B, C)
        return (logits, all_weights) if need_weights else logits
