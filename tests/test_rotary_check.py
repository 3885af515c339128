"""check_apply_rotary: the reference and correct answers pass; the pairing mix-up fails as ``pairing``;
each hand-written mistake fails with its kind and a message naming it; the tripwire refuses the reference.

The answers below are written as a learner would (half-split pairs, angles ``positions * theta_i``), each
differing from a correct one by one mistake; none calls ``attn_course.rotary``.
"""
import inspect

import pytest
import torch

from attn_course import checks, rotary
from attn_course.broken import apply_rotary_v2
from attn_course.checks import CheckFailure, check_apply_rotary

THOROUGH = [pytest.param(False, id="quick"), pytest.param(True, id="thorough")]


def rope(x, positions, base=10000.0, theta=None, angle=None, combine=None, dtype=None):
    """A learner's half-split RoPE, with one part replaceable: ``theta(base, i, D)``, ``angle(positions, theta)``,
    ``combine(x_a, x_b, cos, sin)``; ``dtype`` the dtype of cos and sin (x's by default)."""
    D = x.shape[-1]
    i = torch.arange(D // 2, dtype=torch.float64)
    thetas = base ** (-2 * i / D) if theta is None else theta(base, i, D)             # (D/2,)
    angles = positions.double()[..., None] * thetas if angle is None else angle(positions, thetas)   # (..., L, D/2)
    cos, sin = angles.cos().to(dtype or x.dtype), angles.sin().to(dtype or x.dtype)
    x_a, x_b = x[..., :D // 2], x[..., D // 2:]                                       # (..., L, D/2) each
    if combine is None:
        return torch.cat((x_a * cos - x_b * sin, x_b * cos + x_a * sin), dim=-1)     # (..., L, D)
    return combine(x_a, x_b, cos, sin)


def rope_float32(x, positions, base=10000.0):
    """The lesson's answer: theta and the angles in float32, as Hugging Face computes them."""
    D = x.shape[-1]
    theta = 1.0 / base ** (torch.arange(0, D, 2).float() / D)                         # (D/2,)
    angles = positions[..., None].float() * theta                                     # (..., L, D/2)
    x_a, x_b = x[..., :D // 2], x[..., D // 2:]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.cat((x_a * cos - x_b * sin, x_b * cos + x_a * sin), dim=-1)


def rope_meta_complex(x, positions, base=10000.0):
    """Meta's Llama code: neighbouring features (2i, 2i+1) as one complex number: the other pairing."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = positions.double()[..., None] * theta                                    # (..., L, D/2)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], D // 2, 2))       # (..., L, D/2)
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [rotary.apply_rotary, rope, rope_float32,
                                lambda x, positions, base=10000.0: rope(x.double(), positions, base).to(x.dtype)],
                         ids=["reference", "float64-angles", "float32-angles", "all-float64"])
def test_reference_and_correct_answers_pass(fn, thorough):
    check_apply_rotary(fn, thorough=thorough)


def test_check_calls_fn_without_interleaved_and_passes_base_only_when_not_the_default():
    calls = []

    def recording(*args):
        calls.append(args)
        return rotary.apply_rotary(*args)
    check_apply_rotary(recording, thorough=True)
    assert {len(args) for args in calls} == {2, 3}
    assert {args[2] for args in calls if len(args) == 3} == {500000.0}
    assert any(args[1].dim() == 3 for args in calls)                      # positions (B, 1, L)
    assert any(args[0].dtype == torch.float64 for args in calls) and any(args[0].shape[-1] == 2 for args in calls)


@pytest.mark.parametrize("thorough", THOROUGH)
def test_the_suspect_fails_as_pairing(thorough):
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(apply_rotary_v2, thorough=thorough)
    assert err.value.kind == "pairing"
    assert "(2i, 2i + 1)" in str(err.value) and "feature i with feature i + D/2" in str(err.value)
    assert "angles are off too" not in str(err.value)


def same_sign(x_a, x_b, cos, sin):                                  # rotate_half without its minus
    return torch.cat((x_a * cos + x_b * sin, x_b * cos + x_a * sin), dim=-1)


MISTAKES = [
    # (answer, quick or thorough needed, kind, words in the message)
    (lambda x, p, base=10000.0: x.clone(), False, "values", "nothing was turned"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=lambda a, b, c, s: torch.cat((a * c + b * s, b * c - a * s),
                                                                                     -1)),
     False, "values", "turns the other way"),
    (lambda x, p, base=10000.0: rope(x, p, base, theta=lambda b, i, D: b ** (2 * i / D)), False, "values",
     "grow with i"),
    (lambda x, p, base=10000.0: rope(x, p, base, theta=lambda b, i, D: b ** (-i / D)), False, "values",
     "Your exponent is -i / D"),
    (lambda x, p, base=10000.0: rope(x, p, base, theta=lambda b, i, D: b ** (-2 * i.flip(0) / D)), False, "values",
     "reverse order"),
    (lambda x, p, base=10000.0: rope(x, p, base, theta=lambda b, i, D: torch.ones_like(i)), False, "values",
     "by the position alone"),
    (lambda x, p, base=10000.0: rope(x, p, base, theta=lambda b, i, D: i), False, "values", "the position times i"),
    (lambda x, p, base=10000.0: rope(x, torch.arange(x.shape[-2]), base), False, "values",
     "not by the positions given"),
    (lambda x, p, base=10000.0: rope(x, p), True, "values", "base 10000, not the base given (500000)"),
    (lambda x, p, base=10000.0: rope(x, p, base, angle=lambda p, t: p.double()[..., None] / p.max() * t), False,
     "values", "depend only on the offset m - n"),
    (lambda x, p, base=10000.0: rope(x, p + 1, base), False, "values", "as if at position 1"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=lambda a, b, c, s: torch.cat((a * s - b * c, b * s + a * c),
                                                                                     -1)),
     False, "values", "cos and sin are swapped"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=lambda a, b, c, s: torch.stack((a * c - b * s, b * c + a * s),
                                                                                       -1).flatten(-2)),
     False, "values", "in another order"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=same_sign), False, "values", "same sign"),
    (lambda x, p, base=10000.0: 2 * rope(x, p, base), False, "scale", "2 times the right rotation"),
    (lambda x, p, base=10000.0: rope(x, p, base, dtype=torch.float64), False, "dtype",
     "keep x's dtype torch.float32; got torch.float64"),
    (lambda x, p, base=10000.0: rope(x.float(), p, base), True, "dtype",
     "keep x's dtype torch.float64; got torch.float32"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=lambda a, b, c, s: a * c - b * s), False, "shape",
     "Only D/2 features came back"),
    (lambda x, p, base=10000.0: rope(x, p, base, combine=lambda a, b, c, s: torch.stack((a * c - b * s, b * c + a * s),
                                                                                       -2)),
     False, "shape", "merge the pairs back"),
    (lambda x, p, base=10000.0: rope(x, p, base, angle=lambda p, t: p.double()[:, None] * t), True, "error",
     "raised"),
    (rope_meta_complex, False, "pairing", "(2i, 2i + 1)"),
    (lambda x, p, base=10000.0: rope_meta_complex(x, -p, base), False, "pairing", "The angles are off too. Yours turns "
                                                                                  "the other way"),
    (lambda x, p, base=10000.0: None, False, "type", "did you forget `return`"),
]
IDS = ["no-rotation", "wrong-sign", "exponent-plus", "exponent-i-over-D", "frequencies-reversed", "theta-1",
       "theta-i", "index-not-positions", "base-ignored", "positions-normalised", "position-plus-one",
       "cos-sin-swapped", "pairs-stacked-back", "same-sign-sin", "twice", "float64-out", "float32-out",
       "half-returned", "pairs-axis-kept", "positions-1d-only", "interleaved", "interleaved-and-negated", "none"]


@pytest.mark.parametrize("fn, needs_thorough, kind, words", MISTAKES, ids=IDS)
def test_each_mistake_fails_with_its_kind_and_names_it(fn, needs_thorough, kind, words):
    if needs_thorough:
        check_apply_rotary(fn)                                           # the quick case cannot see it
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(fn, thorough=True)
    assert err.value.kind == kind, str(err.value)
    assert words in str(err.value), str(err.value)


def test_messages_say_what_was_expected_and_what_came():
    def identity_broken(x, p, base=10000.0):
        return rope(x, p + 1, base)
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(identity_broken)
    message = str(err.value)
    assert "position 0 must leave x unchanged" in message and "got [" in message and "expected x's [" in message
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(lambda x, p, base=10000.0: rope(x, p, base, combine=same_sign))
    assert "x has length" in str(err.value) and "and x_rotated" in str(err.value)
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(lambda x, p, base=10000.0: rope(x, p, base, angle=lambda p, t: p.double()[..., None] ** 2
                                                                                             * t))
    assert "(m, n) = (" in str(err.value) and "both times" in str(err.value) and "score" in str(err.value)


def test_an_unknown_mistake_is_located():
    def one_pair_wrong(x, p, base=10000.0):                            # pair 1 turns 1.5 times too fast
        return rope(x, p, base, theta=lambda b, i, D: b ** (-2 * i / D) * torch.where(i == 1, 1.5, 1.0))
    with pytest.raises(CheckFailure) as err:
        check_apply_rotary(one_pair_wrong)
    assert err.value.kind == "values" and "pair 1, features 1 and 5" in str(err.value)


def test_pairing_is_a_kind_and_the_check_forbids_the_reference():
    assert "pairing" in checks.KINDS and "pairing" in checks.__doc__
    assert [label for label, _ in check_apply_rotary.forbidden] == ["attn_course.rotary.apply_rotary"]
    assert "check_apply_rotary" in checks.__all__
    assert "interleaved" not in inspect.signature(check_apply_rotary).parameters


def test_tripwire_fails_an_answer_that_calls_the_reference():
    from attn_course.checks import tripwire
    tripwire.enable()
    try:
        with pytest.raises(CheckFailure) as err:
            check_apply_rotary(lambda x, positions, base=10000.0: rotary.apply_rotary(x, positions, base))
        check_apply_rotary(rope)                                           # armed: an answer of its own passes
    finally:
        tripwire.enable(False)
    assert err.value.kind == "reference" and "apply_rotary" in str(err.value)
