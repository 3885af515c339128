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
            mask = mask & attn_mask
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


# check name -> correct variants
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
    "check_transformer_block": [transformer_block_with_sdpa],
}
