"""Splitting and merging heads, functional multi-head attention, lesson 06's checks and the HeadPicker.

References: index-by-index definitions of split/merge, torch.nn.MultiheadAttention with copied
weights, attn_course.MultiHeadAttention, a float64 loop over heads. The checks are trusted only if
the references and other correct code pass and every broken implementation (and realistic mistake)
fails with the right kind and a message that points at the fix.
"""
import html
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from attn_course import checks, heads  # noqa: E402
from attn_course.attention import MultiHeadAttention, padding_mask  # noqa: E402
from attn_course.broken import (  # noqa: E402
    MultiHeadAttention_v2,
    MultiHeadAttention_v3,
    merge_heads_v2,
    multi_head_attention_v2,
    split_heads_v2,
)
from attn_course.checks import CheckFailure  # noqa: E402
from attn_course.widgets import HeadPicker  # noqa: E402

from helpers import DEVICES, THOROUGH, draw  # noqa: E402


# ----------------------------------------------------------------- split_heads / merge_heads
@pytest.mark.parametrize("B, L, E, H", [(1, 3, 8, 2), (2, 5, 12, 3), (3, 1, 6, 6), (2, 4, 16, 1)])
def test_split_heads_by_its_definition(B, L, E, H):
    x = draw(torch.Generator().manual_seed(0), B, L, E)
    out = heads.split_heads(x, H)
    D = E // H
    assert out.shape == (B, H, L, D)
    for b in range(B):
        for h in range(H):
            for position in range(L):
                assert torch.equal(out[b, h, position], x[b, position, h * D:(h + 1) * D])


def test_split_heads_worked_example_and_view():
    x = torch.arange(8.0).view(1, 2, 4)
    out = heads.split_heads(x, 2)
    assert torch.equal(out[0, 1], torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    assert out.data_ptr() == x.data_ptr()                                # a view, not a copy


@pytest.mark.parametrize("B, L, E, H", [(1, 3, 8, 2), (2, 5, 12, 3), (3, 1, 6, 6)])
def test_merge_heads_is_concatenation_and_inverse(B, L, E, H):
    x = draw(torch.Generator().manual_seed(1), B, L, E)
    split = heads.split_heads(x, H)
    merged = heads.merge_heads(split)
    assert torch.equal(merged, x)
    assert torch.equal(merged, torch.cat([split[:, h] for h in range(H)], dim=-1))   # Concat(head_1..head_H)
    assert torch.equal(heads.split_heads(heads.merge_heads(split.contiguous()), H), split)


@pytest.mark.parametrize("call, message", [
    (lambda: heads.split_heads(torch.ones(2, 8), 2), r"\(B, L, E\)"),
    (lambda: heads.split_heads(torch.ones(1, 2, 8), 3), "divisible"),
    (lambda: heads.split_heads(torch.ones(1, 2, 8), 0), "divisible"),
    (lambda: heads.merge_heads(torch.ones(2, 3, 4)), r"\(B, H, L, D\)"),
])
def test_split_merge_reject_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------- multi_head_attention
def random_projections(g, E, dtype, device):
    projs = [nn.Linear(E, E) for _ in range(4)]
    with torch.no_grad():
        for proj in projs:
            proj.weight.copy_(draw(g, E, E) / math.sqrt(E))
            proj.bias.copy_(draw(g, E) * 0.1)
    return [p.to(dtype=dtype, device=device) for p in projs]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("padding", [False, True], ids=["no-padding", "padding"])
@pytest.mark.parametrize("kind, L, S", [("self", 5, 5), ("cross", 3, 6)])
def test_multi_head_attention_matches_torch(kind, L, S, padding, dtype, device):
    g = torch.Generator().manual_seed(2)
    B, E, H = 2, 12, 3
    projs = random_projections(g, E, dtype, device)
    query = draw(g, B, L, E, dtype=dtype, device=device)
    key = query if kind == "self" else draw(g, B, S, E, dtype=dtype, device=device)
    value = key if kind == "self" else draw(g, B, S, E, dtype=dtype, device=device)
    key_padding_mask = padding_mask([S, 2], max_len=S).to(device) if padding else None
    torch_mha = nn.MultiheadAttention(E, H, batch_first=True).to(dtype=dtype, device=device).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([p.weight for p in projs[:3]]))
        torch_mha.in_proj_bias.copy_(torch.cat([p.bias for p in projs[:3]]))
        torch_mha.out_proj.load_state_dict(projs[3].state_dict())
        attn_output, attn_weights = heads.multi_head_attention(query, key, value, *projs, H, key_padding_mask)
        expected, expected_weights = torch_mha(query, key, value, key_padding_mask=key_padding_mask,
                                               average_attn_weights=False)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-8)
    assert attn_output.shape == (B, L, E) and attn_weights.shape == (B, H, L, S)
    torch.testing.assert_close(attn_output, expected, **tol)
    torch.testing.assert_close(attn_weights, expected_weights, **tol)
    if padding:
        assert (attn_weights[1, :, :, 2:] == 0).all()


