"""Different but correct implementations: the mutation suite's guard against false alarms.

Each is written another way than the reference (einsum, explicit loops, PyTorch's own fused ops,
float64 arithmetic) and must pass the thorough check of its function. A check that rejects one of
these is too strict, or tests the reference's accidents rather than the function's contract.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence


def pad_batch_pad_sequence(sequences, pad_id=0):
    tensors = [torch.as_tensor(s, dtype=torch.long) for s in sequences]
    ids = pad_sequence(tensors, batch_first=True, padding_value=pad_id)             # (B, T)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids, torch.arange(ids.shape[1]) >= lengths[:, None]                      # (B, T), True = padding


def token_embedding_from_pretrained(vocab_size, embed_dim, pad_id=0, generator=None):
    weight = torch.randn(vocab_size, embed_dim, generator=generator)
    weight[pad_id] = 0
    return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=pad_id)


def scaled_dot_scores_einsum(query, key):
    return torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(query.shape[-1])


def scaled_dot_scores_float64(query, key):
    q, k = query.double(), key.double()
    return (q @ k.transpose(-2, -1) * query.shape[-1] ** -0.5).to(query.dtype)


def additive_scores_loops(query, key, w_query, w_key, v):
    out = torch.empty(*query.shape[:-1], key.shape[-2], dtype=query.dtype)          # (..., L, S)
    for i in range(query.shape[-2]):
        for j in range(key.shape[-2]):
            hidden = torch.tanh(query[..., i, :] @ w_query.T + key[..., j, :] @ w_key.T)  # (..., A)
            out[..., i, j] = hidden @ v
    return out


def additive_scores_concat(query, key, w_query, w_key, v):
    L, S = query.shape[-2], key.shape[-2]
    pairs = torch.cat([query.unsqueeze(-2).expand(*query.shape[:-1], S, query.shape[-1]),
                       key.unsqueeze(-3).expand(*key.shape[:-2], L, S, key.shape[-1])], dim=-1)  # (..., L, S, Dq+Dk)
    return torch.tanh(pairs @ torch.cat([w_query, w_key], dim=1).T) @ v            # W [q; k]


def softmax_with_temperature_manual(attn_scores, temperature=1.0, dim=-1):
    z = attn_scores / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def attention_weights_einsum(query, key):
    scores = torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(query.shape[-1])
    return softmax_with_temperature_manual(scores)


def attention_weights_via_sdpa(query, key):
    eye = torch.eye(key.shape[-2], dtype=query.dtype).expand(*key.shape[:-1], key.shape[-2])  # value = I
    return F.scaled_dot_product_attention(query, key, eye)                        # = the weights


def sdpa_torch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False):
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, 0.0, is_causal)
    w = attention_weights_einsum(query, key)
    return F.dropout(w, p=dropout_p, training=True) @ value


def sdpa_float64(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False):
    q, k, v = query.double(), key.double(), value.double()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        w = w * (torch.rand_like(w) >= dropout_p) / (1 - dropout_p)
    return (w @ v).to(query.dtype)


def causal_mask_arange(L, S=None, device=None):
    S = L if S is None else S
    return torch.arange(S, device=device)[None, :] <= torch.arange(L, device=device)[:, None]


def causal_mask_triu(L, S=None, device=None):
    S = L if S is None else S
    return ~torch.ones(L, S, dtype=torch.bool, device=device).triu(diagonal=1)


def masked_softmax_where(attn_scores, attn_mask=None, dim=-1):
    if attn_mask is None:
        return torch.softmax(attn_scores, dim=dim)
    if attn_mask.dtype != torch.bool:
        return torch.softmax(attn_scores + attn_mask, dim=dim)
    mask = attn_mask.expand_as(attn_scores)
    z = torch.where(mask, attn_scores, torch.finfo(attn_scores.dtype).min)
    e = torch.exp(z - z.amax(dim=dim, keepdim=True)) * mask
    total = e.sum(dim=dim, keepdim=True)
    return torch.where(total > 0, e / total.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))


def split_heads_unflatten(x, num_heads):
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).permute(0, 2, 1, 3)


def merge_heads_permute(x):
    return x.permute(0, 2, 1, 3).flatten(2)


def multi_head_attention_loop(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
                              key_padding_mask=None):
    q, k, v = q_proj(query), k_proj(key), v_proj(value)                            # (B, *, E)
    D = q.shape[-1] // num_heads
    outputs, weights = [], []
    for h in range(num_heads):                                                      # one head at a time
        sl = slice(h * D, (h + 1) * D)
        scores = q[..., sl] @ k[..., sl].transpose(-2, -1) / math.sqrt(D)           # (B, L, S)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
        w = torch.softmax(scores, dim=-1)
        outputs.append(w @ v[..., sl])
        weights.append(w)
    return out_proj(torch.cat(outputs, dim=-1)), torch.stack(weights, dim=1)       # (B, L, E), (B, H, L, S)


class SinusoidalPositionalEncodingLoops(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        for pos in range(max_len):
            for i in range(0, d_model, 2):
                angle = pos / 10000 ** (i / d_model)
                pe[pos, i] = math.sin(angle)
                if i + 1 < d_model:
                    pe[pos, i + 1] = math.cos(angle)
        self.register_buffer("pe", pe.float())

    def forward(self, x):
        return x + self.pe[:x.shape[1]].to(x.dtype)


def transformer_block_with_sdpa(block, x, attn_mask=None, key_padding_mask=None):
    attn = block.self_attn
    B, L, E = x.shape
    H = attn.num_heads

    def attend(y):
        q, k, v = (p(y).view(B, L, H, E // H).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        mask = torch.ones(B, 1, L, L, dtype=torch.bool)
        if attn_mask is not None:
            mask = mask & ~attn_mask                       # the block's True = ignore -> SDPA's True = may attend
        if key_padding_mask is not None:
            mask = mask & ~key_padding_mask[:, None, None, :]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(ctx.transpose(1, 2).reshape(B, L, E))

    if block.norm_first:
        x = x + attend(block.norm1(x))
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + attend(x))
    return block.norm2(x + block.feed_forward(x))


def hard_attention_inverse_cdf(attn_scores, value, mode="argmax", generator=None):
    S = attn_scores.shape[-1]
    if mode == "argmax":
        index = attn_scores.detach().argmax(dim=-1)
    else:                                                   # inverse-CDF sampling instead of multinomial
        cdf = torch.softmax(attn_scores.detach().double(), dim=-1).cumsum(-1)           # (..., S)
        u = torch.rand(attn_scores.shape[:-1] + (1,), generator=generator, dtype=torch.float64)
        index = (u > cdf).sum(-1).clamp_max(S - 1)
    weights = F.one_hot(index, S).to(attn_scores.dtype)                                 # (..., S)
    context = torch.einsum("...s,...sd->...d", weights, value)
    return context, index, weights


def self_attention_einsum(x, w_query, w_key, w_value, key_padding_mask=None):
    q, k, v = (torch.einsum("ble,ed->bld", x, w) for w in (w_query, w_key, w_value))
    scores = torch.einsum("bld,bsd->bls", q, k) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


def cross_attention_einsum(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    q = torch.einsum("ble,ed->bld", decoder_states, w_query)
    k, v = (torch.einsum("bse,ed->bsd", encoder_states, w) for w in (w_key, w_value))
    scores = torch.einsum("bld,bsd->bls", q, k) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


def embedding_lookup_one_hot(ids, weight):
    return F.one_hot(ids, weight.shape[0]).to(weight.dtype) @ weight               # (B, T, V) @ (V, E)


def attention_einsum(query, key, value):
    w = attention_weights_einsum(query, key)
    return torch.einsum("...ls,...sd->...ld", w, value), w


def gumbel_softmax_st_uniform(logits, tau=1.0, hard=False, generator=None):
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    gumbels = (-torch.log(-torch.log(u))).to(logits.dtype)                          # Gumbel(0, 1) from uniforms
    y_soft = F.softmax((logits + gumbels) / tau, dim=-1)
    if not hard:
        return y_soft
    y_hard = F.one_hot(y_soft.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return (y_hard - y_soft).detach() + y_soft


def _softmax_over_kept(attn_scores, keep):
    """Softmax over the last axis of the positions where ``keep`` is True; a row keeping none is all zeros."""
    masked = attn_scores.masked_fill(~keep, float("-inf"))
    top = masked.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))             # rows with no key kept
    e = torch.exp(masked - top)                                                     # exp(-inf) = 0 off the kept keys
    total = e.sum(dim=-1, keepdim=True)
    return e / total.clamp_min(torch.finfo(e.dtype).tiny)


def additive_attention_concat_float64(query, key, value, w_query, w_key, v, key_padding_mask=None):
    B, S = key.shape[:2]
    q, k = query.double(), key.double()
    pairs = torch.cat([q[:, None].expand(B, S, q.shape[-1]), k], dim=-1)           # (B, S, Dq + Dk)
    attn_scores = torch.tanh(pairs @ torch.cat([w_query, w_key], dim=1).double().T) @ v.double()  # W [q; k_j]: (B, S)
    keep = torch.ones(B, S, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    attn_weights = _softmax_over_kept(attn_scores, keep)                            # (B, S)
    context = torch.einsum("bs,bsd->bd", attn_weights, value.double())              # (B, Dv)
    return context.to(value.dtype), attn_weights.to(query.dtype)


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's GRU equations, gates in its order: reset, update, new."""
    r_x, z_x, n_x = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return (1 - z) * n + z * h


