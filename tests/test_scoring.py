"""Scoring rules against hand-worked examples, einsum references and their documented properties.

Shape legend: B batch, L query length, S key length, Dq / Dk query / key dims, A additive hidden size.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_course.pooling import LocationAttention
from attn_course.scoring import (
    METHODS,
    AttentionScore,
    additive_scores,
    concat_scores,
    dot_scores,
    general_scores,
    scaled_dot_scores,
)

from helpers import DEVICES, DTYPES, F64, draw, tol


def t(rows, device="cpu"):
    return torch.tensor(rows, dtype=F64, device=device)


# The worked example used by every rule: two queries (Dq = 2) and three keys (S = 3).
#   q0 = ( 1,  2)      k0 = (1, 0)
#   q1 = ( 3, -1)      k1 = (0, 1)
#                      k2 = (2, 2)
QUERY = [[1.0, 2.0], [3.0, -1.0]]  # (L=2, Dq=2)
KEY = [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]  # (S=3, Dk=2)

# dot: q_i . k_j
#   q0.k0 = 1*1 + 2*0 = 1    q0.k1 = 1*0 + 2*1 = 2     q0.k2 = 1*2 + 2*2 = 6
#   q1.k0 = 3*1 - 1*0 = 3    q1.k1 = 3*0 - 1*1 = -1    q1.k2 = 3*2 - 1*2 = 4
DOT = [[1.0, 2.0, 6.0], [3.0, -1.0, 4.0]]

# general: q_i^T W k_j with Dk = 3 keys and W (Dq=2, Dk=3)
#   W = [[1, 0,  2],        q0 W = (1*1 + 2*0, 1*0 + 2*1, 1*2 + 2*(-1)) = (1, 2, 0)
#        [0, 1, -1]]        q1 W = (3*1 - 1*0, 3*0 - 1*1, 3*2 - 1*(-1)) = (3, -1, 7)
#   keys k0 = (1, 0, 1), k1 = (0, 1, 0), k2 = (2, 0, -1)
#   (1, 2, 0) . k0 = 1,   . k1 = 2,   . k2 = 2
#   (3,-1, 7) . k0 = 3 + 7 = 10,   . k1 = -1,   . k2 = 6 - 7 = -1
GENERAL_KEY = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, -1.0]]
GENERAL_W = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]
GENERAL = [[1.0, 2.0, 2.0], [10.0, -1.0, -1.0]]

# concat: w . [q_i ; k_j] + b with w = (w_q ; w_k) = (1, -1 ; 2, 3), b = 0.5
#   w_q . q0 = 1 - 2 = -1      w_k . k0 = 2,  w_k . k1 = 3,  w_k . k2 = 4 + 6 = 10
#   w_q . q1 = 3 + 1 = 4
#   row 0: -1 + (2, 3, 10) + 0.5 = (1.5, 2.5, 9.5);  row 1: 4 + (2, 3, 10) + 0.5 = (6.5, 7.5, 14.5)
CONCAT_W = [1.0, -1.0, 2.0, 3.0]
CONCAT_B = 0.5
CONCAT = [[1.5, 2.5, 9.5], [6.5, 7.5, 14.5]]

# additive: v . tanh(W_q q_i + W_k k_j), A = 2, W_q = I, W_k = diag(1, -1), v = (1, -2)
#   W_q q0 = (1, 2), W_q q1 = (3, -1);  W_k k0 = (1, 0), W_k k1 = (0, -1), W_k k2 = (2, -2)
#   (0,0): tanh(2) - 2 tanh(2)  = -tanh(2)               = -0.9640275800758169
#   (0,1): tanh(1) - 2 tanh(1)  = -tanh(1)               = -0.7615941559557649
#   (0,2): tanh(3) - 2 tanh(0)  =  tanh(3)               =  0.9950547536867305
#   (1,0): tanh(4) - 2 tanh(-1) =  tanh(4) + 2 tanh(1)   =  0.9993292997 + 1.5231883119 = 2.5225176116505965
#   (1,1): tanh(3) - 2 tanh(-2) =  tanh(3) + 2 tanh(2)   =  0.9950547537 + 1.9280551602 = 2.9231099138383643
#   (1,2): tanh(5) - 2 tanh(-3) =  tanh(5) + 2 tanh(3)   =  0.9999092043 + 1.9901095074 = 2.990018711636056
ADD_WQ = [[1.0, 0.0], [0.0, 1.0]]
ADD_WK = [[1.0, 0.0], [0.0, -1.0]]
ADD_V = [1.0, -2.0]
ADDITIVE = [[-0.9640275800758169, -0.7615941559557649, 0.9950547536867305],
            [2.5225176116505965, 2.9231099138383643, 2.990018711636056]]

# scaled_dot with D = 4, so that 1/sqrt(D) = 1/2 exactly:
#   q0 = (1, 0, 2, 1), q1 = (0, 1, 1, -1);  k0 = (1, 1, 0, 0), k1 = (2, 0, 1, 1), k2 = (0, 0, 0, 3)
#   q0.k0 = 1, q0.k1 = 2 + 2 + 1 = 5, q0.k2 = 3    -> / 2 = (0.5, 2.5, 1.5)
#   q1.k0 = 1, q1.k1 = 1 - 1 = 0,     q1.k2 = -3   -> / 2 = (0.5, 0.0, -1.5)
SCALED_QUERY = [[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, -1.0]]
SCALED_KEY = [[1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0]]
SCALED = [[0.5, 2.5, 1.5], [0.5, 0.0, -1.5]]

# scaled_dot on the D = 2 example: DOT / sqrt(2), 1/sqrt(2) = 0.7071067811865475
#   (1, 2, 6) * 0.70710678 = (0.7071067811865475, 1.414213562373095, 4.242640687119285)
#   (3,-1, 4) * 0.70710678 = (2.1213203435596424, -0.7071067811865475, 2.82842712474619)
SCALED_D2 = [[0.7071067811865475, 1.414213562373095, 4.242640687119285],
             [2.1213203435596424, -0.7071067811865475, 2.82842712474619]]


# ----------------------------------------------------------------- hand-worked examples
@pytest.mark.parametrize("device", DEVICES)
def test_dot_scores_worked_example(device):
    torch.testing.assert_close(dot_scores(t(QUERY, device), t(KEY, device)), t(DOT, device))


@pytest.mark.parametrize("device", DEVICES)
def test_scaled_dot_scores_worked_example_default_scale(device):
    attn_scores = scaled_dot_scores(t(SCALED_QUERY, device), t(SCALED_KEY, device))
    torch.testing.assert_close(attn_scores, t(SCALED, device))


def test_scaled_dot_scores_default_scale_is_one_over_sqrt_d_for_d_2():
    torch.testing.assert_close(scaled_dot_scores(t(QUERY), t(KEY)), t(SCALED_D2))


def test_scaled_dot_scores_explicit_scale():
    # scale = 0.25 overrides 1/sqrt(D): DOT * 0.25 = (0.25, 0.5, 1.5), (0.75, -0.25, 1.0)
    expected = t([[0.25, 0.5, 1.5], [0.75, -0.25, 1.0]])
    torch.testing.assert_close(scaled_dot_scores(t(QUERY), t(KEY), scale=0.25), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_general_scores_worked_example(device):
    attn_scores = general_scores(t(QUERY, device), t(GENERAL_KEY, device), t(GENERAL_W, device))
    torch.testing.assert_close(attn_scores, t(GENERAL, device))


def test_general_scores_identity_weight_is_dot():
    # W = I turns q^T W k into q . k: the worked DOT example again.
    torch.testing.assert_close(general_scores(t(QUERY), t(KEY), torch.eye(2, dtype=F64)), t(DOT))


@pytest.mark.parametrize("device", DEVICES)
def test_concat_scores_worked_example(device):
    attn_scores = concat_scores(t(QUERY, device), t(KEY, device), t(CONCAT_W, device),
                                torch.tensor(CONCAT_B, dtype=F64, device=device))
    torch.testing.assert_close(attn_scores, t(CONCAT, device))


def test_concat_scores_without_bias():
    # The same example without b: every score 0.5 lower.
    expected = t([[1.0, 2.0, 9.0], [6.0, 7.0, 14.0]])
    torch.testing.assert_close(concat_scores(t(QUERY), t(KEY), t(CONCAT_W)), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_additive_scores_worked_example(device):
    attn_scores = additive_scores(t(QUERY, device), t(KEY, device), t(ADD_WQ, device), t(ADD_WK, device),
                                  t(ADD_V, device))
    torch.testing.assert_close(attn_scores, t(ADDITIVE, device))


def _set_params(module, method):
    """Load the worked example's parameters into an AttentionScore module (float64)."""
    with torch.no_grad():
        if method == "general":
            module.weight.copy_(t(GENERAL_W))
        elif method == "concat":
            module.linear.weight.copy_(t([CONCAT_W]))   # (1, Dq + Dk)
            module.linear.bias.fill_(CONCAT_B)
        elif method == "additive":
            module.w_query.weight.copy_(t(ADD_WQ))       # (A, Dq)
            module.w_key.weight.copy_(t(ADD_WK))         # (A, Dk)
            module.v.weight.copy_(t([ADD_V]))            # (1, A)


