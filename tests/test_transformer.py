"""Positional encodings, the transformer block and TextTransformer against PyTorch and float64 references;
masks in float16/32/64; the lesson-07 checks against correct and broken implementations; MaskExplorer.

Mask polarity: our ``attn_mask`` True = may attend (SDPA); ``nn.TransformerEncoderLayer``'s ``src_mask``
and ``nn.MultiheadAttention``'s ``attn_mask`` True = may NOT attend; ``key_padding_mask`` True = padding.
"""
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from attn_course import attention, checks  # noqa: E402
from attn_course.attention import (  # noqa: E402
    causal_mask,
    key_padding_to_attn_mask,
    masked_softmax,
    padding_mask,
)
from attn_course.broken import (  # noqa: E402
    SinusoidalPositionalEncoding_v2,
    TransformerBlock_v2,
    masked_softmax_v2,
    masked_softmax_v3,
    masked_softmax_v4,
)
from attn_course.checks import CheckFailure  # noqa: E402
from attn_course.transformer import (  # noqa: E402
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TextTransformer,
    TransformerBlock,
    sinusoidal_positional_encoding,
)
from attn_course.widgets import MaskExplorer  # noqa: E402

from helpers import DEVICES, F16, F32, F64, THOROUGH, draw, tol  # noqa: E402


