"""The whole Transformer of "Attention Is All You Need": an encoder and a decoder, built from the course's parts.

Three attentions, each a ``MultiHeadAttention``::

    source ids --embed x sqrt(E) + PE--> encoder: N x [self-attention (padding mask), feed-forward] --> memory
    target ids --embed x sqrt(E) + PE--> decoder: N x [masked self-attention (causal + padding mask),
                                                       cross-attention over memory (source padding mask),
                                                       feed-forward] --> logits over the target words

The encoder's blocks are ``attn_course.transformer.TransformerBlock``; ``DecoderBlock`` adds the
cross-attention, whose queries come from the decoder and whose keys and values are the encoder's output.
Only the decoder's *self*-attention is causal: every target position may read the whole source.

Shape legend: B batch, S source length, L target length, E d_model (= H*D), H heads, F d_ff, V vocabulary,
K beam size.

**Mask polarity**, as in ``torch.nn.Transformer``: every bool mask means **True = ignore** (``src_mask``,
``tgt_mask``, ``memory_mask``, and the three ``*_key_padding_mask``); a float mask is added to the scores.
The same masks go to ``Transformer`` and to PyTorch's.

**Teacher forcing.** A target sentence ``<bos> y_1 .. y_T <eos>`` gives the decoder's input
``<bos> y_1 .. y_T`` and its labels ``y_1 .. y_T <eos>``: the input is the labels shifted right by one
(``shift_right``), so position t predicts ``y_{t+1}`` from ``y_1 .. y_t`` and the causal mask keeps it from
reading ``y_{t+1}`` itself.

References: Vaswani et al. 2017, "Attention Is All You Need" (sections 3.1-3.5, 5.3, 5.4); Press & Wolf
2017, "Using the Output Embedding to Improve Language Models" (tied embeddings); Rush 2018, "The Annotated
Transformer".
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .attention import MultiHeadAttention
from .kv_cache import KVCache, cached_self_attention
from .transformer import ACTIVATIONS, SinusoidalPositionalEncoding, TransformerBlock


class DecoderBlock(nn.Module):
    """One decoder block: masked self-attention, cross-attention over the encoder, feed-forward; each with
    residual + LayerNorm.

    Post-LN (``norm_first=False``, the paper's)::

        x = norm1(x + SelfAttn(x, causal))
        x = norm2(x + CrossAttn(query=x, key=value=memory))
        x = norm3(x + FFN(x))

    Pre-LN (``norm_first=True``): ``x = x + SelfAttn(norm1(x))``, ``x = x + CrossAttn(norm2(x), memory)``,
    ``x = x + FFN(norm3(x))``. Submodules carry the names of ``torch.nn.TransformerDecoderLayer``:
    ``self_attn``, ``multihead_attn`` (the cross-attention), ``linear1``, ``linear2``, ``norm1..3``.

    Args:
        d_model: E. num_heads: H (E divisible by H). d_ff: F.
        dropout: on the attention weights, inside the FFN and on each sublayer's output (training only).
        norm_first: pre-LN if True. activation: ``"relu"`` or ``"gelu"``.
        layer_norm_eps: LayerNorm's epsilon. bias: biases in every Linear and LayerNorm.

    Forward args:
        x: (B, L, E) float tensor, the target side.
        memory: (B, S, E), the encoder's output.
        tgt_mask: the self-attention's ``attn_mask``: bool (L, L), **True = ignore**, or float; e.g.
            ``~causal_mask(L)``.
        memory_mask: the cross-attention's ``attn_mask`` (L, S), **True = ignore**; usually None.
        tgt_key_padding_mask: bool (B, L), True = padding. memory_key_padding_mask: bool (B, S), True = padding.
        tgt_is_causal: a causal self-attention mask built inside (instead of ``tgt_mask``).
        need_weights: also return both attentions' weights.

    Returns:
        x (B, L, E), or ``(x, self_weights (B, H, L, L), cross_weights (B, H, L, S))``.

    Raises:
        ValueError: ``activation`` not relu/gelu, E not divisible by H, or inputs of the wrong shape.

    References: Vaswani et al. 2017, section 3.1 ("Decoder") and 3.2.3. With weights copied
    (``from_torch``), numerically equal to ``torch.nn.TransformerDecoderLayer(batch_first=True)`` in eval
    mode (tests/test_encoder_decoder.py).

    >>> block = DecoderBlock(d_model=8, num_heads=2, d_ff=16)
    >>> block(torch.randn(2, 4, 8), torch.randn(2, 6, 8), tgt_is_causal=True).shape
    torch.Size([2, 4, 8])
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0, norm_first=False, activation="relu",
                 layer_norm_eps=1e-5, bias=True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.norm_first, self.activation = norm_first, activation
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias)
        self.multihead_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias)
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)    # E -> F
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)    # F -> E
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)

    feed_forward = TransformerBlock.feed_forward                               # the encoder block's, eq. 2

    def self_attention(self, x, tgt_mask=None, tgt_key_padding_mask=None, tgt_is_causal=False):
        """Masked self-attention of the target positions: (B, L, E) -> ((B, L, E), (B, H, L, L))."""
        attn_output, attn_weights = self.self_attn(x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask,
                                                   is_causal=tgt_is_causal)
        return self.dropout(attn_output), attn_weights

    def cross_attention(self, x, memory, memory_mask=None, memory_key_padding_mask=None):
        """Queries from the target, keys and values from the source: ((B, L, E), (B, S, E)) ->
        ((B, L, E), (B, H, L, S)). No causal mask: every target position may read the whole source."""
        attn_output, attn_weights = self.multihead_attn(x, memory, memory, attn_mask=memory_mask,
                                                        key_padding_mask=memory_key_padding_mask)
        return self.dropout(attn_output), attn_weights

    def forward(self, x, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, need_weights=False):
        if self.norm_first:
            attn_output, self_weights = self.self_attention(self.norm1(x), tgt_mask, tgt_key_padding_mask,
                                                            tgt_is_causal)
            x = x + attn_output
            attn_output, cross_weights = self.cross_attention(self.norm2(x), memory, memory_mask,
                                                              memory_key_padding_mask)
            x = x + attn_output
            x = x + self.dropout(self.feed_forward(self.norm3(x)))
        else:
            attn_output, self_weights = self.self_attention(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = self.norm1(x + attn_output)
            attn_output, cross_weights = self.cross_attention(x, memory, memory_mask, memory_key_padding_mask)
            x = self.norm2(x + attn_output)
            x = self.norm3(x + self.dropout(self.feed_forward(x)))
        return (x, self_weights, cross_weights) if need_weights else x

    def step(self, x, memory, memory_key_padding_mask, cache, layer):
        """One decoding step in eval mode: the new positions attend over themselves and the cached past.

        Equal to the last L_new rows of ``forward`` on all positions so far with ``tgt_is_causal=True``
        (tests/test_encoder_decoder.py). The self-attention's keys and values go to ``cache``
        (``attn_course.kv_cache``); the cross-attention reads ``memory``, which does not change.

        Args:
            x: (B, L_new, E), the new positions. memory: (B, S, E). memory_key_padding_mask: (B, S) or None.
            cache: a ``KVCache`` with H_kv = H, D = E / H. layer: this block's index in the cache.

        Returns:
            (x (B, L_new, E), cross_weights (B, H, L_new, S)).
        """
        if self.norm_first:
            x = x + cached_self_attention(self.self_attn, self.norm1(x), cache, layer)
            attn_output, cross_weights = self.cross_attention(self.norm2(x), memory, None, memory_key_padding_mask)
            x = x + attn_output
            x = x + self.feed_forward(self.norm3(x))
        else:
            x = self.norm1(x + cached_self_attention(self.self_attn, x, cache, layer))
            attn_output, cross_weights = self.cross_attention(x, memory, None, memory_key_padding_mask)
            x = self.norm2(x + attn_output)
            x = self.norm3(x + self.feed_forward(x))
        return x, cross_weights

    @classmethod
    def from_torch(cls, layer):
        """A ``DecoderBlock`` with the weights of a ``torch.nn.TransformerDecoderLayer(batch_first=True)``."""
        activation = {F.relu: "relu", F.gelu: "gelu"}.get(layer.activation)
        if activation is None:
            raise ValueError(f"from_torch copies layers whose activation is relu or gelu; got {layer.activation}")
        ours = cls(layer.linear1.in_features, layer.self_attn.num_heads, layer.linear1.out_features,
                   dropout=layer.dropout.p, norm_first=layer.norm_first, activation=activation,
                   layer_norm_eps=layer.norm1.eps, bias=layer.linear1.bias is not None)
        ours = ours.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        ours.multihead_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            getattr(ours, name).load_state_dict(getattr(layer, name).state_dict())
        return ours


class Transformer(nn.Module):
    """The encoder-decoder of Vaswani et al. (2017) on embedded inputs, as ``torch.nn.Transformer(batch_first=True)``.

    ``memory = encoder_norm(EncoderBlocks(src))``; ``out = decoder_norm(DecoderBlocks(tgt, memory))``.
    Like PyTorch's, both stacks end with a LayerNorm, in post-LN and pre-LN alike.

    Args:
        d_model: E. num_heads: H. num_encoder_layers, num_decoder_layers: N of each stack. d_ff: F.
        dropout, activation, norm_first, layer_norm_eps, bias: as in ``DecoderBlock``.

    Forward args:
        src: (B, S, E) float, the embedded source. tgt: (B, L, E), the embedded target (shifted right).
        src_mask (S, S), tgt_mask (L, L), memory_mask (L, S): ``attn_mask`` of the encoder's self-attention,
            the decoder's self-attention and the cross-attention; bool **True = ignore**, or float.
        src_key_padding_mask (B, S), tgt_key_padding_mask (B, L), memory_key_padding_mask (B, S):
            bool, True = padding. memory_key_padding_mask is usually ``src_key_padding_mask``.
        tgt_is_causal: build the decoder's causal mask inside (instead of ``tgt_mask``).

    Returns:
        (B, L, E), the decoder's output (before any projection to words).

    Raises:
        ValueError: E not divisible by H, an unknown activation, or inputs of the wrong shape.

    References: Vaswani et al. 2017, sections 3.1-3.3. With weights copied (``from_torch``), numerically
    equal to ``torch.nn.Transformer(batch_first=True)`` in eval mode, post-LN and pre-LN, with padding,
    causal and memory masks, float32 and float64 (tests/test_encoder_decoder.py).

    >>> model = Transformer(d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=16)
    >>> model(torch.randn(2, 6, 8), torch.randn(2, 4, 8), tgt_is_causal=True).shape
    torch.Size([2, 4, 8])
    """

    def __init__(self, d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, d_ff=2048,
                 dropout=0.1, activation="relu", norm_first=False, layer_norm_eps=1e-5, bias=True):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.encoder_layers = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, dropout, norm_first, activation, layer_norm_eps, bias)
            for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderBlock(d_model, num_heads, d_ff, dropout, norm_first, activation, layer_norm_eps, bias)
            for _ in range(num_decoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.decoder_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)

    def encode(self, src, src_mask=None, src_key_padding_mask=None, need_weights=False):
        """The encoder: (B, S, E) -> memory (B, S, E), or ``(memory, [self weights (B, H, S, S) per layer])``."""
        weights = []
        for block in self.encoder_layers:
            src, attn_weights = block(src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                                      need_weights=True)
            weights.append(attn_weights)
        memory = self.encoder_norm(src)
        return (memory, weights) if need_weights else memory

    def decode(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
               memory_key_padding_mask=None, tgt_is_causal=False, need_weights=False):
        """The decoder: (B, L, E) and memory (B, S, E) -> (B, L, E), or ``(out, self_weights, cross_weights)``
        with one (B, H, L, L) and one (B, H, L, S) tensor per layer in each list."""
        self_weights, cross_weights = [], []
        for block in self.decoder_layers:
            tgt, w_self, w_cross = block(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                                         memory_key_padding_mask, tgt_is_causal, need_weights=True)
            self_weights.append(w_self)
            cross_weights.append(w_cross)
        out = self.decoder_norm(tgt)
        return (out, self_weights, cross_weights) if need_weights else out

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False):
        memory = self.encode(src, src_mask, src_key_padding_mask)                          # (B, S, E)
        return self.decode(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                           memory_key_padding_mask, tgt_is_causal)                        # (B, L, E)

    @classmethod
    def from_torch(cls, model):
        """A ``Transformer`` with the weights of a ``torch.nn.Transformer(batch_first=True)``."""
        if not getattr(model.encoder.layers[0].self_attn, "batch_first", False):
            raise ValueError("from_torch copies a torch.nn.Transformer built with batch_first=True")
        first = model.encoder.layers[0]
        ours = cls(first.linear1.in_features, first.self_attn.num_heads, len(model.encoder.layers),
                   len(model.decoder.layers), first.linear1.out_features, dropout=first.dropout.p,
                   norm_first=first.norm_first, layer_norm_eps=first.norm1.eps,
                   bias=first.linear1.bias is not None)
        ours.encoder_layers = nn.ModuleList(TransformerBlock.from_torch(layer) for layer in model.encoder.layers)
        ours.decoder_layers = nn.ModuleList(DecoderBlock.from_torch(layer) for layer in model.decoder.layers)
        ours = ours.to(device=first.linear1.weight.device, dtype=first.linear1.weight.dtype)
        ours.encoder_norm.load_state_dict(model.encoder.norm.state_dict())
        ours.decoder_norm.load_state_dict(model.decoder.norm.state_dict())
        return ours