@pytest.mark.parametrize("method, key, expected, key_dim", [
    ("dot", KEY, DOT, 2),
    ("scaled_dot", KEY, SCALED_D2, 2),
    ("general", GENERAL_KEY, GENERAL, 3),
    ("concat", KEY, CONCAT, 2),
    ("additive", KEY, ADDITIVE, 2),
])
def test_attention_score_module_worked_example(method, key, expected, key_dim):
    module = AttentionScore(method, query_dim=2, key_dim=key_dim, attn_dim=2).double()
    _set_params(module, method)
    torch.testing.assert_close(module(t(QUERY), t(key)), t(expected))


def test_attention_score_module_is_differentiable():
    module = AttentionScore("additive", query_dim=2, attn_dim=3).double()
    module(t(QUERY), t(KEY)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_attention_score_extra_repr_names_method():
    assert "additive" in repr(AttentionScore("additive", query_dim=3))


# ----------------------------------------------------------------- batch dims, L != S
def _rand(g, *shape):
    return torch.randn(shape, generator=g, dtype=F64)


def _einsum_reference(method, query, key, params):
    """Independent float64 formulations of each rule, written with einsum."""
    if method == "dot":
        return torch.einsum("...ld,...sd->...ls", query, key)
    if method == "scaled_dot":
        return torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(query.shape[-1])
    if method == "general":
        return torch.einsum("...lq,qk,...sk->...ls", query, params["weight"], key)
    if method == "concat":
        Dq = query.shape[-1]
        w_q, w_k = params["weight"][:Dq], params["weight"][Dq:]
        return (torch.einsum("...lq,q->...l", query, w_q)[..., :, None]
                + torch.einsum("...sk,k->...s", key, w_k)[..., None, :] + params["bias"])
    hidden = (torch.einsum("aq,...lq->...la", params["w_query"], query)[..., :, None, :]
              + torch.einsum("ak,...sk->...sa", params["w_key"], key)[..., None, :, :])  # (..., L, S, A)
    return torch.einsum("...lsa,a->...ls", torch.tanh(hidden), params["v"])


def _functional(method, query, key, params):
    if method == "dot":
        return dot_scores(query, key)
    if method == "scaled_dot":
        return scaled_dot_scores(query, key)
    if method == "general":
        return general_scores(query, key, params["weight"])
    if method == "concat":
        return concat_scores(query, key, params["weight"], params["bias"])
    return additive_scores(query, key, params["w_query"], params["w_key"], params["v"])


def _params(g, method, Dq, Dk, A=5):
    if method == "general":
        return {"weight": _rand(g, Dq, Dk)}
    if method == "concat":
        return {"weight": _rand(g, Dq + Dk), "bias": _rand(g)}
    if method == "additive":
        return {"w_query": _rand(g, A, Dq), "w_key": _rand(g, A, Dk), "v": _rand(g, A)}
    return {}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)], ids=["nobatch", "B2", "B2x3"])