# ----------------------------------------------------------------- sinusoidal positional encoding
@pytest.mark.parametrize("seq_len, d_model", [(1, 2), (7, 8), (50, 16), (5, 7)])
def test_sinusoidal_matches_the_formula_by_hand_in_float64(seq_len, d_model):
    expected = torch.zeros(seq_len, d_model, dtype=F64)
    for pos in range(seq_len):
        for col in range(d_model):
            two_i = col - col % 2
            angle = pos / 10000 ** (two_i / d_model)
            expected[pos, col] = math.sin(angle) if col % 2 == 0 else math.cos(angle)
    torch.testing.assert_close(sinusoidal_positional_encoding(seq_len, d_model, dtype=F64), expected,
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(sinusoidal_positional_encoding(seq_len, d_model), expected.float())


def test_sinusoidal_worked_values():
    pe = sinusoidal_positional_encoding(3, 4, dtype=F64)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[2, 0].item() == pytest.approx(math.sin(2)) and pe[2, 3].item() == pytest.approx(math.cos(0.02))


def test_sinusoidal_dot_products_depend_only_on_the_offset():
    pe = sinusoidal_positional_encoding(40, 32, dtype=F64)
    for k in (1, 3, 10):
        dots = (pe[:-k] * pe[k:]).sum(-1)                         # PE[p] . PE[p + k] for every p
        torch.testing.assert_close(dots, dots[:1].expand_as(dots))
    assert len({round((pe[0] * pe[k]).sum().item(), 6) for k in range(1, 10)}) == 9


@pytest.mark.parametrize("args", [(-1, 4), (3, 0), (2.5, 4), (3, 4, 0.0)])
def test_sinusoidal_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        sinusoidal_positional_encoding(*args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F16, F32, F64])
@pytest.mark.parametrize("module_cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_positional_modules_add_one_row_per_position(module_cls, dtype, device):
    torch.manual_seed(0)
    module = module_cls(12, 8).to(device)
    x = draw(torch.Generator().manual_seed(1), 3, 5, 8, dtype=dtype, device=device)
    out = module(x)
    assert out.dtype == dtype and out.shape == x.shape
    table = module.pe[0] if module_cls is SinusoidalPositionalEncoding else module.position_embeddings.weight
    torch.testing.assert_close(out, x + table[:5].to(dtype)[None], **tol(dtype, device))
    assert not torch.allclose(out[:, 0] - x[:, 0], out[:, 1] - x[:, 1])   # positions differ


@pytest.mark.parametrize("module_cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_positional_modules_reject_long_or_wrong_inputs(module_cls):
    module = module_cls(4, 8)
    for bad in (torch.zeros(1, 5, 8), torch.zeros(1, 3, 6), torch.zeros(3, 8)):
        with pytest.raises(ValueError, match="max_len=4"):
            module(bad)


def test_learned_encoding_trains_only_the_rows_used():
    module = LearnedPositionalEncoding(10, 4)
    module(torch.zeros(2, 3, 4)).sum().backward()
    grad = module.position_embeddings.weight.grad
    assert (grad[:3] == 2).all() and (grad[3:] == 0).all()


# ----------------------------------------------------------------- the block vs nn.TransformerEncoderLayer
def masks_for(kind, B, L, lengths, dtype):
    """(our kwargs, torch's kwargs) for one mask setting."""
    kpm = padding_mask(lengths, L)                                    # (B, L), True = padding
    future = ~causal_mask(L)                                          # (L, L), True = ignore: both layers' polarity
    if kind == "none":
        return {}, {}
    if kind == "padding":
        return {"key_padding_mask": kpm}, {"src_key_padding_mask": kpm}
    if kind == "causal":
        return {"is_causal": True}, {"src_mask": future, "is_causal": True}
    if kind == "causal+padding":
        return {"attn_mask": future, "key_padding_mask": kpm}, {"src_mask": future, "src_key_padding_mask": kpm}
    additive = torch.zeros(L, L, dtype=dtype).masked_fill(future, float("-inf"))    # float mask, added
    return {"attn_mask": additive}, {"src_mask": additive}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["none", "padding", "causal", "causal+padding", "float"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("B, L, E, H, F_, dtype", [(2, 5, 8, 2, 16, F32), (3, 7, 12, 3, 20, F64)],
                         ids=["B2-L5-E8-H2-f32", "B3-L7-E12-H3-f64"])
def test_block_equals_torch_encoder_layer(B, L, E, H, F_, dtype, activation, norm_first, mask, device):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, F_, dropout=0.1, activation=activation, batch_first=True,
                                       norm_first=norm_first).to(device, dtype).eval()
    block = TransformerBlock.from_torch(layer).eval()
    assert block.norm_first == norm_first and block.activation == activation
    x = draw(torch.Generator().manual_seed(2), B, L, E, dtype=dtype, device=device)
    ours_kw, torch_kw = masks_for(mask, B, L, [L] + [max(1, L - 2 * b) for b in range(1, B)], dtype)
    ours_kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in ours_kw.items()}
    torch_kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in torch_kw.items()}
    with torch.no_grad():
        expected = layer(x, **torch_kw)
        got = block(x, **ours_kw)
    torch.testing.assert_close(got, expected, **tol(dtype, device))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_block_gradients_equal_torch_in_training_mode_without_dropout(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    block = TransformerBlock.from_torch(layer)
    x = draw(torch.Generator().manual_seed(3), 2, 6, 8)
    kpm = padding_mask([6, 4], 6)
    out_t, out_o = layer(x, src_key_padding_mask=kpm), block(x, key_padding_mask=kpm)
    torch.testing.assert_close(out_o, out_t)
    (out_t * x).sum().backward()
    (out_o * x).sum().backward()
    torch.testing.assert_close(block.linear1.weight.grad, layer.linear1.weight.grad)
    torch.testing.assert_close(block.self_attn.q_proj.weight.grad, layer.self_attn.in_proj_weight.grad[:8])
    torch.testing.assert_close(block.norm1.weight.grad, layer.norm1.weight.grad)


def test_block_from_torch_without_bias_and_with_other_eps():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, bias=False, layer_norm_eps=1e-3).eval()
    block = TransformerBlock.from_torch(layer).eval()
    assert block.linear1.bias is None and block.norm1.eps == 1e-3
    x = draw(torch.Generator().manual_seed(4), 2, 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), layer(x))


def test_block_from_torch_refuses_other_activations():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, activation=torch.tanh)
    with pytest.raises(ValueError, match="relu or gelu"):
        TransformerBlock.from_torch(layer)


def test_block_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        TransformerBlock(8, 2, 16, activation="swish")


def test_block_weights_ignore_padding_and_the_future():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 16).eval()
    x = draw(torch.Generator().manual_seed(5), 2, 5, 8)
    kpm = padding_mask([5, 3], 5)
    out, attn_weights = block(x, key_padding_mask=kpm, is_causal=True, need_weights=True)
    assert out.shape == (2, 5, 8) and attn_weights.shape == (2, 2, 5, 5)
    assert (attn_weights[1, :, :, 3:] == 0).all() and (attn_weights.triu(1) == 0).all()
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(2, 2, 5))
    later = x.clone()
    later[:, 3:] += 1.0                                               # change the future only
    torch.testing.assert_close(block(later, is_causal=True)[:, :3], block(x, is_causal=True)[:, :3])


