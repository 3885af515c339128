"""Lesson 17's conversion check: interleaved-RoPE projection rows reordered for half-split code."""
import pytest
import torch

from attn_course import checks, rotary
from attn_course.checks import CheckFailure, check_interleaved_to_half_split
from attn_course.rotary import apply_rotary, interleaved_to_half_split


def permute_by_index(weight, num_heads):
    """Written differently: an index of the new row order, head by head."""
    D = weight.shape[0] // num_heads
    order = torch.cat([h * D + torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)]) for h in range(num_heads)])
    return weight[order]


def permute_in_place(weight, num_heads):
    """Right values, but it overwrites the tensor it was given."""
    weight.copy_(interleaved_to_half_split(weight, num_heads))
    return weight


@pytest.mark.parametrize("thorough", [False, True])
def test_reference_and_a_variant_pass(thorough):
    check_interleaved_to_half_split(interleaved_to_half_split, thorough=thorough)
    check_interleaved_to_half_split(permute_by_index, thorough=thorough)


@pytest.mark.parametrize("fn, kind", [
    (lambda w, h: w.clone(), "pairing"),                                              # nothing reordered
    (lambda w, h: interleaved_to_half_split(w, 1) if w.dim() == 2 else w.clone(), "pairing"),   # one big head
    (lambda w, h: w.reshape(h, 2, -1, *w.shape[1:]).transpose(1, 2).reshape(w.shape).clone(), "pairing"),  # the inverse
    (lambda w, h: interleaved_to_half_split(w, h).double(), "dtype"),
    (lambda w, h: interleaved_to_half_split(w, h)[None], "shape"),
    (permute_in_place, "values"),
])
def test_mistakes_fail_with_their_kind(fn, kind):
    with pytest.raises(CheckFailure) as err:
        check_interleaved_to_half_split(fn, thorough=True)
    assert err.value.kind == kind, str(err.value)


def test_the_first_case_names_the_row_order():
    with pytest.raises(CheckFailure) as err:
        check_interleaved_to_half_split(lambda w, h: w.clone())
    assert err.value.kind == "pairing" and "[0, 2, 1, 3]" in str(err.value)


def test_converted_weights_score_alike_and_unconverted_do_not():
    g = torch.Generator().manual_seed(0)
    H, D, E, L = 3, 8, 12, 6
    w_q, w_k, x = torch.randn(H * D, E, generator=g), torch.randn(H * D, E, generator=g), torch.randn(L, E, generator=g)

    def scores(w_q, w_k, interleaved):
        q, k = ((x @ w.T).view(L, H, D).transpose(0, 1) for w in (w_q, w_k))
        return apply_rotary(q, torch.arange(L), interleaved=interleaved) @ \
            apply_rotary(k, torch.arange(L), interleaved=interleaved).transpose(-1, -2)
    trained = scores(w_q, w_k, True)
    torch.testing.assert_close(scores(interleaved_to_half_split(w_q, H), interleaved_to_half_split(w_k, H), False),
                               trained, atol=1e-4, rtol=1e-4)
    assert (scores(w_q, w_k, False) - trained).abs().max() > 1.0


def test_bad_input_says_what_was_expected():
    with pytest.raises(ValueError, match=r"D even .*\(6, 2\)"):
        interleaved_to_half_split(torch.zeros(6, 2), 2)


def test_an_answer_that_calls_the_reference_is_refused_when_armed():
    checks.tripwire.enable()
    try:
        with pytest.raises(CheckFailure) as err:
            check_interleaved_to_half_split(lambda w, h: rotary.interleaved_to_half_split(w, h))
    finally:
        checks.tripwire.enable(False)
    assert err.value.kind == "reference"