@pytest.mark.parametrize("device", DEVICES)
def test_batched_shapes_and_values(method, batch, device):
    g = torch.Generator().manual_seed(11)
    L, S = 4, 6
    Dq, Dk = (8, 8) if method in ("dot", "scaled_dot") else (8, 3)
    query, key = _rand(g, *batch, L, Dq), _rand(g, *batch, S, Dk)
    params = _params(g, method, Dq, Dk)
    expected = _einsum_reference(method, query, key, params)
    on = {k: v.to(device) for k, v in params.items()}
    attn_scores = _functional(method, query.to(device), key.to(device), on)
    assert attn_scores.shape == (*batch, L, S)
    assert attn_scores.device.type == device
    torch.testing.assert_close(attn_scores.cpu(), expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_inputs(method, dtype):
    g = torch.Generator().manual_seed(12)
    query, key = _rand(g, 3, 4).to(dtype), _rand(g, 5, 4).to(dtype)
    params = {k: v.to(dtype) for k, v in _params(g, method, 4, 4).items()}
    attn_scores = _functional(method, query, key, params)
    assert attn_scores.dtype == dtype
    torch.testing.assert_close(attn_scores.double(), _einsum_reference(
        method, query.double(), key.double(), {k: v.double() for k, v in params.items()}),
        atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [(), (2, 3)], ids=["nobatch", "B2x3"])
def test_attention_score_module_equals_functional_form(method, batch):
    g = torch.Generator().manual_seed(13)
    Dq, Dk, A = (6, 6, 4) if method in ("dot", "scaled_dot") else (6, 5, 4)
    torch.manual_seed(0)
    module = AttentionScore(method, query_dim=Dq, key_dim=Dk, attn_dim=A).double()
    query, key = _rand(g, *batch, 3, Dq), _rand(g, *batch, 7, Dk)
    if method == "general":
        params = {"weight": module.weight}
    elif method == "concat":
        params = {"weight": module.linear.weight[0], "bias": module.linear.bias[0]}
    elif method == "additive":
        params = {"w_query": module.w_query.weight, "w_key": module.w_key.weight, "v": module.v.weight[0]}
        assert module.w_query.weight.shape == (A, Dq) and module.w_key.weight.shape == (A, Dk)
    else:
        params = {}
    with torch.no_grad():
        attn_scores = module(query, key)
        expected = _einsum_reference(method, query, key, params)
    assert attn_scores.shape == (*batch, 3, 7)
    torch.testing.assert_close(attn_scores, expected)


def test_attention_score_attn_dim_defaults_to_query_dim():
    module = AttentionScore("additive", query_dim=6, key_dim=4)
    assert module.w_query.weight.shape == (6, 6)
    assert module.w_key.weight.shape == (6, 4)
    assert module.v.weight.shape == (1, 6)


# ----------------------------------------------------------------- documented properties
def test_concat_softmax_over_keys_does_not_depend_on_query():
    g = torch.Generator().manual_seed(14)
    query, key = _rand(g, 2, 5, 4), _rand(g, 2, 7, 3)   # (B, L, Dq), (B, S, Dk)
    weight, bias = _rand(g, 7), _rand(g)
    attn_weights = torch.softmax(concat_scores(query, key, weight, bias), dim=-1)  # (B, L, S)
    for i in range(1, 5):
        torch.testing.assert_close(attn_weights[:, i], attn_weights[:, 0])
    # Different batch elements have different keys, hence different distributions.
    assert not torch.allclose(attn_weights[0, 0], attn_weights[1, 0])


def test_additive_softmax_over_keys_depends_on_query():
    # The tanh is what lets the additive rule rank keys differently for different queries.
    g = torch.Generator().manual_seed(15)
    query, key = _rand(g, 5, 4), _rand(g, 7, 3)
    attn_weights = torch.softmax(additive_scores(query, key, _rand(g, 6, 4), _rand(g, 6, 3), _rand(g, 6)), -1)
    assert not torch.allclose(attn_weights[1], attn_weights[0], atol=1e-3)


def test_scaled_dot_keeps_unit_variance():
    # With unit-variance entries, q . k has variance D; dividing by sqrt(D) brings it back to ~1.
    g = torch.Generator().manual_seed(16)
    D = 256
    query, key = _rand(g, 64, D), _rand(g, 64, D)
    assert 0.8 < scaled_dot_scores(query, key).var().item() < 1.2
    assert dot_scores(query, key).var().item() > 0.8 * D


# ----------------------------------------------------------------- bad input
RULES_SAME_D = [dot_scores, scaled_dot_scores]


@pytest.mark.parametrize("rule", RULES_SAME_D, ids=lambda f: f.__name__)
def test_rank_below_two_names_the_shape(rule):
    with pytest.raises(ValueError, match=r"query.*\(4,\)"):
        rule(torch.ones(4), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"key.*\(4,\)"):
        rule(torch.ones(3, 4), torch.ones(4))


@pytest.mark.parametrize("rule", RULES_SAME_D, ids=lambda f: f.__name__)
def test_different_batch_dims_name_both_shapes(rule):
    with pytest.raises(ValueError) as info:
        rule(torch.ones(2, 3, 4), torch.ones(3, 5, 4))
    msg = str(info.value)
    assert "(2, 3, 4)" in msg and "(3, 5, 4)" in msg and "batch" in msg


@pytest.mark.parametrize("rule", RULES_SAME_D, ids=lambda f: f.__name__)
def test_different_d_for_dot_rules_names_both_shapes(rule):
    with pytest.raises(ValueError) as info:
        rule(torch.ones(3, 4), torch.ones(5, 6))
    msg = str(info.value)
    assert "(3, 4)" in msg and "(5, 6)" in msg


def test_non_tensor_input_raises_value_error():
    with pytest.raises(ValueError, match="list"):
        dot_scores([[1.0, 2.0]], torch.ones(3, 2))


@pytest.mark.parametrize("rule, args", [
    (general_scores, (torch.ones(2, 3, 4), torch.ones(3, 5, 6), torch.ones(4, 6))),
    (concat_scores, (torch.ones(2, 3, 4), torch.ones(3, 5, 6), torch.ones(10))),
    (additive_scores, (torch.ones(2, 3, 4), torch.ones(3, 5, 6), torch.ones(7, 4), torch.ones(7, 6),
                       torch.ones(7))),
], ids=["general", "concat", "additive"])
def test_parametrised_rules_reject_different_batch_dims(rule, args):
    with pytest.raises(ValueError) as info:
        rule(*args)
    assert "(2, 3, 4)" in str(info.value) and "(3, 5, 6)" in str(info.value)


def test_general_weight_shape_wrong_names_shapes():
    with pytest.raises(ValueError) as info:
        general_scores(torch.ones(3, 4), torch.ones(5, 6), torch.ones(6, 4))
    assert "(4, 6)" in str(info.value) and "(6, 4)" in str(info.value)


def test_concat_weight_shape_wrong_names_shapes():
    with pytest.raises(ValueError) as info:
        concat_scores(torch.ones(3, 4), torch.ones(5, 6), torch.ones(9))
    assert "(10,)" in str(info.value) and "(9,)" in str(info.value)


@pytest.mark.parametrize("w_query, w_key, v, bad", [
    ((7, 5), (7, 6), (7,), "(7, 5)"),     # w_query's Dq wrong
    ((7, 4), (7, 4), (7,), "(7, 4)"),     # w_key's Dk wrong
    ((7, 4), (7, 6), (8,), "(8,)"),       # A differs
    ((7, 4), (7, 6), (7, 1), "(7, 1)"),   # v not 1-D
], ids=["w_query", "w_key", "A", "v_rank"])
def test_additive_weight_shapes_wrong_name_shapes(w_query, w_key, v, bad):
    with pytest.raises(ValueError) as info:
        additive_scores(torch.ones(3, 4), torch.ones(5, 6), torch.ones(w_query), torch.ones(w_key),
                        torch.ones(v))
    assert bad in str(info.value)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'cosine'"):
        AttentionScore("cosine", query_dim=4)


@pytest.mark.parametrize("method", ["dot", "scaled_dot"])
def test_dot_methods_need_equal_dims(method):
    with pytest.raises(ValueError, match=r"6.*4|4.*6"):
        AttentionScore(method, query_dim=4, key_dim=6)


def test_module_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 6\)"):
        AttentionScore("dot", query_dim=4)(torch.ones(3, 4), torch.ones(5, 6))