def seq2seq_forward_by_hand(model, src, key_padding_mask, tgt_in=None):
    """``Seq2Seq.forward`` from the model's parameters: each sentence encoded alone (no packing), GRU
    equations written out, attention by einsum."""
    enc, dec, rnn = model.encoder, model.decoder, model.encoder.rnn
    B, S = src.shape
    Hh = rnn.hidden_size
    forward_w = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    backward_w = (rnn.weight_ih_l0_reverse, rnn.weight_hh_l0_reverse, rnn.bias_ih_l0_reverse, rnn.bias_hh_l0_reverse)
    dtype = enc.embedding.weight.dtype
    enc_states = torch.zeros(B, S, 2 * Hh, dtype=dtype)                            # 0 on padding
    summaries = []
    for b in range(B):                                                              # one sentence, its real words only
        n = int((~key_padding_mask[b]).sum())
        x = enc.embedding.weight[src[b, :n]]                                        # (n, E)
        h_fwd, h_bwd = torch.zeros(Hh, dtype=dtype), torch.zeros(Hh, dtype=dtype)
        for t in range(n):
            h_fwd = _gru_cell(x[t], h_fwd, *forward_w)
            enc_states[b, t, :Hh] = h_fwd
        for t in reversed(range(n)):
            h_bwd = _gru_cell(x[t], h_bwd, *backward_w)
            enc_states[b, t, Hh:] = h_bwd
        summaries.append(torch.cat([h_fwd, h_bwd]))                                 # last forward, first backward
    summary = torch.stack(summaries)                                                # (B, 2H)

    att, cell = dec.attention, dec.cell
    state = torch.tanh(summary @ dec.init_state.weight.T + dec.init_state.bias)     # (B, Hd)
    y = torch.full((B,), dec.bos_id, dtype=torch.long) if tgt_in is None else tgt_in[:, 0]
    steps = dec.max_len if tgt_in is None else tgt_in.shape[1]
    finished = torch.zeros(B, dtype=torch.bool)
    all_logits, all_weights = [], []
    for t in range(steps):
        emb = dec.embedding.weight[y]                                               # (B, E)
        if att is None:
            context, attn_weights = summary, torch.zeros(B, S, dtype=dtype)
        else:
            hidden = torch.tanh((state @ att.w_query.weight.T)[:, None] + enc_states @ att.w_key.weight.T)  # (B, S, A)
            attn_scores = torch.einsum("bsa,a->bs", hidden, att.v.weight[0])
            attn_weights = torch.softmax(attn_scores.masked_fill(key_padding_mask, float("-inf")), dim=-1)
            context = torch.einsum("bs,bsd->bd", attn_weights, enc_states)          # (B, 2H)
        state = _gru_cell(torch.cat([emb, context], dim=-1), state, cell.weight_ih, cell.weight_hh,
                          cell.bias_ih, cell.bias_hh)
        logits = torch.cat([state, context, emb], dim=-1) @ dec.out.weight.T + dec.out.bias  # (B, V)
        all_logits.append(logits)
        all_weights.append(attn_weights)
        if tgt_in is None:                                                          # greedy, until every <eos>
            y = logits.argmax(-1)
            finished = finished | (y == dec.eos_id)
            if finished.all():
                break
        elif t + 1 < steps:
            y = tgt_in[:, t + 1]
    return torch.stack(all_logits, dim=1), torch.stack(all_weights, dim=1)         # (B, L, V), (B, L, S)


