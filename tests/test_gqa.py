"""Grouped-query and multi-query attention: repeat_kv, GroupedQueryAttention, its check and its broken copy.

Shape legend: B batch, L query length, S key/value length, H query heads, Hkv key/value heads,
r = H / Hkv, D head_dim, E d_model (= H*D). References: the index identity of repeat_kv, PyTorch's
``scaled_dot_product_attention(..., enable_gqa=True)`` on the module's own projections,
``attn_course.MultiHeadAttention`` with copied weights (Hkv = H), hand-built mean-pooled weights.
Mask polarity: the module's ``attn_mask`` and ``key_padding_mask`` are ``nn.MultiheadAttention``'s (bool
True = ignore); PyTorch's SDPA, the reference, takes ``allowed`` (bool True = may attend).
"""
import inspect

import pytest
import torch
from torch.nn import functional as F

from attn_course import checks, gqa
from attn_course.attention import MultiHeadAttention, padding_mask
from attn_course.broken.gqa_v2 import repeat_kv_v2
from attn_course.checks.gqa import check_repeat_kv
from attn_course.gqa import GroupedQueryAttention, repeat_kv

from helpers import DEVICES, DTYPES, F64, THOROUGH, draw, tol

HEADS = [pytest.param(8, 2, id="H8-Hkv2"), pytest.param(4, 1, id="H4-Hkv1-mqa"), pytest.param(4, 4, id="H4-Hkv4-mha")]


# ----------------------------------------------------------------- repeat_kv
@pytest.mark.parametrize("B, Hkv, r, S, D", [(1, 2, 2, 3, 4), (2, 3, 4, 5, 2), (2, 1, 6, 1, 3), (3, 4, 1, 2, 2)])
def test_repeat_kv_index_identity(B, Hkv, r, S, D):
    x = draw(torch.Generator().manual_seed(0), B, Hkv, S, D)
    out = repeat_kv(x, r)
    assert out.shape == (B, Hkv * r, S, D)
    for h in range(Hkv * r):
        assert torch.equal(out[:, h], x[:, h // r]), f"query head {h} should read key/value head {h // r}"


def test_repeat_kv_worked_example_and_identity_for_one_group():
    x = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)                   # Hkv = 3 heads, one number each
    assert repeat_kv(x, 2).flatten().tolist() == [10.0, 10.0, 20.0, 20.0, 30.0, 30.0]
    assert repeat_kv(x, 1) is x


def test_repeat_kv_is_what_torch_enable_gqa_does():
    g = torch.Generator().manual_seed(1)
    query, key, value = draw(g, 2, 8, 3, 4, dtype=F64), draw(g, 2, 2, 5, 4, dtype=F64), draw(g, 2, 2, 5, 3, dtype=F64)
    torch.testing.assert_close(F.scaled_dot_product_attention(query, repeat_kv(key, 4), repeat_kv(value, 4)),
                               F.scaled_dot_product_attention(query, key, value, enable_gqa=True))


@pytest.mark.parametrize("x, n_rep, fragment", [
    (torch.zeros(2, 3, 4), 2, "(2, 3, 4)"), ([[1.0]], 2, "list"),
    (torch.zeros(1, 2, 3, 4), 0, "0"), (torch.zeros(1, 2, 3, 4), 1.5, "1.5"), (torch.zeros(1, 2, 3, 4), True, "True"),
], ids=["3d", "list", "zero", "float", "bool"])
def test_repeat_kv_rejects_bad_input(x, n_rep, fragment):
    with pytest.raises(ValueError) as info:
        repeat_kv(x, n_rep)
    assert fragment in str(info.value)


# ----------------------------------------------------------------- GroupedQueryAttention vs PyTorch's SDPA
def random_module(H, Hkv, E, dtype, device, seed=0):
    """A GroupedQueryAttention with every parameter random (biases included), in eval mode."""
    torch.manual_seed(seed)
    module = GroupedQueryAttention(E, H, Hkv)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape) * p.shape[-1] ** -0.5)
    return module.to(dtype=dtype, device=device).eval()