# ----------------------------------------------------------------- the second article's Attn: location-based
class ArticleAttn(nn.Module):
    """The second article's ``Attn``, verbatim (it follows the PyTorch seq2seq tutorial's AttnDecoderRNN)."""

    def __init__(self, query_size, key_size, value_size1, value_size2, output_size):
        super(ArticleAttn, self).__init__()
        self.query_size = query_size
        self.key_size = key_size
        self.value_size1 = value_size1
        self.value_size2 = value_size2
        self.output_size = output_size
        self.attn = nn.Linear(self.query_size + self.key_size, value_size1)
        self.attn_combine = nn.Linear(self.query_size + value_size2, output_size)

    def forward(self, Q, K, V):
        attn_weights = F.softmax(self.attn(torch.cat((Q[0], K[0]), 1)), dim=1)
        attn_applied = torch.bmm(attn_weights.unsqueeze(0), V)
        output = torch.cat((Q[0], attn_applied[0]), 1)
        output = self.attn_combine(output).unsqueeze(0)
        return output, attn_weights


ARTICLE_SIZES = {"query_size": 32, "key_size": 32, "value_size1": 32, "value_size2": 64, "output_size": 64}


def _location_pair(sizes=ARTICLE_SIZES, dtype=F64, device="cpu", seed=0):
    """The article's module and ours, with the same weights (the article's attribute names load as they are)."""
    torch.manual_seed(seed)
    article = ArticleAttn(**sizes).to(dtype=dtype, device=device)
    ours = LocationAttention(**sizes).to(dtype=dtype, device=device)
    ours.load_state_dict(article.state_dict())
    return article, ours