# ----------------------------------------------------------------- masks in float16, float32, float64
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=["f16", "f32", "f64"])
def test_masked_weights_agree_across_dtypes_with_zero_rows(dtype, device):
    g = torch.Generator().manual_seed(6)
    attn_scores = draw(g, 2, 3, 4, 6, dtype=F64) * 3                               # (B, H, L, S)
    allowed = causal_mask(4, 6) & key_padding_to_attn_mask(padding_mask([6, 3], 6))[:, None]
    allowed[1, :, 0] = False                                                       # a query with no key
    expected = masked_softmax(attn_scores, allowed)                                # float64 reference
    got = masked_softmax(attn_scores.to(dtype).to(device), allowed.to(device))
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.cpu().double(), expected, **({"atol": 1e-3, "rtol": 1e-2} if dtype == F16 else
                                                                 {"atol": 1e-6, "rtol": 1e-5}))
    assert (got[1, :, 0] == 0).all() and (got[~allowed.expand_as(got).to(device)] == 0).all()


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=["f16", "f32", "f64"])
def test_masked_attention_equals_torch_sdpa_in_every_dtype(dtype):
    g = torch.Generator().manual_seed(7)
    query, key, value = (draw(g, 2, 2, 5, 8, dtype=dtype) for _ in range(3))
    allowed = causal_mask(5) & key_padding_to_attn_mask(padding_mask([5, 2], 5))[:, None]
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
    got = attention.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, **tol(dtype))


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=["f16", "f32", "f64"])
def test_block_runs_in_every_dtype_with_the_same_result(dtype):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, norm_first=True).double().eval()
    x = draw(torch.Generator().manual_seed(8), 2, 6, 16, dtype=F64)
    kpm = padding_mask([6, 2], 6)
    with torch.no_grad():
        expected = block(x, key_padding_mask=kpm, is_causal=True)
        got = block.to(dtype)(x.to(dtype), key_padding_mask=kpm, is_causal=True)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, **({"atol": 2e-2, "rtol": 1e-2} if dtype == F16 else
                                                          {"atol": 1e-5, "rtol": 1e-4}))


def test_minus_1e9_overflows_in_float16_and_minus_inf_rows_are_nan():
    assert torch.tensor(-1e9, dtype=F16).item() == float("-inf")
    scores = torch.zeros(2, 3, dtype=F16)
    with pytest.raises(RuntimeError, match="overflow"):
        scores.masked_fill(torch.ones(2, 3, dtype=torch.bool), -1e9)
    no_key = torch.tensor([[True, False, False], [False, False, False]])
    assert torch.softmax(scores.masked_fill(~no_key, float("-inf")), -1)[1].isnan().all()
    assert (masked_softmax(scores, no_key)[1] == 0).all()


# ----------------------------------------------------------------- TextTransformer
def small_model(positional="sinusoidal", **kwargs):
    torch.manual_seed(0)
    return TextTransformer(20, 16, 2, 32, 2, 3, max_len=12, positional=positional, **kwargs).eval()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "none"])
def test_text_transformer_ignores_padding(positional, norm_first):
    model = small_model(positional, norm_first=norm_first)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)     # three more padding tokens
    with torch.no_grad():
        logits, weights = model(ids, need_weights=True)
        torch.testing.assert_close(model(padded), logits)
    assert logits.shape == (2, 3) and len(weights) == 2 and weights[0].shape == (2, 2, 4, 4)
    assert (weights[1][1, :, :, 3] == 0).all()


def test_text_transformer_order_sensitivity():
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    shuffled = ids[:, [4, 2, 0, 3, 1]]
    with torch.no_grad():
        for positional in ("sinusoidal", "learned"):
            model = small_model(positional)
            assert not torch.allclose(model(ids), model(shuffled), atol=1e-4)
        for positional in ("none", SinusoidalPositionalEncoding_v2(12, 16)):
            model = small_model(positional)
            torch.testing.assert_close(model(ids), model(shuffled))             # a bag of words