def torch_reference(module, query, key, value, allowed, is_causal):
    """(attn_output, attn_weights) from PyTorch's SDPA with enable_gqa=True on the module's projections.

    The weights are SDPA's output with value = I (S x S) per key/value head."""
    B, L, E = query.shape
    S, H, Hkv, D = key.shape[1], module.num_heads, module.num_kv_heads, module.head_dim
    q = module.q_proj(query).view(B, L, H, D).transpose(1, 2)      # (B, H, L, D)
    k = module.k_proj(key).view(B, S, Hkv, D).transpose(1, 2)      # (B, Hkv, S, D)
    v = module.v_proj(value).view(B, S, Hkv, D).transpose(1, 2)    # (B, Hkv, S, D)
    eye = torch.eye(S, dtype=query.dtype, device=query.device).expand(B, Hkv, S, S)
    kwargs = {"attn_mask": allowed, "is_causal": is_causal, "enable_gqa": True}
    context = F.scaled_dot_product_attention(q, k, v, **kwargs)   # (B, H, L, D)
    attn_weights = F.scaled_dot_product_attention(q, k, eye, **kwargs)  # (B, H, L, S)
    return module.out_proj(context.transpose(1, 2).reshape(B, L, E)), attn_weights


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "key_padding", "causal", "bool", "float", "key_padding+float"])
@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("H, Hkv", HEADS)
def test_gqa_matches_torch_sdpa_enable_gqa(H, Hkv, kind, mask, dtype, device):
    g = torch.Generator().manual_seed(10 + H + Hkv)
    B, L, E = 2, 4, 16
    S = L if kind == "self" else 6
    module = random_module(H, Hkv, E, dtype, device)
    query = draw(g, B, L, E, dtype=dtype, device=device)
    key = query if kind == "self" else draw(g, B, S, E, dtype=dtype, device=device)
    kwargs, allowed, is_causal = {}, None, False
    if "key_padding" in mask:
        kwargs["key_padding_mask"] = padding_mask([S, 2], S).to(device)        # True = padding
        allowed = ~kwargs["key_padding_mask"][:, None, None, :]                 # (B, 1, 1, S), True = may attend
    if mask == "causal":
        kwargs["is_causal"] = is_causal = True
    if mask == "bool":
        allowed = torch.rand(L, S, generator=g).to(device) < 0.7
        allowed[:, 0] = True                                                    # every query keeps a key
        kwargs["attn_mask"] = ~allowed                                          # the module's: True = ignore
    if "float" in mask:
        kwargs["attn_mask"] = draw(g, B, H, L, S, dtype=dtype, device=device)
        allowed = kwargs["attn_mask"] if allowed is None else kwargs["attn_mask"].masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        attn_output, attn_weights = module(query, key, key, **kwargs)
        expected_output, expected_weights = torch_reference(module, query, key, key, allowed, is_causal)
    assert attn_output.shape == (B, L, E) and attn_weights.shape == (B, H, L, S)
    torch.testing.assert_close(attn_weights, expected_weights, **tol(dtype, device))
    torch.testing.assert_close(attn_output, expected_output, **tol(dtype, device))


def test_gqa_gradients_match_torch_sdpa():
    g = torch.Generator().manual_seed(11)
    module = random_module(8, 2, 16, F64, "cpu")
    query, key = draw(g, 2, 3, 16, dtype=F64), draw(g, 2, 5, 16, dtype=F64)
    weight = draw(g, 2, 3, 16, dtype=F64)
    (module(query, key)[0] * weight).sum().backward()
    ours = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    (torch_reference(module, query, key, key, None, False)[0] * weight).sum().backward()
    for name, p in module.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, msg=lambda m, name=name: f"{name}: {m}")


# ----------------------------------------------------------------- Hkv = H is multi-head attention
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "key_padding", "causal"])
def test_gqa_with_as_many_kv_heads_is_multi_head_attention(mask, dtype, device):
    g = torch.Generator().manual_seed(12)
    mha = MultiHeadAttention(12, 3).to(dtype=dtype, device=device).eval()
    module = GroupedQueryAttention(12, 3, 3).to(dtype=dtype, device=device).eval()
    module.load_state_dict(mha.state_dict())
    query, key = draw(g, 2, 4, 12, dtype=dtype, device=device), draw(g, 2, 5, 12, dtype=dtype, device=device)
    kwargs = {"key_padding": {"key_padding_mask": padding_mask([5, 3], 5).to(device)},
              "causal": {"is_causal": True}, "none": {}}[mask]
    with torch.no_grad():
        for ours, theirs in zip(module(query, key, **kwargs), mha(query, key, **kwargs)):
            torch.testing.assert_close(ours, theirs, **tol(dtype, device))


def test_gqa_dropout_draws_like_multi_head_attention():
    # In training mode both modules drop the same entries of (B, H, L, S) for the same seed.
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    module = GroupedQueryAttention(8, 2, 2, dropout=0.5)
    module.load_state_dict(mha.state_dict())
    x = draw(torch.Generator().manual_seed(13), 2, 5, 8)
    torch.manual_seed(3)
    ours = module(x)[0]
    torch.manual_seed(3)
    theirs = mha(x)[0]
    torch.manual_seed(4)
    other = module(x)[0]
    torch.testing.assert_close(ours, theirs)
    assert not torch.allclose(ours, other)                                  # another seed, other entries dropped