def _qkv(g, B=1, sizes=ARTICLE_SIZES, dtype=F64, device="cpu"):
    """query (B, 1, Dq), key (B, 1, Dk), value (B, S, Dv): the article's Q, K, V for B = 1."""
    return (draw(g, B, 1, sizes["query_size"], dtype=dtype, device=device),
            draw(g, B, 1, sizes["key_size"], dtype=dtype, device=device),
            draw(g, B, sizes["value_size1"], sizes["value_size2"], dtype=dtype, device=device))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_location_attention_equals_the_articles_attn(dtype, device):
    article, ours = _location_pair(dtype=dtype, device=device)
    Q, K, V = _qkv(torch.Generator().manual_seed(21), dtype=dtype, device=device)   # (1, 1, 32), (1, 1, 32), (1, 32, 64)
    with torch.no_grad():
        expected = article(Q, K, V)
        output, attn_weights = ours(Q, K, V)
    assert output.shape == (1, 1, 64) and attn_weights.shape == (1, 32)
    assert output.dtype == attn_weights.dtype == dtype and output.device.type == device
    torch.testing.assert_close((output, attn_weights), expected, **tol(dtype, device))
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(1, dtype=dtype, device=device), **tol(dtype, device))


def test_location_attention_batch_is_the_article_run_on_each_element():
    sizes = {"query_size": 3, "key_size": 4, "value_size1": 5, "value_size2": 6, "output_size": 7}
    article, ours = _location_pair(sizes)
    Q, K, V = _qkv(torch.Generator().manual_seed(22), B=4, sizes=sizes)
    with torch.no_grad():
        output, attn_weights = ours(Q, K, V)
        per_element = [article(Q[b:b + 1], K[b:b + 1], V[b:b + 1]) for b in range(4)]
    assert output.shape == (4, 1, 7) and attn_weights.shape == (4, 5)
    torch.testing.assert_close(output, torch.cat([o for o, _ in per_element]))
    torch.testing.assert_close(attn_weights, torch.cat([w for _, w in per_element]))