def attention_pooling_loops(attn_scores, value, key_padding_mask=None):
    B, S = attn_scores.shape
    attn_weights = torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):                                                              # one review at a time
        real = (torch.arange(S) if key_padding_mask is None else (~key_padding_mask[b]).nonzero().flatten())
        if len(real):
            s = attn_scores[b, real].double()
            e = torch.exp(s - s.max())
            attn_weights[b, real] = e / e.sum()                                     # padding stays exactly 0
    context = torch.stack([(attn_weights[b, :, None] * value[b].double()).sum(0) for b in range(B)])  # (B, Dv)
    return context.to(value.dtype), attn_weights.to(attn_scores.dtype)


def spatial_attention_pool_einsum(features, query):
    B, C, H, W = features.shape
    f, q = features.double(), query.double().expand(B, C)                           # (C,) or (B, C) -> (B, C)
    attn_scores = torch.einsum("bchw,bc->bhw", f, q) / math.sqrt(C)                 # on the grid, not flattened
    attn_weights = torch.exp(attn_scores - attn_scores.logsumexp(dim=(1, 2), keepdim=True))  # over all H*W
    pooled = torch.einsum("bchw,bhw->bc", f, attn_weights)
    return pooled.to(features.dtype), attn_weights.reshape(B, H * W).to(features.dtype)  # s = h * W + w