def test_multi_head_attention_float64_loop_over_heads():
    """head_h = softmax(Q W_h (K W_h)^T / sqrt(D)) V W_h, one head at a time, then Concat W^O."""
    g = torch.Generator().manual_seed(3)
    B, L, S, E, H = 2, 4, 3, 8, 2
    D = E // H
    projs = random_projections(g, E, torch.float64, "cpu")
    query, key, value = draw(g, B, L, E, dtype=torch.float64), draw(g, B, S, E, dtype=torch.float64), \
        draw(g, B, S, E, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = projs[0](query), projs[1](key), projs[2](value)
        outputs = []
        for h in range(H):
            cols = slice(h * D, (h + 1) * D)
            weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(D), dim=-1)
            outputs.append(weights @ v[..., cols])
        expected = projs[3](torch.cat(outputs, dim=-1))
        got, _ = heads.multi_head_attention(query, key, value, *projs, H)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_multi_head_attention_rejects_bad_key_padding_mask():
    projs = random_projections(torch.Generator().manual_seed(4), 8, torch.float32, "cpu")
    x = torch.ones(2, 3, 8)
    with pytest.raises(ValueError, match="key_padding_mask"):
        heads.multi_head_attention(x, x, x, *projs, 2, torch.zeros(2, 4, dtype=torch.bool))


def test_functional_attention_equals_module_with_the_same_weights():
    g = torch.Generator().manual_seed(5)
    module = MultiHeadAttention(12, 3)
    wrapped = heads.FunctionalAttention(heads.multi_head_attention, 12, 3)
    wrapped.load_state_dict(module.state_dict())                         # same parameter names
    x, memory = draw(g, 2, 4, 12), draw(g, 2, 6, 12)
    key_padding_mask = padding_mask([6, 3])
    with torch.no_grad():
        for args, kwargs in [((x,), {}), ((x, memory, memory), {"key_padding_mask": key_padding_mask})]:
            for got, expected in zip(wrapped(*args, **kwargs), module(*args, **kwargs)):
                torch.testing.assert_close(got, expected)


def test_functional_attention_calls_without_mask_argument_when_there_is_none():
    def no_mask_parameter(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads):
        return heads.multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads)

    wrapped = heads.FunctionalAttention(no_mask_parameter, 8, 2)
    assert wrapped(torch.ones(1, 3, 8))[1].shape == (1, 2, 3, 3)


# ----------------------------------------------------------------- checks: references and correct variants pass
def split_with_reshape_permute(x, num_heads):
    B, L, E = x.shape
    return x.reshape(B, L, num_heads, -1).permute(0, 2, 1, 3)


def merge_with_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def mha_with_sdpa(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads, key_padding_mask=None):
    q, k, v = (heads.split_heads(p(t), num_heads) for p, t in ((q_proj, query), (k_proj, key), (v_proj, value)))
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(key_padding_mask.shape, dtype=q.dtype).masked_fill(key_padding_mask, float("-inf"))
        bias = bias[:, None, None, :]
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + (0 if bias is None else bias), -1)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)    # (B, H, L, D)
    return out_proj(heads.merge_heads(context)), attn_weights