def test_location_weights_ignore_the_values_content_and_follow_the_query():
    _, ours = _location_pair()
    g = torch.Generator().manual_seed(23)
    Q, K, V = _qkv(g)
    other_Q, other_K, other_V = _qkv(g)
    with torch.no_grad():
        output, attn_weights = ours(Q, K, V)
        for new_V in (other_V, V[:, torch.randperm(32, generator=g)]):          # new content; the same, reordered
            new_output, new_weights = ours(Q, K, new_V)
            torch.testing.assert_close(new_weights, attn_weights, atol=0, rtol=0)
            assert (new_output - output).abs().max() > 1e-3
        for changed in (ours(other_Q, K, V)[1], ours(Q, other_K, V)[1]):
            assert (changed - attn_weights).abs().max() > 1e-3
        # A content-based rule, for contrast: reorder the keys and its weights move with them.
        perm = torch.randperm(32, generator=g)
        content = torch.softmax(scaled_dot_scores(Q[:, :, :32], V[:, :, :32]), dim=-1)          # (1, 1, 32)
        moved = torch.softmax(scaled_dot_scores(Q[:, :, :32], V[:, perm, :32]), dim=-1)
        torch.testing.assert_close(moved, content[..., perm])
        assert (moved - content).abs().max() > 1e-3


