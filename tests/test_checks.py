"""The learner-facing checks: references and other correct code pass; realistic mistakes fail precisely.

Each wrong implementation below is a mistake learners and tutorials really make. A check is trusted
only when each of them fails with the right ``CheckFailure.kind`` and a message that points at the fix.
"""
import math

import pytest
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

from attn_course import attention, checks, data, scoring
from attn_course.checks import CheckFailure, expect_rows_sum_to_one, expect_tensor

from helpers import THOROUGH


def fails(check, fn, thorough):
    with pytest.raises(CheckFailure) as info:
        check(fn, thorough=thorough)
    return info.value


# ----------------------------------------------------------------- lesson 01: pad_batch
def pad_with_pad_sequence(sequences, pad_id):
    lengths = torch.tensor([len(s) for s in sequences])
    ids = pad_sequence([torch.tensor(s, dtype=torch.long) for s in sequences], batch_first=True,
                       padding_value=pad_id)                                       # (B, T)
    key_padding_mask = torch.arange(ids.shape[1])[None, :] >= lengths[:, None]    # (B, T), True = padding
    return ids, key_padding_mask


def pad_with_lists(sequences, pad_id):
    T = max(len(s) for s in sequences)
    ids = [list(s) + [pad_id] * (T - len(s)) for s in sequences]
    mask = [[False] * len(s) + [True] * (T - len(s)) for s in sequences]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)


def pad_mask_inverted(sequences, pad_id):
    ids, key_padding_mask = data.pad_batch(sequences, pad_id)
    return ids, ~key_padding_mask  # True = real token: the polarity of SDPA's attn_mask, not of padding


def pad_ids_int32(sequences, pad_id):
    ids, key_padding_mask = data.pad_batch(sequences, pad_id)
    return ids.int(), key_padding_mask


def pad_mask_as_long(sequences, pad_id):
    ids, key_padding_mask = data.pad_batch(sequences, pad_id)
    return ids, key_padding_mask.long()


def pad_on_the_left(sequences, pad_id):
    T = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (T - len(s)) + list(s) for s in sequences], dtype=torch.long)
    key_padding_mask = torch.tensor([[True] * (T - len(s)) + [False] * len(s) for s in sequences])
    return ids, key_padding_mask


def pad_one_too_long(sequences, pad_id):
    T = max(len(s) for s in sequences) + 1
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    key_padding_mask = torch.ones(len(sequences), T, dtype=torch.bool)
    for b, s in enumerate(sequences):
        ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        key_padding_mask[b, :len(s)] = False
    return ids, key_padding_mask


def pad_returns_list(sequences, pad_id):
    return list(data.pad_batch(sequences, pad_id))


def pad_returns_ids_only(sequences, pad_id):
    return data.pad_batch(sequences, pad_id)[0]


def pad_ignores_pad_id(sequences, pad_id):
    return data.pad_batch(sequences, 0)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [data.pad_batch, pad_with_pad_sequence, pad_with_lists], ids=lambda f: f.__name__)