# ----------------------------------------------------------------- from_multi_head (uptraining)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_from_multi_head_with_as_many_kv_heads_equals_the_mha(dtype, bias):
    g = torch.Generator().manual_seed(14)
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, bias=bias).to(dtype).eval()
    module = GroupedQueryAttention.from_multi_head(mha, 4)
    assert module.k_proj.weight.dtype == dtype and (module.k_proj.bias is None) == (not bias)
    query, key = draw(g, 2, 3, 16, dtype=dtype), draw(g, 2, 6, 16, dtype=dtype)
    with torch.no_grad():
        for ours, theirs in zip(module(query, key), mha(query, key)):
            torch.testing.assert_close(ours, theirs, **tol(dtype))


@pytest.mark.parametrize("H, Hkv", [(8, 2), (4, 1), (6, 3)])
def test_from_multi_head_mean_pools_consecutive_heads(H, Hkv):
    # If the key and value heads of each group are equal, mean-pooling loses nothing: the GQA equals the MHA.
    # The groups are consecutive heads g*r .. g*r+r-1, the order in which repeat_kv hands them out.
    r, D = H // Hkv, 2
    E = H * D
    torch.manual_seed(1)
    mha = MultiHeadAttention(E, H).double().eval()
    with torch.no_grad():
        for proj in (mha.k_proj, mha.v_proj):
            proj.weight.copy_(proj.weight.view(Hkv, r, D, E)[:, :1].expand(Hkv, r, D, E).reshape(E, E))
            proj.bias.copy_(proj.bias.view(Hkv, r, D)[:, :1].expand(Hkv, r, D).reshape(E))
    module = GroupedQueryAttention.from_multi_head(mha, Hkv)
    x = draw(torch.Generator().manual_seed(15), 2, 5, E, dtype=F64)
    with torch.no_grad():
        for ours, theirs in zip(module(x), mha(x)):
            torch.testing.assert_close(ours, theirs)


def test_from_multi_head_weights_are_group_means_by_hand():
    torch.manual_seed(2)
    mha = MultiHeadAttention(12, 6)
    module = GroupedQueryAttention.from_multi_head(mha, 2)                  # r = 3, D = 2
    for g in range(2):
        heads = [mha.k_proj.weight[h * 2:(h + 1) * 2] for h in range(3 * g, 3 * g + 3)]
        torch.testing.assert_close(module.k_proj.weight[g * 2:(g + 1) * 2], sum(heads) / 3)
        values = [mha.v_proj.bias[h * 2:(h + 1) * 2] for h in range(3 * g, 3 * g + 3)]
        torch.testing.assert_close(module.v_proj.bias[g * 2:(g + 1) * 2], sum(values) / 3)
    assert torch.equal(module.q_proj.weight, mha.q_proj.weight) and torch.equal(module.out_proj.bias, mha.out_proj.bias)


# ----------------------------------------------------------------- sizes
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("H, Hkv", [(8, 2), (8, 1), (8, 8), (6, 3)])
def test_kv_parameters_shrink_by_h_over_hkv(H, Hkv, bias):
    E = 4 * H
    mha, module = MultiHeadAttention(E, H, bias=bias), GroupedQueryAttention(E, H, Hkv, bias=bias)
    assert (module.d_model, module.num_heads, module.num_kv_heads, module.head_dim) == (E, H, Hkv, 4)

    def count(m, names):
        return sum(p.numel() for name in names for p in getattr(m, name).parameters())
    assert count(mha, ["k_proj", "v_proj"]) == count(module, ["k_proj", "v_proj"]) * H // Hkv
    assert count(mha, ["q_proj", "out_proj"]) == count(module, ["q_proj", "out_proj"])
    assert module.k_proj.weight.shape == module.v_proj.weight.shape == (Hkv * 4, E)