def test_location_attention_is_differentiable_in_both_layers():
    _, ours = _location_pair()
    output, _ = ours(*_qkv(torch.Generator().manual_seed(24)))
    output.sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("length", [20, 40])
def test_location_attention_rejects_another_length(length):
    _, ours = _location_pair()
    Q, K, _ = _qkv(torch.Generator().manual_seed(25))
    with pytest.raises(ValueError, match=rf"value_size1 = 32 positions; got value \(1, {length}, 64\) with {length}"):
        ours(Q, K, torch.zeros(1, length, 64, dtype=F64))


@pytest.mark.parametrize("query, key, value, found", [
    ((1, 1, 31), (1, 1, 32), (1, 32, 64), r"query must be a tensor \(B, 1, 32\); got \(1, 1, 31\)"),
    ((1, 1, 32), (1, 32), (1, 32, 64), r"key must be a tensor \(B, 1, 32\); got \(1, 32\)"),
    ((1, 1, 32), (1, 1, 32), (1, 32, 63), r"value must be a tensor \(B, 32, 64\); got \(1, 32, 63\)"),
    ((1, 2, 32), (1, 2, 32), (1, 32, 64), r"one decoder step each.*\(1, 2, 32\)"),
    ((2, 1, 32), (1, 1, 32), (2, 32, 64), r"batch size B; got query \(2, 1, 32\), key \(1, 1, 32\)"),
], ids=["query_dim", "key_rank", "value_dim", "two_steps", "batch"])
def test_location_attention_names_the_wrong_shape(query, key, value, found):
    _, ours = _location_pair()
    with pytest.raises(ValueError, match=found):
        ours(torch.zeros(query, dtype=F64), torch.zeros(key, dtype=F64), torch.zeros(value, dtype=F64))
    with pytest.raises(ValueError, match="got list"):
        ours([[0.0]], torch.zeros(1, 1, 32, dtype=F64), torch.zeros(1, 32, 64, dtype=F64))


def test_sum_of_tanh_is_additive_with_v_all_ones():
    # The article's second rule sums tanh(W_q q_i + W_k k_j) over its A features: v = (1, ..., 1).
    g = torch.Generator().manual_seed(26)
    query, key, w_query, w_key = _rand(g, 2, 3, 4), _rand(g, 2, 5, 6), _rand(g, 7, 4), _rand(g, 7, 6)
    sum_of_tanh = torch.stack([torch.stack([torch.tanh(w_query @ query[b, i] + w_key @ key[b, j]).sum()
                                            for j in range(5)]) for b in range(2) for i in range(3)]).view(2, 3, 5)
    torch.testing.assert_close(additive_scores(query, key, w_query, w_key, torch.ones(7, dtype=F64)), sum_of_tanh)