def test_text_transformer_equals_torch_layers_with_copied_weights():
    model = small_model("sinusoidal")
    layers = []
    for block in model.blocks:
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(torch.cat([block.self_attn.q_proj.weight, block.self_attn.k_proj.weight,
                                                            block.self_attn.v_proj.weight]))
            layer.self_attn.in_proj_bias.copy_(torch.cat([block.self_attn.q_proj.bias, block.self_attn.k_proj.bias,
                                                          block.self_attn.v_proj.bias]))
            layer.self_attn.out_proj.load_state_dict(block.self_attn.out_proj.state_dict())
            for name in ("linear1", "linear2", "norm1", "norm2"):
                getattr(layer, name).load_state_dict(getattr(block, name).state_dict())
        layers.append(layer)
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    kpm = ids == 0
    with torch.no_grad():
        x = model.embedding(ids) + sinusoidal_positional_encoding(5, 16)
        for layer in layers:
            x = layer(x, src_key_padding_mask=kpm)
        keep = (~kpm).float()[..., None]
        expected = model.classifier((x * keep).sum(1) / keep.sum(1))
        torch.testing.assert_close(model(ids), expected)


def test_text_transformer_learns_order_while_a_bag_of_words_stays_at_chance():
    # Label: is the first token's id larger than the second's? (a, b) and (b, a) have opposite labels.
    pairs = torch.tensor([(a, b) for a in range(1, 11) for b in range(1, 11) if a != b])   # (90, 2)
    labels = (pairs[:, 0] > pairs[:, 1]).long()
    accuracy, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)                           # tiny tensors: threads only add synchronisation
    for positional in ("learned", "none"):
        torch.manual_seed(0)
        model = TextTransformer(11, 16, 2, 32, 1, 2, max_len=4, positional=positional)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(60):
            loss = F.cross_entropy(model(pairs), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracy[positional] = (model.eval()(pairs).argmax(-1) == labels).float().mean().item()
    torch.set_num_threads(threads)
    assert accuracy["learned"] > 0.9
    assert accuracy["none"] == pytest.approx(0.5, abs=0.02)


def test_text_transformer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positional"):
        small_model("rotary")
    with pytest.raises(ValueError, match="max_len=12"):
        small_model()(torch.ones(1, 13, dtype=torch.long))


# ----------------------------------------------------------------- checks vs correct and broken code
def masked_softmax_where(attn_scores, attn_mask):
    filled = attn_scores.masked_fill(~attn_mask, float("-inf"))
    return torch.where(attn_mask.any(-1, keepdim=True), torch.softmax(filled, -1), torch.zeros_like(filled))


def masked_softmax_finfo_min(attn_scores, attn_mask):
    filled = attn_scores.masked_fill(~attn_mask, torch.finfo(attn_scores.dtype).min)
    return torch.softmax(filled, -1) * attn_mask.any(-1, keepdim=True)


def masked_softmax_by_hand(attn_scores, attn_mask):
    filled = attn_scores.masked_fill(~attn_mask, float("-inf"))
    top = filled.max(-1, keepdim=True).values.nan_to_num(0.0, neginf=0.0)
    exp = torch.exp(filled - top)
    return torch.nan_to_num(exp / exp.sum(-1, keepdim=True), nan=0.0)


def masked_softmax_minus_1e9_rows_zeroed(attn_scores, attn_mask):
    weights = torch.softmax(attn_scores.masked_fill(~attn_mask, -1e9), -1)
    return weights * attn_mask.any(-1, keepdim=True)


def masked_softmax_nan_rows(attn_scores, attn_mask):
    return torch.softmax(attn_scores.masked_fill(~attn_mask, float("-inf")), -1)


def masked_softmax_after_softmax_when_causal(attn_scores, attn_mask):
    if attn_mask.shape[-2] == 1:                                                   # padding only: correct
        return masked_softmax(attn_scores, attn_mask)
    return torch.softmax(attn_scores, -1).masked_fill(~attn_mask, 0.0)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [masked_softmax, masked_softmax_where, masked_softmax_finfo_min, masked_softmax_by_hand],
                         ids=lambda f: f.__name__)
def test_masked_softmax_correct_implementations_pass(fn, thorough):
    checks.check_masked_softmax(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragment", [
    (masked_softmax_v2, "mask", "-1e9"),
    (masked_softmax_v3, "mask", "before the softmax"),
    (masked_softmax_v4, "mask", "polarity is inverted"),
    (masked_softmax_nan_rows, "finite", "0/0 = NaN"),
], ids=["v2", "v3", "v4", "nan_rows"])
def test_masked_softmax_broken_versions_fail(fn, kind, fragment, thorough):
    with pytest.raises(CheckFailure) as info:
        checks.check_masked_softmax(fn, thorough=thorough)
    assert info.value.kind == kind and fragment in str(info.value)