def test_need_weights_false_and_default_key_value():
    module = random_module(4, 2, 8, F64, "cpu")
    x = draw(torch.Generator().manual_seed(16), 1, 3, 8, dtype=F64)
    out, weights = module(x, need_weights=False)
    assert weights is None
    torch.testing.assert_close(out, module(x, x, x)[0])


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, fragments", [
    ((10, 3, 1), ["d_model=10", "num_heads=3"]),
    ((12, 4, 3), ["num_heads=4", "num_kv_heads=3"]),
    ((12, 4, 0), ["num_kv_heads=0"]),
    ((12, 0, 1), ["num_heads=0"]),
])
def test_gqa_constructor_rejects_bad_sizes(args, fragments):
    with pytest.raises(ValueError) as info:
        GroupedQueryAttention(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("call, fragments", [
    (lambda m: m(torch.zeros(2, 3, 6)), ["d_model=8", "(2, 3, 6)"]),
    (lambda m: m(torch.zeros(3, 8)), ["(3, 8)"]),
    (lambda m: m(torch.zeros(2, 3, 8), torch.zeros(1, 4, 8)), ["agree on B and S", "(1, 4, 8)"]),
    (lambda m: m(torch.zeros(1, 3, 8), torch.zeros(1, 4, 8), torch.zeros(1, 5, 8)), ["(1, 5, 8)"]),
    (lambda m: m(torch.zeros(2, 3, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ["(2, 3)", "(2, 4)"]),
    (lambda m: m(torch.zeros(1, 3, 8), attn_mask=torch.ones(3, 3, dtype=torch.bool), is_causal=True), ["is_causal"]),
    (lambda m: GroupedQueryAttention.from_multi_head(MultiHeadAttention(8, 4), 3), ["num_kv_heads=3"]),
    (lambda m: GroupedQueryAttention.from_multi_head(m, 2), ["MultiHeadAttention", "GroupedQueryAttention"]),
], ids=["E", "rank", "B", "S", "key_padding_mask", "causal+mask", "from-divisor", "from-type"])
def test_gqa_bad_input_raises_value_errors(call, fragments):
    with pytest.raises(ValueError) as info:
        call(GroupedQueryAttention(8, 4, 2))
    for fragment in fragments:
        assert fragment in str(info.value)


# ----------------------------------------------------------------- check_repeat_kv and its broken copy
def repeat_kv_by_expand(x, n_rep):
    B, Hkv, S, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)


def repeat_kv_by_index(x, n_rep):
    index = torch.arange(x.shape[1] * n_rep) // n_rep           # 0, 0, 1, 1, ... for r = 2
    return x.index_select(1, index)


def repeat_kv_by_loop(x, n_rep):
    return torch.stack([x[:, h // n_rep] for h in range(x.shape[1] * n_rep)], dim=1)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [repeat_kv, repeat_kv_by_expand, repeat_kv_by_index, repeat_kv_by_loop],
                         ids=lambda f: f.__name__)
def test_check_repeat_kv_passes_correct_code(fn, thorough):
    check_repeat_kv(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
def test_check_repeat_kv_catches_repeat_instead_of_repeat_interleave(thorough):
    with pytest.raises(checks.CheckFailure) as info:
        check_repeat_kv(repeat_kv_v2, thorough=thorough)
    assert info.value.kind == "values"
    message = str(info.value)
    for fragment in ["query head 1 should read key/value head 0", "it read head 1", "[0, 1, 0, 1]", "[0, 0, 1, 1]",
                     "repeat instead of repeat_interleave"]:
        assert fragment in message, message


@pytest.mark.parametrize("fn, kind, fragments", [
    (lambda x, r: x.repeat_interleave(r, dim=2), "shape", ["(1, 4, 3, 4)", "(1, 2, 6, 4)", "head axis"]),
    (lambda x, r: x.repeat_interleave(r, dim=1).flip(1), "values", ["query head 0 should read key/value head 0",
                                                                     "[1, 1, 0, 0]"]),
    (lambda x, r: x.repeat_interleave(r, dim=1) * 2, "values", ["equals no head of x"]),
    (lambda x, r: x.repeat_interleave(r, dim=1).double(), "dtype", ["torch.float32"]),
    (lambda x, r: None, "type", ["return"]),
], ids=["wrong-axis", "reversed", "scaled", "dtype", "none"])
def test_check_repeat_kv_names_other_mistakes(fn, kind, fragments):
    with pytest.raises(checks.CheckFailure) as info:
        check_repeat_kv(fn, thorough=False)
    assert info.value.kind == kind, str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_check_repeat_kv_forbids_the_reference():
    assert [label for label, _ in check_repeat_kv.forbidden] == ["attn_course.gqa.repeat_kv"]


def test_broken_copy_keeps_signature_and_docstring_and_is_wrong():
    assert repeat_kv_v2.__doc__ == repeat_kv.__doc__ and inspect.signature(repeat_kv_v2) == inspect.signature(repeat_kv)
    x = torch.arange(4.0).view(1, 2, 1, 2)
    assert torch.equal(repeat_kv_v2(x, 1), repeat_kv(x, 1))                  # one group: no difference
    assert not torch.equal(repeat_kv_v2(x, 2), repeat_kv(x, 2))              # heads 0, 1, 0, 1 instead of 0, 0, 1, 1
    assert gqa.repeat_kv is repeat_kv