def mha_with_einsum(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads, key_padding_mask=None):
    E = query.shape[-1]
    H, D = num_heads, E // num_heads
    q = torch.einsum("ble,hde->bhld", query, q_proj.weight.view(H, D, E)) + q_proj.bias.view(H, 1, D)
    k = torch.einsum("bse,hde->bhsd", key, k_proj.weight.view(H, D, E)) + k_proj.bias.view(H, 1, D)
    v = torch.einsum("bse,hde->bhsd", value, v_proj.weight.view(H, D, E)) + v_proj.bias.view(H, 1, D)
    attn_scores = torch.einsum("bhld,bhsd->bhls", q, k) / math.sqrt(D)
    if key_padding_mask is not None:
        attn_scores = attn_scores.masked_fill(key_padding_mask[:, None, None, :], -1e9)
    attn_weights = attn_scores.softmax(-1)
    context = torch.einsum("bhls,bhsd->blhd", attn_weights, v).reshape(query.shape)
    return out_proj(context), attn_weights


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("check, fn", [
    (checks.check_split_heads, heads.split_heads),
    (checks.check_split_heads, split_with_reshape_permute),
    (checks.check_merge_heads, heads.merge_heads),
    (checks.check_merge_heads, merge_with_cat),
], ids=["split_heads", "reshape+permute", "merge_heads", "torch.cat"])
def test_split_merge_checks_pass_correct_code(check, fn, thorough):
    check(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [heads.multi_head_attention, mha_with_sdpa, mha_with_einsum],
                         ids=["reference", "sdpa", "einsum"])
def test_multi_head_attention_check_passes_correct_code(fn, thorough):
    checks.check_multi_head_attention(fn, thorough=thorough)


# ----------------------------------------------------------------- checks: broken implementations fail
def fails(check, fn, thorough):
    with pytest.raises(CheckFailure) as info:
        check(fn, thorough=thorough)
    return info.value


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("check, broken, kind, hint", [
    (checks.check_split_heads, split_heads_v2, "values", "Did you transpose after view?"),
    (checks.check_merge_heads, merge_heads_v2, "values", "Did you transpose(1, 2) before reshape?"),
    (checks.check_multi_head_attention, multi_head_attention_v2, "scale", "sqrt(d_model) = sqrt(8)"),
], ids=["split_heads_v2", "merge_heads_v2", "multi_head_attention_v2"])
def test_broken_implementations_fail_their_check(check, broken, kind, hint, thorough):
    err = fails(check, broken, thorough)
    assert err.kind == kind and hint in str(err), str(err)


def test_broken_implementations_keep_the_reference_docstrings():
    assert split_heads_v2.__doc__ == heads.split_heads.__doc__
    assert merge_heads_v2.__doc__ == heads.merge_heads.__doc__
    assert multi_head_attention_v2.__doc__ == heads.multi_head_attention.__doc__


# ----------------------------------------------------------------- checks: realistic mistakes, precise messages
def split_without_transpose_shape(x, num_heads):
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads)                       # (B, L, H, D)