def attention_map_row_slices(attn_weights, height, width):
    rows = [attn_weights[:, h * width:(h + 1) * width] for h in range(height)]     # row h: positions h*W .. h*W+W-1
    return torch.stack(rows, dim=1)                                                 # (B, height, width)


def soft_attention_per_image(query, features, w_query, w_key, v):
    contexts, weights = [], []
    for q, f in zip(query, features):                                               # (Hd,), (S, C): one image
        attn_scores = torch.tanh(F.linear(f, w_key) + F.linear(q, w_query)) @ v     # (S, A) @ (A,) -> (S,)
        w = torch.exp(attn_scores - attn_scores.logsumexp(dim=0))                   # over the S positions
        weights.append(w)
        contexts.append(w @ f)                                                      # (S,) @ (S, C) -> (C,)
    return torch.stack(contexts), torch.stack(weights)


def query_attention_pool_einsum_float64(query, key, value, key_padding_mask=None):
    B, S, E = key.shape
    attn_scores = torch.einsum("bse,be->bs", key.double(), query.double().expand(B, E)) / math.sqrt(E)
    keep = torch.ones(B, S, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    attn_weights = _softmax_over_kept(attn_scores, keep)                            # (B, S)
    context = torch.einsum("bs,bsd->bd", attn_weights, value.double())              # (B, Dv)
    return context.to(value.dtype), attn_weights.to(key.dtype)


def subsample_padding_mask_conv(key_padding_mask, stride=2):
    centre = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]).view(1, 1, 5)                 # reads the frame under the centre
    out = F.conv1d(key_padding_mask.float().unsqueeze(1), centre, stride=stride, padding=2)  # (B, 1, ceil(S / stride))
    return out.squeeze(1) > 0.5


def rouge_1_f1_matching(candidate, reference):
    unmatched, overlap = list(reference), 0
    for word in candidate:                                  # each reference word can be matched once (clipping)
        if word in unmatched:
            unmatched.remove(word)
            overlap += 1
    if overlap == 0:
        return 0.0
    return 2 * overlap / (len(candidate) + len(reference))  # 2PR / (P + R), P = overlap / |c|, R = overlap / |r|


def word_attention_masked_float64(word_scores, h_words, key_padding_mask):
    word_weights = _softmax_over_kept(word_scores.double(), ~key_padding_mask)     # (B, N, T): within each sentence
    sentence_vectors = torch.einsum("bnt,bntd->bnd", word_weights, h_words.double())
    return sentence_vectors.to(h_words.dtype), word_weights.to(word_scores.dtype)