def test_masked_softmax_float16_overflow_is_caught_when_thorough():
    checks.check_masked_softmax(masked_softmax_minus_1e9_rows_zeroed)
    with pytest.raises(CheckFailure) as info:
        checks.check_masked_softmax(masked_softmax_minus_1e9_rows_zeroed, thorough=True)
    assert info.value.kind == "error" and "float16" in str(info.value) and "-inf" in str(info.value)


def test_masked_softmax_causality_probe():
    with pytest.raises(CheckFailure) as info:
        checks.check_masked_softmax(masked_softmax_after_softmax_when_causal)
    assert info.value.kind == "causality" and "the future" in str(info.value)


def block_forward(block, x, attn_mask, key_padding_mask):
    def attend(h):
        return block.self_attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]
    if block.norm_first:
        x = x + attend(block.norm1(x))
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + attend(x))
    return block.norm2(x + block.feed_forward(x))


def block_by_hand(block, x, attn_mask, key_padding_mask):
    """Layer norm and the feed-forward layer written out."""
    def ln(norm, h):
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    act = F.relu if block.activation == "relu" else F.gelu

    def ff(h):
        return act(h @ block.linear1.weight.T + block.linear1.bias) @ block.linear2.weight.T + block.linear2.bias
    attn = block.self_attn
    if block.norm_first:
        x = x + attn(ln(block.norm1, x), attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]
        return x + ff(ln(block.norm2, x))
    x = ln(block.norm1, x + attn(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0])
    return ln(block.norm2, x + ff(x))


def block_post_ln_always(block, x, attn_mask, key_padding_mask):
    x = block.norm1(x + block.self_attn(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0])
    return block.norm2(x + block.feed_forward(x))


def block_without_masks(block, x, attn_mask, key_padding_mask):
    return block_forward(block, x, None, None)


def block_no_residual(block, x, attn_mask, key_padding_mask):
    if block.norm_first:
        return block_forward(block, x, attn_mask, key_padding_mask)
    x = block.norm1(block.self_attn(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0])
    return block.norm2(x + block.feed_forward(x))


def block_ignoring_attn_mask(block, x, attn_mask, key_padding_mask):
    return block_forward(block, x, None, key_padding_mask)


def block_returns_tuple(block, x, attn_mask, key_padding_mask):
    return block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=True)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [lambda b, x, m, k: b(x, attn_mask=m, key_padding_mask=k), block_forward, block_by_hand],
                         ids=["reference", "block_forward", "block_by_hand"])
def test_transformer_block_correct_implementations_pass(fn, thorough):
    checks.check_transformer_block(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragment", [
    (lambda b, *a: TransformerBlock_v2.forward(b, *a), "values", "not norm1(x)"),
    (block_post_ln_always, "values", "block.norm_first is True"),
    (block_without_masks, "values", "without masks"),
    (block_no_residual, "values", "residual connections are missing"),
    (block_returns_tuple, "type", "not a tuple"),
], ids=["TransformerBlock_v2", "post_ln_always", "without_masks", "no_residual", "tuple"])
def test_transformer_block_mistakes_fail(fn, kind, fragment, thorough):
    with pytest.raises(CheckFailure) as info:
        checks.check_transformer_block(fn, thorough=thorough)
    assert info.value.kind == kind and fragment in str(info.value)


def test_transformer_block_causality_probe_when_thorough():
    checks.check_transformer_block(block_ignoring_attn_mask)
    with pytest.raises(CheckFailure) as info:
        checks.check_transformer_block(block_ignoring_attn_mask, thorough=True)
    assert info.value.kind == "causality"