def split_interleaved(x, num_heads):
    B, L, E = x.shape
    return x.view(B, L, E // num_heads, num_heads).permute(0, 3, 1, 2)


def merge_with_view(x):
    B, H, L, D = x.shape
    return x.transpose(1, 2).view(B, L, H * D)


def mha_variant(scale="head_dim", split="right", merge="right", mask=True, average=False, out=True):
    def fn(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads, key_padding_mask=None):
        (B, L, E), S = query.shape, key.shape[1]
        H, D = num_heads, E // num_heads
        if split == "right":
            q, k, v = (heads.split_heads(p(t), H) for p, t in ((q_proj, query), (k_proj, key), (v_proj, value)))
        else:
            q, k, v = q_proj(query).view(B, H, L, D), k_proj(key).view(B, H, S, D), v_proj(value).view(B, H, S, D)
        divisor = {"head_dim": math.sqrt(D), "d_model": math.sqrt(E), "none": 1.0}[scale]
        attn_scores = q @ k.transpose(-2, -1) / divisor
        if mask and key_padding_mask is not None:
            attn_scores = attn_scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn_weights = attn_scores.softmax(-1)
        context = attn_weights @ v
        context = heads.merge_heads(context) if merge == "right" else context.reshape(B, L, E)
        return (out_proj(context) if out else context), (attn_weights.mean(1) if average else attn_weights)
    return fn


@pytest.mark.parametrize("check, fn, thorough, kind, hint", [
    (checks.check_split_heads, split_without_transpose_shape, False, "shape", "Did you transpose after view?"),
    (checks.check_split_heads, split_interleaved, False, "values", "not every 2-th feature"),
    (checks.check_merge_heads, merge_with_view, False, "error", "use .reshape"),
    (checks.check_multi_head_attention, mha_variant(scale="none"), False, "scale", "forget to divide"),
    (checks.check_multi_head_attention, mha_variant(split="view"), False, "values", "Did you transpose after view?"),
    (checks.check_multi_head_attention, mha_variant(merge="reshape"), False, "values", "no transpose"),
    (checks.check_multi_head_attention, mha_variant(out=False), False, "values", "apply out_proj"),
    (checks.check_multi_head_attention, mha_variant(average=True), False, "shape", "do not average"),
    (checks.check_multi_head_attention, mha_variant(mask=False), True, "values", "Padded keys got weight"),
], ids=["split-(B,L,H,D)", "split-interleaved", "merge-view", "mha-no-scale", "mha-view-no-transpose",
        "mha-merge-no-transpose", "mha-no-out_proj", "mha-averaged-heads", "mha-ignores-padding"])
def test_checks_name_the_mistake(check, fn, thorough, kind, hint):
    err = fails(check, fn, thorough)
    assert err.kind == kind and hint in str(err), str(err)


def test_check_multi_head_attention_reports_not_implemented():
    def unfinished(*args):
        raise NotImplementedError("Exercise 2: write multi_head_attention")
    err = fails(checks.check_multi_head_attention, unfinished, False)
    assert err.kind == "error" and "not implemented" in str(err)


def test_check_multi_head_attention_really_compares_with_minilm():
    """A function right on small random inputs but 1 % off at MiniLM's width must fail the MiniLM stage."""
    def off_at_width_384(*args):
        attn_output, attn_weights = heads.multi_head_attention(*args)
        return (attn_output * 1.01 if attn_output.shape[-1] == 384 else attn_output), attn_weights
    err = fails(checks.check_multi_head_attention, off_at_width_384, False)
    assert "all-MiniLM-L6-v2" in str(err) and err.kind == "values", str(err)



# ----------------------------------------------------------------- the module check: any class built like MultiHeadAttention
def test_shared_per_head_projection_is_the_fused_layer_with_one_block_repeated():
    """MultiHeadAttention_v2 (the third article's layout) = MultiHeadAttention with block_diag(W, ..., W) weights."""
    torch.manual_seed(0)
    E, H = 12, 3
    shared, full = MultiHeadAttention_v2(E, H).eval(), MultiHeadAttention(E, H).eval()
    with torch.no_grad():
        for ours, theirs in zip((full.q_proj, full.k_proj, full.v_proj), (shared.q_proj, shared.k_proj, shared.v_proj)):
            ours.weight.copy_(torch.block_diag(*[theirs.weight] * H))
            ours.bias.copy_(theirs.bias.repeat(H))
        full.out_proj.load_state_dict(shared.out_proj.state_dict())
        x = draw(torch.Generator().manual_seed(1), 2, 5, E)
        for got, expected in zip(shared(x), full(x)):
            torch.testing.assert_close(got, expected)
    n_in = sum(p.numel() for m in (shared.q_proj, shared.k_proj, shared.v_proj) for p in m.parameters())
    assert n_in == 3 * (4 * 4 + 4)                                      # 3 (D^2 + D), D = 4


def test_sequence_first_layer_mixes_the_batch_even_where_the_shapes_agree():
    """MultiHeadAttention_v3 fed (B, L, E) with B = L: weights of the expected shape, sentences mixed."""
    torch.manual_seed(0)
    module = MultiHeadAttention_v3(8, 2).eval()
    torch_mha = nn.MultiheadAttention(8, 2).eval()                      # the layout it really computes: (L, B, E)
    torch_mha.load_state_dict(module.attn.state_dict())
    x = draw(torch.Generator().manual_seed(2), 4, 4, 8)
    changed = x.clone()
    changed[1:] += 1.0
    with torch.no_grad():
        out, weights = module(x)
        assert weights.shape == (4, 2, 4, 4)                              # = (B, H, L, S): nothing looks wrong
        torch.testing.assert_close(out, torch_mha(x, x, x)[0])
        assert not torch.allclose(module(changed)[0][0], out[0])        # sentence 0 moved with sentences 1-3
    err = fails(checks.check_multi_head_attention_module, MultiHeadAttention_v3, False)
    assert err.kind == "causality" and "batch_first=True" in str(err), str(err)


class AveragedHeads(MultiHeadAttention):
    def forward(self, query, key=None, value=None, key_padding_mask=None):
        attn_output, attn_weights = super().forward(query, key, value, key_padding_mask=key_padding_mask)
        return attn_output, attn_weights.mean(1)


class IgnoresPadding(MultiHeadAttention):
    def forward(self, query, key=None, value=None, key_padding_mask=None):
        return super().forward(query, key, value)


class ScaledByModelWidth(MultiHeadAttention):
    def forward(self, query, key=None, value=None, key_padding_mask=None):
        B, L, E = query.shape
        q, k, v = (heads.split_heads(p(t), self.num_heads) for p, t in
                   ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(E), dim=-1)
        return self.out_proj(heads.merge_heads(attn_weights @ v)), attn_weights


@pytest.mark.parametrize("cls, thorough, kind, hint", [
    (MultiHeadAttention_v2, False, "values", "not with one nn.Linear(D, D) applied to every head's slice"),
    (MultiHeadAttention_v2, False, "values", "4·E² + 4·E = 288"),
    (MultiHeadAttention_v3, True, "causality", "moved the output of sentence 0"),
    (AveragedHeads, False, "shape", "do not average"),
    (IgnoresPadding, True, "mask", "padded keys got weight"),
    (ScaledByModelWidth, False, "scale", "flatter"),
], ids=["shared-projection", "shared-projection-count", "sequence-first", "averaged", "no-padding", "sqrt-E"])
def test_module_check_names_the_mistake(cls, thorough, kind, hint):
    """The reference and correct layers built other ways pass: tests/test_mutation_suite.py, tests/correct_variants.py."""
    err = fails(checks.check_multi_head_attention_module, cls, thorough)
    assert err.kind == kind and hint in str(err), str(err)


# ----------------------------------------------------------------- HeadPicker
def picker_inputs():
    g = torch.Generator().manual_seed(6)
    attentions = torch.softmax(draw(g, 3, 4, 5, 5) * 3, dim=-1)           # (layers, H, T, T)
    return attentions, ["[CLS]", "the", "cat", "sat", "[SEP]"]


def test_head_picker_shows_the_picked_head():
    attentions, tokens = picker_inputs()
    picker = HeadPicker(list(attentions), tokens, layer=1, head=2)
    assert torch.equal(picker.weights(), attentions[1, 2])
    first_png = picker.image.value
    picker.layer_slider.value = 2                                          # as a learner would
    assert torch.equal(picker.weights(), attentions[2, 2]) and picker.image.value != first_png
    picker.pick(0, 3)
    assert (picker.layer_slider.value, picker.head_slider.value) == (0, 3)
    w = attentions[0, 3]
    stats = picker.stats()
    assert stats["previous"] == pytest.approx(w.diagonal(-1).mean().item())
    assert stats["next"] == pytest.approx(w.diagonal(1).mean().item())
    assert stats["self"] == pytest.approx(w.diagonal().mean().item())
    entropy = -(w * w.log()).sum(-1).mean().item()
    assert stats["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert [key for _, key, _ in stats["strongest"]] == [tokens[j] for j in w.argmax(-1).tolist()]
    assert "layer 0, head 3" in picker.text() and picker.readout.value == f"<pre>{html.escape(picker.text())}</pre>"


def test_head_picker_stable_css_classes_and_ranges():
    attentions, tokens = picker_inputs()
    picker = HeadPicker(attentions, tokens)
    assert "layer-slider" in picker.layer_slider._dom_classes and "head-slider" in picker.head_slider._dom_classes
    assert "head-readout" in picker.readout._dom_classes and "head-chart" in picker.image._dom_classes
    assert (picker.layer_slider.max, picker.head_slider.max) == (2, 3)
    assert picker.image.value[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"attentions": torch.ones(4, 5, 5)}, "num_layers, H, T, T"),
    ({"tokens": ["a", "b"]}, "tokens needs 5"),
    ({"layer": 3}, "layer must be"),
    ({"head": -1}, "head must be"),
])
def test_head_picker_rejects_bad_arguments(kwargs, message):
    attentions, tokens = picker_inputs()
    args = {"attentions": attentions, "tokens": tokens, **kwargs}
    with pytest.raises(ValueError, match=message):
        HeadPicker(**args)
