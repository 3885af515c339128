"""Checks of lesson 06: split and merge heads, multi-head attention."""
import functools

import torch

from .. import attention, data, heads, pretrained
from .core import (
    CheckFailure,
    call_learner,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    format_shape,
    random_tensor,
)
from .remote import type_name
from .tripwire import MHA, package


def matches(actual, candidate, atol=1e-5):
    """Whether ``actual`` equals ``candidate`` (same shape, values within ``atol``): a known-bug detector."""
    return (isinstance(actual, torch.Tensor) and actual.shape == candidate.shape
            and torch.allclose(actual.detach().cpu().to(candidate.dtype), candidate.detach().cpu(), atol=atol,
                               rtol=1e-4))


def _split_cases(thorough):
    """(label, B, L, E, H, dtype); the first case holds 0, 1, 2, ... (torch.arange) instead of random numbers."""
    yield "B=1, L=3 tokens, E=8, H=2 heads, x = torch.arange", 1, 3, 8, 2, torch.float32
    if thorough:
        yield "batched: B=2, L=5, E=12, H=3", 2, 5, 12, 3, torch.float32
        yield "float64: B=3, L=4, E=16, H=4", 3, 4, 16, 4, torch.float64
        yield "head_dim 1: B=2, L=3, E=H=6", 2, 3, 6, 6, torch.float32
        yield "one token: B=2, L=1, E=8, H=4", 2, 1, 8, 4, torch.float32


@forbids(*package(heads.split_heads))
def check_split_heads(fn, thorough=False, seed=60):
    """``fn(x (B, L, E), num_heads) -> (B, H, L, D)`` with ``out[b, h, l] == x[b, l, h*D:(h+1)*D]``."""
    g = torch.Generator().manual_seed(seed)
    for i, (case, B, L, E, H, dtype) in enumerate(_split_cases(thorough)):
        D = E // H
        x = torch.arange(B * L * E, dtype=dtype).view(B, L, E) if i == 0 else random_tensor(g, B, L, E, dtype=dtype)
        got = call_learner(fn, (x.clone(), H), case)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, L, H, D) != (B, H, L, D):
            raise CheckFailure("shape", f"{case}: the heads should have shape (B, H, L, D) = {format_shape((B, H, L, D))}; "
                                        f"got {format_shape(got.shape)} = (B, L, H, D). Did you transpose after view? "
                                        f"x.view(B, L, H, D).transpose(1, 2) puts the head axis before the tokens.")

        def hint(actual, expected, x=x, B=B, L=L, H=H, D=D):
            if matches(actual, x.reshape(B, H, L, D)):
                return ("Yours equals x.view(B, H, L, D): view alone cuts the numbers in memory order, so head 0 "
                        "gets the first tokens' whole vectors instead of its D features of every token. Did you "
                        "transpose after view? Use x.view(B, L, H, D).transpose(1, 2).")
            if matches(actual, x.reshape(B, L, D, H).permute(0, 3, 1, 2)):
                return (f"Head h should own the block of features h*D .. (h+1)*D - 1 (D = {D}), not every "
                        f"{H}-th feature: view(B, L, H, D), not view(B, L, D, H).")
            return f"out[b, h, l, :] must equal x[b, l, h*D:(h+1)*D] with D = E // num_heads = {D}."
        expect_tensor("heads", got, heads.split_heads(x, H), case, "(B, H, L, D)", atol=0, rtol=0, hint=hint)


@forbids(*package(heads.merge_heads))
def check_merge_heads(fn, thorough=False, seed=61):
    """``fn(x (B, H, L, D)) -> (B, L, H*D)``, the inverse of ``split_heads``."""
    g = torch.Generator().manual_seed(seed)
    for i, (case, B, L, E, H, dtype) in enumerate(_split_cases(thorough)):
        D = E // H
        x = torch.arange(B * H * L * D, dtype=dtype).view(B, H, L, D) if i == 0 else random_tensor(g, B, H, L, D, dtype=dtype)
        try:
            got = call_learner(fn, (x.clone(),), case)
        except CheckFailure as err:
            if "view size is not compatible" in str(err):
                raise CheckFailure("error", f"{err} After transpose(1, 2) the tensor is not contiguous in "
                                            f"memory, so view refuses it: use .reshape(B, L, E) (or "
                                            f".contiguous().view).") from None
            raise

        def hint(actual, expected, x=x, B=B, L=L, E=E):
            if matches(actual, x.reshape(B, L, E)):
                return ("Yours equals x.reshape(B, L, E) without a transpose: that mixes tokens across heads. Did "
                        "you transpose(1, 2) before reshape? Use x.transpose(1, 2).reshape(B, L, E).")
            return "out[b, l, h*D:(h+1)*D] must equal x[b, h, l, :]: transpose(1, 2), then reshape(B, L, E)."
        expect_tensor("merged", got, heads.merge_heads(x), case, "(B, L, E)", atol=0, rtol=0, hint=hint)
        if matches(got, heads.merge_heads(x)) and not torch.equal(heads.split_heads(got, H), x):
            raise CheckFailure("values", f"{case}: split_heads(merge_heads(x), H) should give x back.")


