"""The probes and the suspect line-up of lesson 08 (attn_course.checks.probes, attn_course.widgets.bug_hunt), against independent facts."""
import pytest
import torch
from torch import nn

import attn_course as ac
from attn_course import broken, data
from attn_course.checks.probes import influence_matrix, pad_row_gradient
from attn_course.widgets import SuspectExplorer


def sdpa_with(mask_fn, L):
    return lambda q, k, v: ac.scaled_dot_product_attention(q, k, v, attn_mask=mask_fn(L))


def test_influence_matrix_of_a_causal_layer_is_lower_triangular_and_full_below():
    m = influence_matrix(sdpa_with(ac.causal_mask, 6), 6)
    assert m.shape == (6, 6)
    assert torch.equal(m.triu(diagonal=1), torch.zeros(6, 6, dtype=m.dtype))       # nothing from the future
    assert (m[ac.causal_mask(6)] > 1e-6).all()                                     # every past position counts


def test_influence_matrix_sees_the_leak_of_the_broken_mask_and_everything_without_mask():
    leak = influence_matrix(sdpa_with(broken.causal_mask_v2, 6), 6)
    assert (leak.diagonal(offset=1) > 1e-6).all() and torch.equal(leak.triu(diagonal=2), torch.zeros(6, 6, dtype=leak.dtype))
    full = influence_matrix(lambda q, k, v: ac.scaled_dot_product_attention(q, k, v), 5)
    assert (full > 1e-6).all()


def test_pad_row_gradient_is_zero_with_padding_idx_only_and_keeps_existing_grad():
    ids = torch.tensor([[3, 0, 0], [1, 2, 0]])
    with_idx = data.token_embedding(5, 4, 0, torch.Generator().manual_seed(0))
    without = broken.token_embedding_v2(5, 4, 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_idx.weight, without.weight)                    # the same table
    assert torch.equal(pad_row_gradient(with_idx, ids, 0), torch.zeros(4))
    grad = pad_row_gradient(without, ids, 0)
    torch.testing.assert_close(grad, 3 * torch.arange(1.0, 5.0))                   # 3 pad positions, d(out*c)/dw = c
    emb = nn.Embedding(5, 4)
    emb.weight.grad = torch.ones(5, 4)
    pad_row_gradient(emb, ids, 0)
    assert torch.equal(emb.weight.grad, torch.ones(5, 4))


def suspects():
    return {
        "attention_weights_v3": ("attention_weights", broken.attention_weights_v3, ac.attention_weights),
        "softmax_with_temperature_v2": ("softmax_with_temperature", broken.softmax_with_temperature_v2,
                                        ac.softmax_with_temperature),
        "scaled_dot_product_attention_v2": ("scaled_dot_product_attention", broken.scaled_dot_product_attention_v2,
                                            ac.scaled_dot_product_attention),
        "causal_mask_v2": ("causal_mask", broken.causal_mask_v2, ac.causal_mask),
    }


def test_explorer_reference_weights_equal_the_reference_and_the_global_bug_vanishes_at_64():
    tokens = data.tokenize("The cat sat on the mat.")
    ex = SuspectExplorer(suspects(), tokens)
    ex.head_dim.value = 8
    ref, sus = ex.weights()
    torch.testing.assert_close(ref, ac.attention_weights(ex.query[:, :8], ex.key[:, :8]))
    assert (ref - sus).abs().max() > 0.05
    ex.head_dim.value = 64
    ref, sus = ex.weights()
    torch.testing.assert_close(ref, sus)
    assert "largest difference: 0.0000" in ex.text()


def test_explorer_knob_follows_the_suspect_and_redraws():
    ex = SuspectExplorer(suspects(), data.tokenize("The cat sat on the mat."))
    assert ex.knob.disabled
    first = ex.image.value
    ex.dropdown.value = "scaled_dot_product_attention_v2"
    assert ex.knob.description == "dropout_p" and not ex.knob.disabled and ex.knob.value == 0.25
    assert ex.image.value != first
    ref, sus = ex.weights()
    torch.testing.assert_close(sus.sum(), ref.sum() * 0.75 / 0.25, rtol=1e-5, atol=1e-5)  # same draws, x (1-p)/p
    ex.dropdown.value = "softmax_with_temperature_v2"
    ex.knob.value = 2.0
    ref, sus = ex.weights()
    assert ac.entropy(sus).mean() < ac.entropy(ref).mean()                          # T=2: the suspect sharpens
    assert "temperature = 2.00" in ex.text()


def test_explorer_refuses_unknown_kinds_and_empty_line_ups():
    with pytest.raises(ValueError, match="unknown kind"):
        SuspectExplorer({"x": ("nope", None, None)}, ["a"])
    with pytest.raises(ValueError, match="at least one"):
        SuspectExplorer({}, ["a"])