def shift_right(tgt_out, bos_id):
    """The decoder's input for teacher forcing: the labels shifted one position right, ``<bos>`` first.

    ``tgt_out = y_1 .. y_T <eos> <pad>..`` -> ``tgt_in = <bos> y_1 .. y_T <eos>? <pad>..``: position t of
    ``tgt_in`` holds ``y_t`` (``y_0 = <bos>``), so the decoder predicts ``y_{t+1}`` having read ``y_1 .. y_t``.
    The last column of ``tgt_out`` falls off (an ``<eos>`` or padding, which predicts nothing).

    Args:
        tgt_out: (B, L) int64 labels. bos_id: the id of ``<bos>``.

    Returns:
        tgt_in: (B, L) int64, same device.

    Raises:
        ValueError: ``tgt_out`` not a 2-D integer tensor.

    References: Williams & Zipser 1989 (teacher forcing); Vaswani et al. 2017, section 3.1 ("the output
    embeddings are offset by one position").

    >>> shift_right(torch.tensor([[5, 6, 7, 3]]), bos_id=2)
    tensor([[2, 5, 6, 7]])
    """
    if not isinstance(tgt_out, torch.Tensor) or tgt_out.dim() != 2 or tgt_out.is_floating_point():
        raise ValueError(f"tgt_out must be a (B, L) integer tensor; got "
                         f"{tuple(tgt_out.shape) if isinstance(tgt_out, torch.Tensor) else type(tgt_out).__name__}")
    bos = torch.full_like(tgt_out[:, :1], bos_id)                              # (B, 1)
    return torch.cat([bos, tgt_out[:, :-1]], dim=1)                            # (B, L)