def _mha_cases(thorough):
    """(label, B, L, S, E, H, dtype, key lengths or None, self-attention?)."""
    yield "self-attention: B=1, L=S=4, E=8, H=2", 1, 4, 4, 8, 2, torch.float32, None, True
    if thorough:
        yield ("cross-attention with padding: B=2, L=3, S=5, E=12, H=3, key lengths [5, 2]", 2, 3, 5, 12, 3,
               torch.float32, [5, 2], False)
        yield ("float64 self-attention with padding: B=3, L=S=6, E=16, H=4, lengths [6, 4, 1]", 3, 6, 6, 16, 4,
               torch.float64, [6, 4, 1], True)
        yield "one head: B=2, L=5, S=3, E=6, H=1", 2, 5, 3, 6, 1, torch.float32, None, False
        yield "head_dim 2, large inputs (x4): B=2, L=S=4, E=16, H=8", 2, 4, 4, 16, 8, torch.float32, None, True


def _linear(g, E, dtype):
    proj = torch.nn.Linear(E, E).to(dtype)
    with torch.no_grad():
        proj.weight.copy_(random_tensor(g, E, E, scale=E ** -0.5, dtype=dtype))
        proj.bias.copy_(random_tensor(g, E, scale=0.1, dtype=dtype))
    return proj


def _mha_weight_hint(query, key, projs, H, key_padding_mask):
    B, L, E = query.shape
    S, D = key.shape[1], E // H
    keep = None if key_padding_mask is None else attention.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)
    with torch.no_grad():
        q, k = projs[0](query), projs[1](key)                                   # (B, L, E), (B, S, E)
        q_h, k_h = heads.split_heads(q, H), heads.split_heads(k, H)             # (B, H, L, D), (B, H, S, D)
        q_v, k_v = q.reshape(B, H, L, D), k.reshape(B, H, S, D)                 # view without transpose

    def hint(actual, expected):
        if keep is not None and (actual.detach().cpu().masked_fill(keep, 0.0).abs() > 1e-6).any():
            return ("Padded keys got weight: key_padding_mask is True where a key is padding, and those keys must "
                    "get weight exactly 0 (turn it into an attn_mask (B, 1, 1, S), True = may attend, with "
                    "attention.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)).")
        mistakes = [
            (attention.attention_weights(q_h, k_h, keep, scale=E ** -0.5),
             f"You divided the scores by sqrt(d_model) = sqrt({E}): each head's dot product runs over its own "
             f"head_dim = {D} features, so divide by sqrt(head_dim) = sqrt({D})."),
            (attention.attention_weights(q_h, k_h, keep, scale=1.0),
             f"Did you forget to divide the scores by sqrt(head_dim) = sqrt({D})?"),
            (attention.attention_weights(q_v, k_v, keep),
             "Your heads look split with view(B, H, L, D) and no transpose. Did you transpose after view? "
             "Use .view(B, L, H, D).transpose(1, 2)."),
        ]
        for candidate, message in mistakes:
            if H > 1 and matches(actual, candidate):
                return message
        return ("attn_weights[b, h] = softmax(q_h k_h^T / sqrt(head_dim)) over the keys, with q_h, k_h head h of "
                "split_heads(q_proj(query)), split_heads(k_proj(key)).")
    return hint


def _expect_mha(got, case, query, key, value, projs, H, key_padding_mask):
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailure("type", f"{case}: return a tuple (attn_output, attn_weights); got {type_name(got)}")
    attn_output, attn_weights = got
    B, L, E = query.shape
    S = key.shape[1]
    if isinstance(attn_weights, torch.Tensor) and tuple(attn_weights.shape) == (B, L, S) and H > 1:
        raise CheckFailure("shape", f"{case}: attn_weights should have shape (B, H, L, S) = {format_shape((B, H, L, S))}; got "
                                    f"{format_shape(attn_weights.shape)}. Return every head's weights; do not average them.")
    module = attention.MultiHeadAttention(E, H).to(query.dtype)                 # the reference, same weights
    for ours, theirs in zip((module.q_proj, module.k_proj, module.v_proj, module.out_proj), projs):
        ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        ref_output, ref_weights = module(query, key, value, key_padding_mask=key_padding_mask)
    if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
    expect_tensor("attn_weights", attn_weights, ref_weights, case, "(B, H, L, S)",
                  hint=_mha_weight_hint(query, key, projs, H, key_padding_mask), rescaled="weights")

    def output_hint(actual, expected):
        v = heads.split_heads(projs[2](value), H)                                # (B, H, S, D)
        with torch.no_grad():
            unmerged = projs[3]((ref_weights @ v).reshape(B, L, E))             # merged without transpose
            no_out = heads.merge_heads(ref_weights @ v)                          # out_proj forgotten
        if H > 1 and matches(actual, unmerged):
            return ("attn_weights are right but the heads were merged with reshape(B, L, E) and no transpose: "
                    "use context.transpose(1, 2).reshape(B, L, E) before out_proj.")
        if matches(actual, no_out):
            return "attn_weights are right; apply out_proj to the merged heads."
        return "attn_weights are right: merge the heads (transpose(1, 2).reshape(B, L, E)), then out_proj."
    expect_tensor("attn_output", attn_output, ref_output, case, "(B, L, E)", hint=output_hint)