class PositionsByHand(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.d_model = d_model

    def forward(self, x):
        L, E = x.shape[1], self.d_model
        pe = torch.tensor([[math.sin(p / 10000 ** ((c - c % 2) / E)) if c % 2 == 0 else
                            math.cos(p / 10000 ** ((c - c % 2) / E)) for c in range(E)] for p in range(L)])
        return x + pe.to(x.dtype)


class PositionsByBatch(SinusoidalPositionalEncoding):
    def forward(self, x):                                   # the PyTorch tutorial's layout used with batch_first
        return x + self.pe[0, :x.shape[0]][:, None].to(x.dtype)


class PositionsFloat32(SinusoidalPositionalEncoding):
    def forward(self, x):
        return x + self.pe[:, :x.shape[1]]


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, PositionsByHand], ids=lambda c: c.__name__)
def test_positional_encoding_correct_implementations_pass(cls, thorough):
    checks.check_positional_encoding(cls, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("cls, kind, fragment", [
    (SinusoidalPositionalEncoding_v2, "values", "same encoding vector"),
    (PositionsByBatch, "values", "x.shape[0]"),
    (LearnedPositionalEncoding, "values", "row l of sinusoidal"),
    (lambda max_len, d_model: lambda x: x + x, "values", "without transforming x"),
], ids=["v2", "by_batch", "learned", "doubles_x"])
def test_positional_encoding_mistakes_fail(cls, kind, fragment, thorough):
    with pytest.raises(CheckFailure) as info:
        checks.check_positional_encoding(cls, thorough=thorough)
    assert info.value.kind == kind and fragment in str(info.value)


def test_positional_encoding_float32_buffer_is_caught_when_thorough():
    checks.check_positional_encoding(PositionsFloat32)
    with pytest.raises(CheckFailure) as info:
        checks.check_positional_encoding(PositionsFloat32, thorough=True)
    assert info.value.kind == "dtype"


@pytest.mark.parametrize("check", [checks.check_masked_softmax, checks.check_transformer_block,
                                   checks.check_positional_encoding], ids=lambda c: c.__name__)
def test_lesson07_checks_report_unfinished_and_none(check):
    def unfinished(*args):
        raise NotImplementedError("Exercise: write it")

    def returns_none(*args):
        return None
    with pytest.raises(CheckFailure) as info:
        check(unfinished)
    assert info.value.kind == "error" and "not implemented" in str(info.value)
    with pytest.raises(CheckFailure) as info:
        check(returns_none) if check is not checks.check_positional_encoding else check(lambda *a: returns_none)
    assert info.value.kind == "type" and "return" in str(info.value)


@pytest.mark.parametrize("broken, reference", [
    (masked_softmax_v2, masked_softmax), (masked_softmax_v3, masked_softmax), (masked_softmax_v4, masked_softmax),
    (SinusoidalPositionalEncoding_v2, SinusoidalPositionalEncoding), (TransformerBlock_v2, TransformerBlock)])
def test_broken_versions_keep_the_reference_docstring(broken, reference):
    assert broken.__doc__ == reference.__doc__ and len(broken.__doc__) > 100


# ----------------------------------------------------------------- MaskExplorer
def explorer(**kwargs):
    g = torch.Generator().manual_seed(9)
    return MaskExplorer(torch.randn(6, 6, generator=g), "the cat sat on the mat".split(), **kwargs)


def test_mask_explorer_padding_and_causal():
    w = explorer(num_padding=2)
    assert w.weights()[:, 4:].abs().sum() == 0
    torch.testing.assert_close(w.weights().sum(-1), torch.ones(6))
    assert "padding tokens: 2" in w.text() and "24 of 36 cells allowed" in w.text()
    assert w.shown_labels()[-2:] == ["<pad>", "<pad>"]
    png = w.image.value
    w.causal_box.value = True
    assert w.image.value != png and (w.weights().triu(1) == 0).all()
    assert "18 of 36 cells allowed" in w.text() and "causal: on" in w.text()
    w.slider.value = 0
    torch.testing.assert_close(w.weights(), masked_softmax(w.attn_scores, causal_mask(6)))


def test_mask_explorer_wrong_polarity_attends_to_padding_only():
    w = explorer(num_padding=2, wrong_polarity=True)
    assert torch.equal(w.attn_mask(), padding_mask([4], 6).expand(6, 6))
    assert "total weight on padding keys: 6.000" in w.text()
    w.slider.value = 0
    assert (w.weights() == 0).all() and "(all-zero rows): 6" in w.text()


def test_mask_explorer_css_classes_and_errors():
    w = explorer()
    assert "mask-padding-slider" in w.slider._dom_classes and "mask-causal-toggle" in w.causal_box._dom_classes
    assert "mask-polarity-toggle" in w.polarity_box._dom_classes and "mask-readout" in w.readout._dom_classes
    assert "mask-chart" in w.image._dom_classes
    with pytest.raises(ValueError, match=r"\(S, S\)"):
        MaskExplorer(torch.zeros(3, 4), list("abc"))
    with pytest.raises(ValueError, match="labels"):
        MaskExplorer(torch.zeros(3, 3), list("ab"))
    with pytest.raises(ValueError, match="num_padding"):
        MaskExplorer(torch.zeros(3, 3), list("abc"), num_padding=3)