def test_pad_batch_correct_implementations_pass(fn, thorough):
    checks.check_pad_batch(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (pad_mask_inverted, "mask", ["key_padding_mask", "inverted", "True must mean *padding*"]),
    (pad_ids_int32, "dtype", ["ids", "torch.int64", "torch.int32"]),
    (pad_mask_as_long, "dtype", ["key_padding_mask", "torch.bool", "torch.int64"]),
    (pad_on_the_left, "values", ["ids"]),
    (pad_one_too_long, "shape", ["ids", "(3, 3)", "(3, 4)"]),
    (pad_returns_list, "type", ["tuple", "list"]),
    (pad_returns_ids_only, "type", ["tuple", "Tensor"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_pad_batch_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_pad_batch, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


def test_pad_batch_ignoring_pad_id_is_caught_only_when_thorough():
    checks.check_pad_batch(pad_ignores_pad_id, thorough=False)  # pad_id is 0 in the quick case
    err = fails(checks.check_pad_batch, pad_ignores_pad_id, True)
    assert err.kind == "values" and "pad_id=99" in str(err)


# ----------------------------------------------------------------- lesson 01: embedding lookup
def embed_by_indexing(ids, weight):
    return weight[ids]                                                   # (B, T) -> (B, T, E)


def embed_by_one_hot(ids, weight):
    return F.one_hot(ids, weight.shape[0]).to(weight.dtype) @ weight     # (B, T, V) @ (V, E) -> (B, T, E)


def embed_by_loops(ids, weight):
    return torch.stack([torch.stack([weight[i] for i in row.tolist()]) for row in ids])


def embed_off_by_one(ids, weight):
    return weight[ids - 1]


def embed_transposed_table(ids, weight):
    return weight.T[:, ids]                                              # (E, B, T)


def embed_float64(ids, weight):
    return weight.double()[ids]


def embed_summed_over_time(ids, weight):
    return weight[ids].sum(1)                                            # (B, E): a bag of words


def embed_fresh_layer(ids, weight):
    return torch.nn.Embedding(*weight.shape)(ids).detach()               # new random weights


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [lambda ids, w: F.embedding(ids, w), embed_by_indexing, embed_by_one_hot,
                                embed_by_loops], ids=["F.embedding", "indexing", "one_hot", "loops"])
def test_embedding_lookup_correct_implementations_pass(fn, thorough):
    checks.check_embedding_lookup(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (embed_off_by_one, "values", ["embeddings", "differs"]),
    (embed_transposed_table, "shape", ["(B, T, E)", "(2, 4, 3)", "(3, 2, 4)"]),
    (embed_float64, "dtype", ["torch.float32", "torch.float64"]),
    (embed_summed_over_time, "shape", ["(2, 4, 3)", "(2, 3)"]),
    (embed_fresh_layer, "values", ["embeddings"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_embedding_lookup_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_embedding_lookup, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


# ----------------------------------------------------------------- lesson 02: scaled dot scores
def scores_einsum(query, key):
    return torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(query.shape[-1])


def scores_loops(query, key):
    D = query.shape[-1]
    q, k = query.reshape(-1, *query.shape[-2:]), key.reshape(-1, *key.shape[-2:])  # (N, L, D), (N, S, D)
    out = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=query.dtype)
    for n in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(k.shape[1]):
                out[n, i, j] = (q[n, i] * k[n, j]).sum() / math.sqrt(D)
    return out.reshape(*query.shape[:-1], key.shape[-2])


def scores_float64_inside(query, key):
    q, k = query.double(), key.double()
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).to(query.dtype)


def scores_scaled_halves(query, key):
    d = query.shape[-1] ** 0.25
    return (query / d) @ (key / d).mT


def scores_unscaled(query, key):
    return query @ key.transpose(-2, -1)


def scores_divided_by_d(query, key):
    return query @ key.transpose(-2, -1) / query.shape[-1]


def scores_key_query(query, key):
    return key @ query.transpose(-2, -1) / math.sqrt(query.shape[-1])   # (..., S, L)


def scores_forgot_cast_back(query, key):
    return query.double() @ key.double().transpose(-2, -1) / math.sqrt(query.shape[-1])


def scores_dot_T(query, key):
    return query @ key.T / math.sqrt(query.shape[-1])   # .T reverses every dim of a 3-D tensor


def scores_index_error(query, key):
    return query @ key.transpose(1, 2) / math.sqrt(query.shape[2])   # assumes a batch dim


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [scoring.scaled_dot_scores, scores_einsum, scores_loops, scores_float64_inside,
                                scores_scaled_halves], ids=lambda f: f.__name__)
def test_scaled_dot_scores_correct_implementations_pass(fn, thorough):
    checks.check_scaled_dot_scores(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (scores_unscaled, "scale", ["sqrt(8)", "forget to divide by sqrt(d_k)"]),
    (scores_divided_by_d, "scale", ["too small", "sqrt(d_k) once, by d_k never"]),
    (scores_key_query, "shape", ["(..., L, S)", "(3, 4)", "(4, 3)"]),
    (scores_forgot_cast_back, "dtype", ["torch.float32", "torch.float64"]),
    (scores_index_error, "error", ["scores_index_error", "(3, 8)", "IndexError"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_scaled_dot_scores_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_scaled_dot_scores, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
def test_scaled_dot_scores_dot_T_is_caught_only_when_thorough():
    checks.check_scaled_dot_scores(scores_dot_T, thorough=False)  # the quick case is 2-D, where .T is right
    err = fails(checks.check_scaled_dot_scores, scores_dot_T, True)
    assert err.kind == "error" and "(2, 3, 5, 16)" in str(err)


# ----------------------------------------------------------------- lesson 02: additive scores
def additive_by_concatenation(query, key, w_query, w_key, v):
    L, S = query.shape[-2], key.shape[-2]
    W = torch.cat([w_query, w_key], dim=1)                                     # (A, Dq + Dk)
    q = query.unsqueeze(-2).expand(*query.shape[:-1], S, query.shape[-1])     # (..., L, S, Dq)
    k = key.unsqueeze(-3).expand(*key.shape[:-2], L, S, key.shape[-1])        # (..., L, S, Dk)
    return torch.tanh(torch.cat([q, k], dim=-1) @ W.T) @ v                    # (..., L, S)


def additive_by_loops(query, key, w_query, w_key, v):
    out = torch.empty(*query.shape[:-1], key.shape[-2], dtype=query.dtype)
    for i in range(query.shape[-2]):
        for j in range(key.shape[-2]):
            hidden = query[..., i, :] @ w_query.T + key[..., j, :] @ w_key.T   # (..., A)
            out[..., i, j] = torch.tanh(hidden) @ v
    return out


def additive_no_tanh(query, key, w_query, w_key, v):
    return ((query @ w_query.T).unsqueeze(-2) + (key @ w_key.T).unsqueeze(-3)) @ v


def additive_relu(query, key, w_query, w_key, v):
    return torch.relu((query @ w_query.T).unsqueeze(-2) + (key @ w_key.T).unsqueeze(-3)) @ v


def additive_tanh_last(query, key, w_query, w_key, v):
    return torch.tanh(((query @ w_query.T).unsqueeze(-2) + (key @ w_key.T).unsqueeze(-3)) @ v)


def additive_swapped_weights(query, key, w_query, w_key, v):
    return torch.tanh((query @ w_key.T).unsqueeze(-2) + (key @ w_query.T).unsqueeze(-3)) @ v


def additive_without_v(query, key, w_query, w_key, v):
    return torch.tanh((query @ w_query.T).unsqueeze(-2) + (key @ w_key.T).unsqueeze(-3))   # (..., L, S, A)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [scoring.additive_scores, additive_by_concatenation, additive_by_loops],
                         ids=lambda f: f.__name__)
def test_additive_scores_correct_implementations_pass(fn, thorough):
    checks.check_additive_scores(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (additive_no_tanh, "values", ["tanh"]),
    (additive_relu, "values", ["tanh"]),
    (additive_tanh_last, "values", ["v is applied last"]),
    (additive_swapped_weights, "error", ["additive_swapped_weights", "(3, 5)", "(4, 6)"]),
    (additive_without_v, "shape", ["(3, 4)", "(3, 4, 7)"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_additive_scores_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_additive_scores, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


# ----------------------------------------------------------------- lesson 03: softmax with temperature
def softmax_functional(attn_scores, temperature):
    return F.softmax(attn_scores / temperature, dim=-1)


def softmax_stable_by_hand(attn_scores, temperature):
    x = attn_scores / temperature
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_float64_inside(attn_scores, temperature):
    return torch.softmax(attn_scores.double() / temperature, dim=-1).to(attn_scores.dtype)


def softmax_via_log_softmax(attn_scores, temperature):
    return torch.log_softmax(attn_scores / temperature, dim=-1).exp()


def softmax_query_axis(attn_scores, temperature):
    return torch.softmax(attn_scores / temperature, dim=-2)


def softmax_times_temperature(attn_scores, temperature):
    return torch.softmax(attn_scores * temperature, dim=-1)


def softmax_ignores_temperature(attn_scores, temperature):
    return torch.softmax(attn_scores, dim=-1)


def softmax_forgotten(attn_scores, temperature):
    return attn_scores / temperature


def softmax_naive(attn_scores, temperature):
    e = torch.exp(attn_scores / temperature)     # overflows to inf once a score passes ~88.7 in float32
    return e / e.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [attention.softmax_with_temperature, softmax_functional, softmax_stable_by_hand,
                                softmax_float64_inside, softmax_via_log_softmax], ids=lambda f: f.__name__)
def test_softmax_with_temperature_correct_implementations_pass(fn, thorough):
    checks.check_softmax_with_temperature(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (softmax_query_axis, "normalisation", ["sum to 1 over the key axis", "query axis (dim=-2)"]),
    (softmax_times_temperature, "scale", ["Divide the scores by the temperature"]),
    (softmax_ignores_temperature, "scale", ["attn_weights", "differs", "temperature or a scale"]),
    (softmax_forgotten, "normalisation", ["sum to 1"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_softmax_with_temperature_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_softmax_with_temperature, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


def test_naive_softmax_passes_the_quick_check():
    checks.check_softmax_with_temperature(softmax_naive, thorough=False)


def test_naive_softmax_overflow_is_caught_when_thorough():
    err = fails(checks.check_softmax_with_temperature, softmax_naive, True)
    assert err.kind in ("finite", "values")
    assert "subtract the max" in str(err) or err.kind == "values"


# ----------------------------------------------------------------- lesson 03: attention
def attention_reference(query, key, value):
    return (attention.scaled_dot_product_attention(query, key, value),
            attention.attention_weights(query, key))


def attention_on_torch_sdpa(query, key, value):
    context = F.scaled_dot_product_attention(query, key, value)
    attn_weights = torch.softmax(query @ key.mT * query.shape[-1] ** -0.5, dim=-1)
    return context, attn_weights


def attention_einsum_stable(query, key, value):
    attn_scores = torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(query.shape[-1])
    e = torch.exp(attn_scores - attn_scores.amax(-1, keepdim=True))
    attn_weights = e / e.sum(-1, keepdim=True)
    return torch.einsum("...ls,...sv->...lv", attn_weights, value), attn_weights


def attention_float64_inside(query, key, value):
    q, k, v = query.double(), key.double(), value.double()
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return (attn_weights @ v).to(query.dtype), attn_weights.to(query.dtype)


def attention_loops(query, key, value):
    L, D = query.shape[-2:]
    q = query.reshape(-1, L, D)
    k, v = key.reshape(-1, *key.shape[-2:]), value.reshape(-1, *value.shape[-2:])
    contexts, weights = [], []
    for n in range(q.shape[0]):
        w = torch.softmax(q[n] @ k[n].T / math.sqrt(D), dim=-1)   # (L, S)
        weights.append(w)
        contexts.append(w @ v[n])                                  # (L, Dv)
    return (torch.stack(contexts).reshape(*query.shape[:-1], value.shape[-1]),
            torch.stack(weights).reshape(*query.shape[:-1], key.shape[-2]))


def attention_unscaled(query, key, value):
    attn_weights = torch.softmax(query @ key.transpose(-2, -1), dim=-1)
    return attn_weights @ value, attn_weights


def attention_query_axis(query, key, value):
    attn_weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]), dim=-2)
    return attn_weights @ value, attn_weights


def attention_swapped_return(query, key, value):
    context, attn_weights = attention_reference(query, key, value)
    return attn_weights, context


def attention_context_only(query, key, value):
    return attention_reference(query, key, value)[0]


def attention_weights_times_key(query, key, value):
    attn_weights = attention.attention_weights(query, key)
    return attn_weights @ key, attn_weights


def attention_naive_softmax(query, key, value):
    e = torch.exp(query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]))
    attn_weights = e / e.sum(-1, keepdim=True)
    return attn_weights @ value, attn_weights


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [attention_reference, attention_on_torch_sdpa, attention_einsum_stable,
                                attention_float64_inside, attention_loops], ids=lambda f: f.__name__)
def test_attention_correct_implementations_pass(fn, thorough):
    checks.check_attention(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (attention_unscaled, "scale", ["attn_weights", "sqrt(d_k)"]),
    (attention_query_axis, "normalisation", ["query axis (dim=-2)"]),
    (attention_swapped_return, "shape", ["(3, 4)", "(3, 5)"]),
    (attention_context_only, "type", ["return a tuple (context, attn_weights)", "Tensor"]),
    (attention_weights_times_key, "shape", ["context", "(3, 5)", "(3, 8)"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_attention_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(checks.check_attention, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err)


def test_attention_naive_softmax_passes_the_quick_check():
    checks.check_attention(attention_naive_softmax, thorough=False)


def test_attention_naive_softmax_overflow_is_caught_when_thorough():
    err = fails(checks.check_attention, attention_naive_softmax, True)
    assert err.kind in ("finite", "values")


# ----------------------------------------------------------------- every check: None and not implemented
ALL_CHECKS = [checks.check_pad_batch, checks.check_embedding_lookup, checks.check_scaled_dot_scores,
              checks.check_additive_scores, checks.check_softmax_with_temperature, checks.check_attention]


def returns_none(*args):
    return None


def not_implemented(*args):
    raise NotImplementedError("write your code here")


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_returning_none_fails_with_type_and_return(check, thorough):
    err = fails(check, returns_none, thorough)
    assert err.kind == "type"
    assert "return" in str(err) and "NoneType" in str(err)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_not_implemented_fails_with_error(check, thorough):
    err = fails(check, not_implemented, thorough)
    assert err.kind == "error"
    assert "not implemented" in str(err) and "not_implemented" in str(err)
    assert "write your code here" in str(err)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_check_failure_is_an_assertion_error_with_its_kind(check):
    err = fails(check, returns_none, False)
    assert isinstance(err, AssertionError)
    assert str(err).startswith("[type] ")


# ----------------------------------------------------------------- expect_tensor
def test_expect_tensor_accepts_close_values():
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expect_tensor("attn_scores", expected + 1e-6, expected)
    expect_tensor("attn_scores", (expected + 1e-6).requires_grad_(), expected)


def test_expect_tensor_type():
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_weights", None, torch.zeros(2))
    assert info.value.kind == "type" and "forget `return`" in str(info.value) and "NoneType" in str(info.value)
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_weights", [0.0, 0.0], torch.zeros(2))
    assert info.value.kind == "type" and "list" in str(info.value) and "return" not in str(info.value)


def test_expect_tensor_shape_names_legend_and_both_shapes():
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_weights", torch.zeros(4, 3), torch.zeros(3, 4), case="one sentence", legend="(L, S)")
    msg = str(info.value)
    assert info.value.kind == "shape"
    assert msg.startswith("[shape] one sentence: attn_weights")
    assert "(L, S) = (3, 4)" in msg and "got (4, 3)" in msg


def test_expect_tensor_dtype():
    with pytest.raises(CheckFailure) as info:
        expect_tensor("context", torch.zeros(2, dtype=torch.float64), torch.zeros(2))
    assert info.value.kind == "dtype"
    assert "torch.float32" in str(info.value) and "torch.float64" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_expect_tensor_finite(bad):
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_weights", torch.tensor([0.5, bad]), torch.tensor([0.5, 0.5]))
    assert info.value.kind == "finite"
    assert "NaN or inf" in str(info.value) and "subtract the max" in str(info.value)


def test_expect_tensor_values_reports_error_and_hint():
    seen = []

    def hint(actual, expected):
        seen.append((actual, expected))
        return "Look at row 0."

    actual, expected = torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_scores", actual, expected, hint=hint)
    msg = str(info.value)
    assert info.value.kind == "values"
    assert "up to 0.5" in msg and "Look at row 0." in msg
    assert len(seen) == 1 and torch.equal(seen[0][0], actual) and torch.equal(seen[0][1], expected)


def test_expect_tensor_values_without_hint_text():
    with pytest.raises(CheckFailure) as info:
        expect_tensor("attn_scores", torch.tensor([1.0]), torch.tensor([2.0]), hint=lambda a, e: "")
    assert str(info.value).rstrip().endswith(")."), str(info.value)


def test_expect_tensor_tolerance():
    expected = torch.zeros(3)
    with pytest.raises(CheckFailure):
        expect_tensor("x", expected + 1e-3, expected)
    expect_tensor("x", expected + 1e-3, expected, atol=1e-2)


@pytest.mark.parametrize("actual, expected", [
    (torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4])),
    (torch.tensor([True, False]), torch.tensor([True, True])),
], ids=["int64", "bool"])
def test_expect_tensor_exact_types(actual, expected):
    expect_tensor("ids", expected.clone(), expected)
    with pytest.raises(CheckFailure) as info:
        expect_tensor("ids", actual, expected)
    assert info.value.kind == "values" and "ids" in str(info.value)


def test_check_failure_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'wrong'"):
        CheckFailure("wrong", "message")
    assert {"type", "shape", "dtype", "finite", "normalisation", "values", "error"} <= set(checks.KINDS)
    for kind in checks.KINDS:
        assert CheckFailure(kind, "message").kind == kind


# ----------------------------------------------------------------- expect_rows_sum_to_one
def test_rows_sum_to_one_passes_softmax():
    g = torch.Generator().manual_seed(0)
    expect_rows_sum_to_one("attn_weights", torch.softmax(torch.randn(2, 3, 4, 5, generator=g), dim=-1))


def test_rows_sum_to_one_names_row_and_sum():
    attn_weights = torch.tensor([[0.5, 0.5, 0.0], [0.23, 0.25, 0.25], [0.0, 0.0, 1.0]])  # row 1 sums to 0.73
    with pytest.raises(CheckFailure) as info:
        expect_rows_sum_to_one("attn_weights", attn_weights, case="three keys")
    msg = str(info.value)
    assert info.value.kind == "normalisation"
    assert msg.startswith("[normalisation] three keys: attn_weights")
    assert "(1,)" in msg and "0.7300" in msg and "dim=-1" in msg
    assert "query axis" not in msg


def test_rows_sum_to_one_batched_index():
    attn_weights = torch.full((2, 3, 4), 0.25)
    attn_weights[1, 2, 0] = 0.5  # row (1, 2) sums to 1.25
    with pytest.raises(CheckFailure) as info:
        expect_rows_sum_to_one("attn_weights", attn_weights)
    assert "(1, 2)" in str(info.value) and "1.2500" in str(info.value)


def test_rows_sum_to_one_detects_softmax_over_query_axis():
    g = torch.Generator().manual_seed(1)
    attn_weights = torch.softmax(torch.randn(2, 4, 6, generator=g), dim=-2)
    with pytest.raises(CheckFailure) as info:
        expect_rows_sum_to_one("attn_weights", attn_weights)
    assert "did you apply softmax over the query axis (dim=-2)?" in str(info.value)


def test_rows_sum_to_one_tolerance():
    attn_weights = torch.tensor([[0.5, 0.5 + 5e-4]])
    with pytest.raises(CheckFailure):
        expect_rows_sum_to_one("attn_weights", attn_weights)
    expect_rows_sum_to_one("attn_weights", attn_weights, atol=1e-3)


def test_rows_sum_to_one_rejects_nan_rows():
    attn_weights = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")]])
    with pytest.raises(CheckFailure) as info:
        expect_rows_sum_to_one("attn_weights", attn_weights)
    assert info.value.kind == "finite"
    assert "subtract the max" in str(info.value)


# ----------------------------------------------------------------- kind "scale": right up to a constant factor
@pytest.mark.parametrize("c", [0.25, 0.5, 2.0, 8.0])
def test_rescaling_finds_the_factor_of_scores_and_of_weights(c):
    from attn_course.checks.core import rescaling
    scores = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert rescaling(c * scores, scores, "scores") == pytest.approx(c, rel=1e-6)
    weights = torch.softmax(scores, -1)
    assert rescaling(torch.softmax(c * scores, -1), weights, "weights") == pytest.approx(c, rel=1e-4)


def test_rescaling_is_none_for_equal_tensors_and_for_other_mistakes():
    from attn_course.checks.core import rescaling
    scores = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = torch.softmax(scores, -1)
    assert rescaling(scores, scores, "scores") is None
    assert rescaling(scores + 1.0, scores, "scores") is None                          # a shift, not a factor
    assert rescaling(weights, weights, "weights") is None
    assert rescaling(torch.softmax(scores, -2), weights, "weights") is None            # wrong axis
    assert rescaling(torch.softmax(scores.flip(-1), -1), weights, "weights") is None   # keys permuted


# ----------------------------------------------------------------- lesson 11: attention on ink
def _ink(attn_weights, images, height, width, threshold, pool=F.adaptive_avg_pool2d, compare=torch.gt,
         transpose=False):
    cells = pool(images, (height, width))
    ink = compare(cells.transpose(-1, -2) if transpose else cells, threshold).flatten(1)    # (B, h*w)
    return (attn_weights * ink).sum(-1), ink.to(images.dtype).mean(-1)


@pytest.mark.parametrize("thorough", [False, True])
def test_check_attention_on_ink_passes_the_reference_and_a_hand_written_version(thorough):
    from attn_course.apps import vision
    checks.check_attention_on_ink(vision.attention_on_ink, thorough=thorough)
    checks.check_attention_on_ink(_ink, thorough=thorough)


@pytest.mark.parametrize("fn,kind,needle", [
    (lambda w, im, h, ww, t: _ink(w, im, h, ww, t, pool=F.adaptive_max_pool2d), "values", "MEAN of its pixels"),
    (lambda w, im, h, ww, t: _ink(w, im, h, ww, t, compare=torch.ge), "values", "ABOVE the threshold"),
    (lambda w, im, h, ww, t: _ink(w, im, h, ww, t, transpose=True), "values", "row by row"),
    (lambda w, im, h, ww, t: (_ink(w, im, h, ww, t)[0] / 2, _ink(w, im, h, ww, t)[1]), "values", "sum of the weights"),
    (lambda w, im, h, ww, t: (_ink(w, im, h, ww, t)[0], _ink(w, im, h, ww, t)[1] * h * ww), "values", "fraction"),
    (lambda w, im, h, ww, t: _ink(w, im, h, ww, t)[0], "type", "tuple"),
])
def test_check_attention_on_ink_names_the_slip(fn, kind, needle):
    err = fails(checks.check_attention_on_ink, fn, True)
    assert err.kind == kind and needle in str(err), str(err)


# ----------------------------------------------------------------- lesson 13: the pyramid's frame stacking
@pytest.mark.parametrize("thorough", [False, True])
def test_check_stack_frames_passes_the_reference(thorough):
    from attn_course.apps import speech
    checks.check_stack_frames(speech.stack_frames, thorough=thorough)


def _stack_with(x, key_padding_mask, factor, layout="time", mask="first"):
    B, S, F_ = x.shape
    S_out = -(-S // factor)
    padded = F.pad(x, (0, 0, 0, S_out * factor - S))
    if layout == "time":
        stacked = padded.reshape(B, S_out, factor * F_)
    elif layout == "bands":
        stacked = padded.reshape(B, S_out, factor, F_).transpose(2, 3).reshape(B, S_out, factor * F_)
    else:
        stacked = padded.reshape(B, factor, S_out, F_).transpose(1, 2).reshape(B, S_out, factor * F_)
    if mask == "first":
        new_mask = key_padding_mask[:, ::factor]
    elif mask == "any":
        new_mask = F.pad(key_padding_mask, (0, S_out * factor - S), value=True).reshape(B, S_out, factor).any(-1)
    else:
        new_mask = key_padding_mask[:, :S_out]
    return stacked, new_mask


@pytest.mark.parametrize("options,kind,needle", [
    (dict(layout="bands"), "values", "bands kept together"),
    (dict(layout="far"), "values", "S' apart"),
    (dict(mask="any"), "mask", "FIRST frame"),
    (dict(mask="cut"), "mask", "mask[:, :S']"),
])
def test_check_stack_frames_names_the_slip(options, kind, needle):
    err = fails(checks.check_stack_frames, lambda x, m, f: _stack_with(x, m, f, **options), True)
    assert err.kind == kind and needle in str(err), str(err)
    assert _stack_with(torch.zeros(1, 4, 2), torch.zeros(1, 4, dtype=torch.bool), 2)[0].shape == (1, 2, 4)


def test_check_stack_frames_reports_a_missing_time_padding_as_an_error():
    err = fails(checks.check_stack_frames, lambda x, m, f: (x.reshape(x.shape[0], -1, f * x.shape[2]), m[:, ::f]), False)
    assert err.kind == "error"