class TransformerTranslator(nn.Module):
    """A translator: token embeddings x sqrt(E) + sinusoidal positions -> ``Transformer`` -> logits.

    ``logits = decoder_out @ W_emb^T + b``: the output layer shares its weights with the target embedding
    (Press & Wolf 2017; Vaswani et al. 2017, section 3.4, which multiplies the embeddings by sqrt(E)).
    Embeddings start N(0, 1/E), so that sqrt(E) x embedding has the scale of the positional encodings.

    Args:
        src_vocab_size, tgt_vocab_size: V of each side. d_model: E. num_heads: H.
        num_encoder_layers, num_decoder_layers, d_ff, dropout, norm_first, activation: as ``Transformer``.
        max_len: the longest source or target. padding_idx, bos_id, eos_id: special ids (target side for
            the last two). tie_embeddings: share the target embedding and the output layer's weights.

    Forward args:
        src: (B, S) int64. tgt_in: (B, L) int64, ``shift_right`` of the labels.
        src_key_padding_mask: bool (B, S), True = padding; default ``src == padding_idx``.
        need_weights: also return the attention weights.

    Returns:
        logits (B, L, V_tgt), or ``(logits, weights)`` with ``weights`` a dict of lists, one tensor per
        layer: ``"encoder"`` (B, H, S, S), ``"decoder"`` (B, H, L, L), ``"cross"`` (B, H, L, S).

    Raises:
        ValueError: ids not 2-D, or longer than ``max_len``.

    >>> model = TransformerTranslator(10, 12, d_model=8, num_heads=2, num_encoder_layers=1,
    ...                               num_decoder_layers=1, d_ff=16, max_len=8)
    >>> model(torch.tensor([[4, 5, 6]]), torch.tensor([[2, 7]])).shape
    torch.Size([1, 2, 12])
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=64, num_heads=4, num_encoder_layers=2,
                 num_decoder_layers=2, d_ff=256, dropout=0.1, max_len=64, norm_first=False, activation="relu",
                 padding_idx=0, bos_id=2, eos_id=3, tie_embeddings=True):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.padding_idx, self.bos_id, self.eos_id = padding_idx, bos_id, eos_id
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=padding_idx)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, padding_idx=padding_idx)
        for embedding in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(embedding.weight, std=d_model ** -0.5)
            with torch.no_grad():
                embedding.weight[padding_idx].zero_()
        self.positions = SinusoidalPositionalEncoding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(d_model, num_heads, num_encoder_layers, num_decoder_layers, d_ff,
                                       dropout, activation, norm_first)
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        if tie_embeddings:
            self.generator.weight = self.tgt_embedding.weight                  # (V, E), one tensor

    def _embed(self, ids, embedding):
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have shape (B, length) with length <= max_len={self.max_len}; "
                             f"got {tuple(ids.shape)}")
        return self.dropout(self.positions(embedding(ids) * math.sqrt(self.d_model)))  # (B, n) -> (B, n, E)

    def encode(self, src, src_key_padding_mask=None, need_weights=False):
        """Source ids (B, S) -> memory (B, S, E) (and the encoder's weights with ``need_weights``)."""
        if src_key_padding_mask is None:
            src_key_padding_mask = src == self.padding_idx
        return self.transformer.encode(self._embed(src, self.src_embedding),
                                       src_key_padding_mask=src_key_padding_mask, need_weights=need_weights)

    def decode(self, tgt_in, memory, memory_key_padding_mask, need_weights=False):
        """Teacher-forced decoder: (B, L) ids and memory -> logits (B, L, V) (and the decoder's weights)."""
        out = self.transformer.decode(self._embed(tgt_in, self.tgt_embedding), memory,
                                      tgt_key_padding_mask=tgt_in == self.padding_idx,
                                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=True,
                                      need_weights=need_weights)
        if need_weights:
            out, self_weights, cross_weights = out
            return self.generator(out), self_weights, cross_weights
        return self.generator(out)                                             # (B, L, E) -> (B, L, V)

    def forward(self, src, tgt_in, src_key_padding_mask=None, need_weights=False):
        if src_key_padding_mask is None:
            src_key_padding_mask = src == self.padding_idx                     # (B, S), True = padding
        if not need_weights:
            memory = self.encode(src, src_key_padding_mask)
            return self.decode(tgt_in, memory, src_key_padding_mask)
        memory, encoder_weights = self.encode(src, src_key_padding_mask, need_weights=True)
        logits, self_weights, cross_weights = self.decode(tgt_in, memory, src_key_padding_mask, need_weights=True)
        return logits, {"encoder": encoder_weights, "decoder": self_weights, "cross": cross_weights}

    def start_cache(self, batch_size, max_len, dtype=None, device=None):
        """An empty ``KVCache`` for the decoder's self-attention: N layers, H heads of D = E / H."""
        attn = self.transformer.decoder_layers[0].self_attn
        return KVCache(len(self.transformer.decoder_layers), batch_size, attn.num_heads, attn.head_dim, max_len,
                       dtype=dtype or self.generator.weight.dtype, device=device)

    def step(self, y_prev, memory, memory_key_padding_mask, cache):
        """One decoding step with the KV cache: the previous tokens (B, 1) -> log-probabilities (B, V) of the
        next one and the cross-attention weights of every layer, each (B, H, S). Eval mode."""
        position = cache.length
        x = self.tgt_embedding(y_prev) * math.sqrt(self.d_model)                           # (B, 1, E)
        x = x + self.positions.pe[:, position:position + 1].to(x.dtype)                    # its position's PE
        cross = []
        for layer, block in enumerate(self.transformer.decoder_layers):
            x, cross_weights = block.step(x, memory, memory_key_padding_mask, cache, layer)
            cross.append(cross_weights[:, :, 0])                                           # (B, H, S)
        cache.advance(1)
        logits = self.generator(self.transformer.decoder_norm(x))[:, 0]                    # (B, 1, E) -> (B, V)
        return F.log_softmax(logits.float(), dim=-1), cross


@torch.no_grad()
def greedy_decode(model, src, max_len=None, src_key_padding_mask=None):
    """Greedy decoding with the KV cache: feed back the most likely token until ``<eos>`` or ``max_len`` steps.

    Args:
        model: a ``TransformerTranslator`` (put in eval mode here). src: (B, S) int64.
        max_len: the most tokens to write (default ``model.max_len - 1``).
        src_key_padding_mask: (B, S) bool, True = padding; default ``src == model.padding_idx``.

    Returns:
        (ids (B, T) int64 without ``<bos>``, ending with ``<eos>`` where one was written, padding after it;
        cross_weights (B, N, H, T, S): every layer's cross-attention at every written step).
    """
    model.eval()
    if src_key_padding_mask is None:
        src_key_padding_mask = src == model.padding_idx
    max_len = max_len or model.max_len - 1
    memory = model.encode(src, src_key_padding_mask)                                       # (B, S, E)
    B = src.shape[0]
    cache = model.start_cache(B, max_len, dtype=memory.dtype, device=src.device)
    y = torch.full((B, 1), model.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    ids, weights = [], []
    for _ in range(max_len):
        log_probs, cross = model.step(y, memory, src_key_padding_mask, cache)             # (B, V)
        y = log_probs.argmax(-1, keepdim=True).masked_fill(done[:, None], model.padding_idx)  # (B, 1)
        ids.append(y)
        weights.append(torch.stack(cross, 1))                                              # (B, N, H, S)
        done |= y[:, 0] == model.eos_id
        if done.all():
            break
    return torch.cat(ids, 1), torch.stack(weights, 3)                                      # (B, T), (B, N, H, T, S)


def beam_search_step(log_probs, beam_scores, beam_size):
    """One step of beam search: the ``beam_size`` best continuations of K beams, for every sentence.

    A continuation of beam k by token v scores ``beam_scores[b, k] + log_probs[b, k, v]`` (the log-probability
    of the whole prefix); the best ``beam_size`` of the K x V candidates survive, best first.

    Args:
        log_probs: (B, K, V) float, log P(next token | beam k's prefix).
        beam_scores: (B, K) float, the log-probability of each beam's prefix (``-inf`` for an empty slot).
        beam_size: how many survive (<= K x V).

    Returns:
        (scores (B, beam_size), beam_idx (B, beam_size) int64 in 0..K-1: the beam each survivor extends,
        token_idx (B, beam_size) int64 in 0..V-1: the token it appends), sorted by score, best first.

    Raises:
        ValueError: shapes that disagree, or ``beam_size`` > K x V.

    References: Sutskever et al. 2014, section 3.1; Vaswani et al. 2017, section 6.1 (beam size 4).

    >>> lp = torch.tensor([[[-0.1, -2.3], [-0.5, -0.9]]]).log_softmax(-1)
    >>> beam_search_step(lp, torch.tensor([[-0.2, -1.0]]), beam_size=2)[1:]   # beam 0's best, then beam 1's
    (tensor([[0, 1]]), tensor([[0, 0]]))
    """
    if log_probs.dim() != 3 or beam_scores.shape != log_probs.shape[:2]:
        raise ValueError(f"log_probs must be (B, K, V) and beam_scores (B, K); got {tuple(log_probs.shape)} and "
                         f"{tuple(beam_scores.shape)}")
    B, K, V = log_probs.shape
    if not 0 < beam_size <= K * V:
        raise ValueError(f"beam_size must lie in 1..K*V = {K * V}; got {beam_size}")
    candidates = (beam_scores[:, :, None] + log_probs).reshape(B, K * V)       # (B, K, V) -> (B, K*V)
    scores, flat = candidates.topk(beam_size, dim=-1)                          # (B, beam_size) each
    return scores, flat // V, flat % V


@torch.no_grad()
def beam_search(model, src, beam_size=4, max_len=None, length_penalty=0.0, src_key_padding_mask=None):
    """Beam search with the KV cache: keep the ``beam_size`` most likely prefixes at every step.

    Each step ranks the 2K best continuations: an ``<eos>`` among the first K finishes a hypothesis, which leaves
    the beam; the K best others go on. The search stops after ``max_len`` steps, or once every sentence has K
    finished hypotheses and no live beam scores above the worst of them. The best is the highest ``score / length ** length_penalty`` (0: the plain
    log-probability, which prefers short outputs; Wu et al. 2016 use a length penalty near 0.6).

    Args:
        model: a ``TransformerTranslator`` (put in eval mode). src: (B, S) int64.
        beam_size: K >= 1 (K = 1 is greedy decoding). max_len: most tokens (default ``model.max_len - 1``).
        length_penalty: alpha >= 0. src_key_padding_mask: (B, S), True = padding.

    Returns:
        a list of B lists of token ids (the best hypothesis each, ``<eos>`` kept where written) and a
        list of their scores (log-probabilities, floats).

    References: Sutskever et al. 2014; Vaswani et al. 2017, section 6.1; Wu et al. 2016, section 7.
    """
    model.eval()
    if src_key_padding_mask is None:
        src_key_padding_mask = src == model.padding_idx
    max_len = max_len or model.max_len - 1
    B, K = src.shape[0], beam_size
    memory = model.encode(src, src_key_padding_mask)                                       # (B, S, E)
    memory = memory.repeat_interleave(K, 0)                                                # (B*K, S, E)
    pad = src_key_padding_mask.repeat_interleave(K, 0)                                     # (B*K, S)
    cache = model.start_cache(B * K, max_len, dtype=memory.dtype, device=src.device)
    beam_scores = torch.full((B, K), float("-inf"), device=src.device)
    beam_scores[:, 0] = 0.0                                                                # one live beam at first
    prefixes = torch.full((B, K, 0), model.bos_id, dtype=torch.long, device=src.device)
    y = torch.full((B * K, 1), model.bos_id, dtype=torch.long, device=src.device)
    finished = [[] for _ in range(B)]                                                      # (normalised score, ids)
    for t in range(max_len):
        log_probs, _ = model.step(y, memory, pad, cache)                                   # (B*K, V)
        scores, beam_idx, token_idx = beam_search_step(log_probs.view(B, K, -1), beam_scores, 2 * K)
        prefixes = torch.cat([prefixes.gather(1, beam_idx[:, :, None].expand(-1, -1, t)),
                              token_idx[:, :, None]], 2)                                   # (B, 2K, t + 1)
        is_eos = token_idx == model.eos_id
        for b, k in is_eos.nonzero().tolist():
            if k < K and scores[b, k] > float("-inf"):                                     # an <eos> among the K best
                finished[b].append((scores[b, k].item() / (t + 1) ** length_penalty, prefixes[b, k].tolist()))
                finished[b] = sorted(finished[b], key=lambda item: -item[0])[:K]
        live = scores.masked_fill(is_eos, float("-inf"))                                   # (B, 2K)
        beam_scores, order = live.topk(K, dim=-1)                                          # the K best live ones
        prefixes = prefixes.gather(1, order[:, :, None].expand(-1, -1, t + 1))             # (B, K, t + 1)
        origin = beam_idx.gather(1, order) + torch.arange(B, device=src.device)[:, None] * K  # rows of (B*K)
        for layer in range(cache.num_layers):                                              # reorder the cache
            cache.keys[layer] = cache.keys[layer][origin.flatten()]
            cache.values[layer] = cache.values[layer][origin.flatten()]
        y = prefixes[:, :, -1].reshape(B * K, 1)
        # done: K hypotheses finished and no live beam can still beat the worst of them (a prefix's
        # log-probability only falls as it grows; exact for length_penalty = 0, a heuristic above it)
        if all(len(f) >= K and beam_scores[b, 0].item() / (t + 1) ** length_penalty <= f[-1][0]
               for b, f in enumerate(finished)):
            break
    best = []
    for b in range(B):
        if not finished[b]:                                                                # nothing ended: keep the best live
            length = prefixes.shape[2]
            finished[b].append((beam_scores[b, 0].item() / max(length, 1) ** length_penalty, prefixes[b, 0].tolist()))
        best.append(max(finished[b], key=lambda item: item[0]))
    return [ids for _, ids in best], [score for score, _ in best]


def noam_schedule(d_model, warmup_steps):
    """The learning-rate factor of Vaswani et al. (2017), section 5.3, eq. 3, for ``LambdaLR`` (step from 0).

    ``lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)``, step counted from 1: linear
    warm-up for ``warmup_steps`` steps, then decay as 1/sqrt(step). The peak, at ``warmup_steps``, is
    ``(d_model * warmup_steps)^-0.5``. Use it with base ``lr=1`` (the paper's) or scale it.

    >>> f = noam_schedule(512, 4000)
    >>> round(f(3999) * 1e4, 3), round(f(0) * 1e7, 3)
    (6.988, 1.747)
    """
    def factor(step):
        step = step + 1
        return d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)
    return factor