def sample_next_gumbel_max(logits, temperature=1.0, top_k=None, generator=None):
    z = logits.double() / temperature                                               # (B, V), a new tensor
    if top_k is not None:
        kth = z.sort(dim=-1, descending=True).values[:, top_k - 1:top_k]           # (B, 1), the k-th largest
        z = z.masked_fill(z < kth, float("-inf"))
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64, device=z.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))  # Gumbel(0, 1)
    return (z + gumbel).argmax(dim=-1)                                              # Gumbel-max: argmax ~ softmax(z)


def _linear64(x, layer):
    return F.linear(x, layer.weight.double(), layer.bias.double())


def char_transformer_forward_float64(model, ids):
    """``CharTransformer.forward`` in float64 from the model's parameters: einsum attention, explicit mask."""
    B, L = ids.shape
    E = model.embedding.weight.shape[1]
    x = model.embedding.weight.double()[ids]                                        # (B, L, E)
    learned = getattr(model.positional, "position_embeddings", None)
    if learned is not None:
        x = x + learned.weight.double()[:L]
    else:                                                                           # sin on even columns, cos on odd
        angle = torch.arange(L, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, E, 2) / E)  # (L, E/2)
        x = x + torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :E]
    allowed = torch.ones(L, L, dtype=torch.bool).tril()                             # row i sees 0..i
    for block in model.blocks:                                                      # pre-LN blocks
        attn, H = block.self_attn, block.self_attn.num_heads
        h = F.layer_norm(x, (E,), block.norm1.weight.double(), block.norm1.bias.double(), block.norm1.eps)
        q, k, v = (_linear64(h, p).view(B, L, H, E // H) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        scores = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(E // H)
        w = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)     # (B, H, L, L)
        x = x + _linear64(torch.einsum("bhls,bshd->blhd", w, v).reshape(B, L, E), attn.out_proj)
        h = F.layer_norm(x, (E,), block.norm2.weight.double(), block.norm2.bias.double(), block.norm2.eps)
        act = F.gelu if block.activation == "gelu" else F.relu
        x = x + _linear64(act(_linear64(h, block.linear1)), block.linear2)
    x = F.layer_norm(x, (E,), model.norm.weight.double(), model.norm.bias.double(), model.norm.eps)
    return _linear64(x, model.lm_head).to(model.lm_head.weight.dtype)              # (B, L, V)


class MultiHeadAttentionTorch(nn.Module):
    """PyTorch's own layer, built for batch-first tensors; every head's weights."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)

    def forward(self, query, key, value, key_padding_mask=None):
        return self.attn(query, key, value, key_padding_mask=key_padding_mask, average_attn_weights=False)


class MultiHeadAttentionFusedEinsum(nn.Module):
    """One fused input projection (E -> 3E), per-head weights W^Q_h as an (H, D, E) view, einsum throughout."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, key_padding_mask=None):
        E, H = query.shape[-1], self.num_heads
        w = self.in_proj.weight.view(3, H, E // H, E)                                  # (3, H, D, E)
        b = self.in_proj.bias.view(3, H, 1, E // H)                                    # (3, H, 1, D)
        q, k, v = (torch.einsum("bte,hde->bhtd", t, w[i]) + b[i] for i, t in enumerate((query, key, value)))
        scores = torch.einsum("bhld,bhsd->bhls", q, k) / math.sqrt(E // H)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)                                        # (B, H, L, S)
        return self.out(torch.einsum("bhls,bhsd->blhd", weights, v).flatten(2)), weights


def apply_rotary_complex_half_split(x, positions, base=10000.0):
    """RoPE as complex multiplication (Meta's form) on the half-split pairs: x viewed as (..., 2, D/2), the two
    halves made the real and imaginary parts, times exp(i p theta), in float64."""
    D = x.shape[-1]
    halves = x.double().unflatten(-1, (2, D // 2)).transpose(-2, -1)                # (..., L, D/2, 2): (x_i, x_i+D/2)
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)                # (D/2,)
    angle = positions.double()[..., None] * theta                                    # (..., L, D/2)
    turned = torch.view_as_complex(halves.contiguous()) * torch.polar(torch.ones_like(angle), angle)
    return torch.view_as_real(turned).transpose(-2, -1).flatten(-2).to(x.dtype)     # (..., L, 2, D/2) -> (..., L, D)


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_rotate_half(x, positions, base=10000.0):
    """Hugging Face's Llama: inv_freq and cos/sin in float32 whatever x's dtype, x * cos + rotate_half(x) * sin."""
    D = x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2).float() / D))                   # (D/2,)
    freqs = positions.float()[..., None] * inv_freq                                  # (..., L, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)                                          # (..., L, D)
    return (x * emb.cos() + _rotate_half(x) * emb.sin()).to(x.dtype)


def _attend_sdpa(attn, query, key_value, allowed):
    """``attn``'s projections around PyTorch's fused attention; ``allowed`` is SDPA's mask (True = may attend)."""
    B, L, E = query.shape
    S, H = key_value.shape[1], attn.num_heads
    q = attn.q_proj(query).view(B, L, H, E // H).transpose(1, 2)                   # (B, H, L, D)
    k, v = (p(key_value).view(B, S, H, E // H).transpose(1, 2) for p in (attn.k_proj, attn.v_proj))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)           # (B, H, L, D)
    return attn.out_proj(context.transpose(1, 2).reshape(B, L, E))


def decoder_block_with_sdpa(block, x, memory, tgt_mask, memory_key_padding_mask):
    """The block's masks turned to SDPA's polarity once (True = may attend), the LN placement chosen per sublayer."""
    may_see_past = ~tgt_mask                                                        # (L, L)
    may_see_source = ~memory_key_padding_mask[:, None, None, :]                     # (B, 1, 1, S)
    sublayers = [(block.norm1, lambda h: _attend_sdpa(block.self_attn, h, h, may_see_past)),
                 (block.norm2, lambda h: _attend_sdpa(block.multihead_attn, h, memory, may_see_source)),
                 (block.norm3, block.feed_forward)]
    for norm, sublayer in sublayers:
        x = x + sublayer(norm(x)) if block.norm_first else norm(x + sublayer(x))
    return x


def decoder_block_float64(block, x, memory, tgt_mask, memory_key_padding_mask):
    """Every sublayer written out from the weights, in float64, with einsum; the masks filled with -inf."""
    def attend(attn, query, key_value, ignore):                                     # ignore: True = masked
        B, L, E = query.shape
        H = attn.num_heads
        q = _linear64(query, attn.q_proj).view(B, L, H, E // H)
        k, v = (_linear64(key_value, p).view(B, key_value.shape[1], H, E // H) for p in (attn.k_proj, attn.v_proj))
        scores = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(E // H)
        w = torch.softmax(scores.masked_fill(ignore, float("-inf")), dim=-1)        # (B, H, L, S)
        return _linear64(torch.einsum("bhls,bshd->blhd", w, v).reshape(B, L, E), attn.out_proj)

    def norm(h, layer):
        return F.layer_norm(h, h.shape[-1:], layer.weight.double(), layer.bias.double(), layer.eps)

    act = F.gelu if block.activation == "gelu" else F.relu
    x, memory = x.double(), memory.double()
    sublayers = [(block.norm1, lambda h: attend(block.self_attn, h, h, tgt_mask)),
                 (block.norm2, lambda h: attend(block.multihead_attn, h, memory, memory_key_padding_mask[:, None, None])),
                 (block.norm3, lambda h: _linear64(act(_linear64(h, block.linear1)), block.linear2))]
    for layer, sublayer in sublayers:
        if block.norm_first:
            x = x + sublayer(norm(x, layer))
        else:
            x = norm(x + sublayer(x), layer)
    return x.to(block.linear1.weight.dtype)


def shift_right_pad(tgt_out, bos_id):
    return F.pad(tgt_out[:, :-1], (1, 0), value=bos_id)                             # (B, L - 1) -> (B, L)


def shift_right_roll(tgt_out, bos_id):
    tgt_in = tgt_out.roll(1, dims=1)                                                # the last label wraps round
    tgt_in[:, 0] = bos_id                                                           # ... and is overwritten
    return tgt_in


def beam_search_step_sort(log_probs, beam_scores, beam_size):
    """A full descending sort of the K x V candidates; the flat index unravelled with torch.unravel_index."""
    B, K, V = log_probs.shape
    candidates = (beam_scores.unsqueeze(-1) + log_probs).flatten(1)                # (B, K*V)
    scores, order = candidates.sort(dim=-1, descending=True)
    beam_idx, token_idx = torch.unravel_index(order[:, :beam_size], (K, V))
    return scores[:, :beam_size], beam_idx, token_idx


def beam_search_step_two_stage(log_probs, beam_scores, beam_size):
    """Each beam's best min(beam_size, V) tokens first, then the best beam_size of those K x n candidates."""
    B, K, V = log_probs.shape
    n = min(beam_size, V)
    top_log_probs, top_tokens = log_probs.topk(n, dim=-1)                           # (B, K, n)
    candidates = (beam_scores[:, :, None] + top_log_probs).reshape(B, K * n)
    scores, pick = candidates.topk(beam_size, dim=-1)                               # (B, beam_size)
    return scores, pick // n, top_tokens.reshape(B, K * n).gather(1, pick)


# check name -> correct variants
def interleaved_to_half_split_by_index(weight, num_heads):
    """The new row order as an index, head by head: evens of each head, then its odds."""
    D = weight.shape[0] // num_heads
    order = torch.cat([h * D + torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)]) for h in range(num_heads)])
    return weight[order]


def alignment_crosses_loop(attn_weights):
    """Row by row, in plain Python: does any peak lie left of the one before?"""
    peaks = attn_weights.argmax(-1).tolist()                             # (B, T) as lists
    return torch.tensor([any(b < a for a, b in zip(row, row[1:])) for row in peaks], dtype=torch.bool)


def alignment_crosses_sorted(attn_weights):
    """A monotone sequence equals its sorted self."""
    peaks = attn_weights.argmax(dim=-1)                                  # (B, T)
    return (peaks != peaks.sort(dim=-1).values).any(dim=-1)


def padding_probe_max_difference(pooling):
    """Another probe: one review, padding with huge scores and values, the largest change of the context."""
    attn_scores = torch.tensor([[0.3, -1.2, 2.0, 0.0, 0.0]])
    value = torch.arange(10.0).view(1, 5, 2)
    mask = torch.tensor([[False, False, False, True, True]])
    context, _ = pooling(attn_scores, value, mask)
    wider, _ = pooling(torch.cat([attn_scores, torch.full((1, 3), 50.0)], 1),
                       torch.cat([value, torch.full((1, 3, 2), -1e3)], 1), torch.cat([mask, torch.ones(1, 3, dtype=torch.bool)], 1))
    return bool((context - wider).abs().max() > 1e-4)


def greedy_decode_preallocated(step, state, batch_size, max_len):
    """Every place filled in advance with PAD and 0; no early stop: a row's words are kept while it runs."""
    BOS, EOS, PAD = 11, 10, -1
    word = torch.full((batch_size,), BOS)
    words = torch.full((batch_size, max_len), PAD)
    weights = None
    ended = torch.zeros(batch_size, dtype=torch.bool)
    for t in range(max_len):
        logits, state, attn_weights = step(word, state)
        if weights is None:
            weights = attn_weights.new_zeros(batch_size, max_len, attn_weights.shape[-1])
        word = logits.argmax(dim=1)
        words[~ended, t] = word[~ended]
        weights[~ended, t] = attn_weights[~ended]
        ended = ended | (word == EOS)
    return words, weights


def greedy_decode_row_by_row(step, state, batch_size, max_len):
    """Decode the batch, then cut each row after its first <eos> in plain Python."""
    BOS, EOS, PAD = 11, 10, -1
    word, words, weights = torch.full((batch_size,), BOS), [], []
    for _ in range(max_len):
        logits, state, attn_weights = step(word, state)
        word = logits.argmax(-1)
        words.append(word)
        weights.append(attn_weights)
    words, weights = torch.stack(words, 1).clone(), torch.stack(weights, 1).clone()     # (B, T), (B, T, S)
    for b, row in enumerate(words.tolist()):
        if EOS in row:
            end = row.index(EOS) + 1
            words[b, end:] = PAD
            weights[b, end:] = 0
    return words, weights


def attention_on_ink_unfold(attn_weights, images, height, width, threshold=0.3):
    """Cells cut out by hand with unfold (equal cells), the mask and sums in float64."""
    B, _, H, W = images.shape
    cells = images.unfold(2, H // height, H // height).unfold(3, W // width, W // width)   # (B, 1, h, w, sy, sx)
    ink = cells.double().mean(dim=(-1, -2)).reshape(B, -1) > threshold                    # (B, h*w)
    on_ink = torch.where(ink, attn_weights.double(), torch.zeros((), dtype=torch.float64)).sum(-1)
    return on_ink.to(attn_weights.dtype), ink.double().mean(-1).to(images.dtype)


def stack_frames_loop(x, key_padding_mask, factor=2):
    """Group by group in Python: concatenate the frames that exist, zeros for those past the end."""
    B, S, F_ = x.shape
    groups, masks = [], []
    for start in range(0, S, factor):
        frames = [x[:, s] if s < S else x.new_zeros(B, F_) for s in range(start, start + factor)]
        groups.append(torch.cat(frames, dim=-1))                                   # (B, factor * F)
        masks.append(key_padding_mask[:, start])                                   # the group's first frame
    return torch.stack(groups, 1), torch.stack(masks, 1)


VARIANTS = {
    "check_pad_batch": [pad_batch_pad_sequence],
    "check_embedding_lookup": [embedding_lookup_one_hot],
    "check_attention": [attention_einsum],
    "check_gumbel_softmax_st": [gumbel_softmax_st_uniform],
    "check_token_embedding": [token_embedding_from_pretrained],
    "check_scaled_dot_scores": [scaled_dot_scores_einsum, scaled_dot_scores_float64],
    "check_additive_scores": [additive_scores_loops, additive_scores_concat],
    "check_softmax_with_temperature": [softmax_with_temperature_manual],
    "check_attention_weights": [attention_weights_einsum, attention_weights_via_sdpa],
    "check_scaled_dot_product_attention": [sdpa_torch, sdpa_float64],
    "check_causal_mask": [causal_mask_arange, causal_mask_triu],
    "check_masked_softmax": [masked_softmax_where],
    "check_hard_attention": [hard_attention_inverse_cdf],
    "check_hard_attention_argmax": [lambda s, v: hard_attention_inverse_cdf(s, v)],
    "check_self_attention": [self_attention_einsum],
    "check_cross_attention": [cross_attention_einsum],
    "check_split_heads": [split_heads_unflatten],
    "check_merge_heads": [merge_heads_permute],
    "check_multi_head_attention": [multi_head_attention_loop],
    "check_positional_encoding": [SinusoidalPositionalEncodingLoops],
    "check_multi_head_attention_module": [MultiHeadAttentionTorch, MultiHeadAttentionFusedEinsum],
    "check_transformer_block": [transformer_block_with_sdpa],
    "check_additive_attention": [additive_attention_concat_float64],
    "check_seq2seq_forward": [seq2seq_forward_by_hand],
    "check_alignment_crosses": [alignment_crosses_loop, alignment_crosses_sorted],
    "check_padding_probe": [padding_probe_max_difference],
    "check_attention_pooling": [attention_pooling_loops],
    "check_spatial_attention_pool": [spatial_attention_pool_einsum],
    "check_attention_map": [attention_map_row_slices],
    "check_attention_on_ink": [attention_on_ink_unfold],
    "check_soft_attention": [soft_attention_per_image],
    "check_greedy_decode": [greedy_decode_preallocated, greedy_decode_row_by_row],
    "check_query_attention_pool": [query_attention_pool_einsum_float64],
    "check_subsample_padding_mask": [subsample_padding_mask_conv],
    "check_stack_frames": [stack_frames_loop],
    "check_rouge_1_f1": [rouge_1_f1_matching],
    "check_word_attention": [word_attention_masked_float64],
    "check_sample_next": [sample_next_gumbel_max],
    "check_lm_forward": [char_transformer_forward_float64],
    "check_apply_rotary": [apply_rotary_complex_half_split, apply_rotary_rotate_half],
    "check_interleaved_to_half_split": [interleaved_to_half_split_by_index],
    "check_decoder_block": [decoder_block_with_sdpa, decoder_block_float64],
    "check_shift_right": [shift_right_pad, shift_right_roll],
    "check_beam_search_step": [beam_search_step_sort, beam_search_step_two_stage],
}