@functools.lru_cache(maxsize=2)
def _minilm_reference(sentences):
    """(input_ids, attention_mask, hidden_states, attentions) of the reference forward, computed once."""
    input_ids, attention_mask, _ = pretrained.tokenize_batch(list(sentences))
    with torch.no_grad():
        return (input_ids, attention_mask, *pretrained.bert_forward(input_ids, attention_mask))


@functools.lru_cache(maxsize=1)
def _minilm_encoder():
    return pretrained.MiniLMEncoder.from_pretrained()


def _run_minilm_with(fn, input_ids, attention_mask):
    """The encoder's forward with ``fn`` in place of every layer's attention (sharing its weights), then restored."""
    encoder = _minilm_encoder()
    originals = [layer.self_attn for layer in encoder.layers]
    try:
        for layer, mha in zip(encoder.layers, originals):
            layer.self_attn = heads.FunctionalAttention(fn, mha.d_model, mha.num_heads)
            for name in pretrained.ATTENTION_NAMES:
                setattr(layer.self_attn, name, getattr(mha, name))      # the model's own projections
        with torch.no_grad():
            return encoder(input_ids, attention_mask)
    finally:
        for layer, mha in zip(encoder.layers, originals):
            layer.self_attn = mha


def _check_minilm(fn, thorough):
    """Plug ``fn`` into all-MiniLM-L6-v2's 6 layers; compare its attention maps and hidden states with the model's."""
    sentences = data.sentences()[1:2] if not thorough else [data.sentences()[i] for i in (5, 1, 0)]
    case = (f"all-MiniLM-L6-v2 with your function in its 6 layers, on {len(sentences)} real sentence"
            + ("s padded to one batch" if len(sentences) > 1 else ""))
    input_ids, attention_mask, ref_hidden, ref_attentions = _minilm_reference(tuple(sentences))
    try:
        hidden, attentions = _run_minilm_with(fn, input_ids, attention_mask if len(sentences) > 1 else None)
    except Exception as exc:
        raise CheckFailure("error", f"{case}: your function raised {type(exc).__name__}: {exc}") from None

    def hint(actual, expected):
        return ("Your function passes the small random cases but not inside the real model (E=384, H=12, "
                "head_dim=32): read B, L, S, E from the inputs, use head_dim = E // num_heads, and return "
                "out_proj of the merged heads.")
    real = attention_mask.bool()[:, None, :, None]                              # (B, 1, T, 1): real query rows
    for i, (got, ref) in enumerate(zip(attentions, ref_attentions)):
        if isinstance(got, torch.Tensor) and got.shape == ref.shape:
            got = got.masked_fill(~real, 0.0)                                   # padded query rows: not compared
        expect_tensor(f"attn_weights of layer {i}", got, ref.masked_fill(~real, 0.0), case, "(B, H, T, T)",
                      atol=1e-4, rtol=0, hint=hint)
    expect_tensor("hidden_states", hidden.masked_fill(~real[:, 0], 0.0), ref_hidden.masked_fill(~real[:, 0], 0.0),
                  case, "(B, T, 384)", atol=1e-4, rtol=0, hint=hint)


@forbids(*MHA)
def check_multi_head_attention(fn, thorough=False, seed=62):
    """``fn(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads[, key_padding_mask])``
    -> ``(attn_output (B, L, E), attn_weights (B, H, L, S))``, equal to ``attn_course.MultiHeadAttention``.

    Then the real test: ``fn`` runs in all 6 layers of all-MiniLM-L6-v2 with its real weights and must
    reproduce the model's attention maps and hidden states to 1e-4 (one sentence; thorough: three,
    padded into one batch, padded query rows not compared). ``key_padding_mask`` (B, S), True = padding,
    is passed only where there is padding.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, S, E, H, dtype, lengths, is_self in _mha_cases(thorough):
        scale = 4.0 if "x4" in case else 1.0
        query = random_tensor(g, B, L, E, scale=scale, dtype=dtype)
        key = query if is_self else random_tensor(g, B, S, E, scale=scale, dtype=dtype)
        value = key if is_self else random_tensor(g, B, S, E, dtype=dtype)
        projs = [_linear(g, E, dtype) for _ in range(4)]
        key_padding_mask = None if lengths is None else attention.padding_mask(lengths, S)
        extra = () if key_padding_mask is None else (key_padding_mask.clone(),)
        args = (query.clone(), key.clone(), value.clone(), *projs, H, *extra)
        with torch.no_grad():
            got = call_learner(fn, args, case)
        _expect_mha(got, case, query, key, value, projs, H, key_padding_mask)
    _check_minilm(fn, thorough)
