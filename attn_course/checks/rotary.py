"""Checks of lesson 17: rotary position embeddings (RoPE), the half-split pairing of Hugging Face's Llama.

The learner's ``fn(x, positions, base=10000.0)`` must turn pair i = (x[..., i], x[..., i + D/2]) of every
query or key by ``positions * theta_i``, ``theta_i = base ** (-2i / D)``, as
``attn_course.rotary.apply_rotary(x, positions, base)``. The properties are checked before the values,
each with its own message: position 0 is the identity, lengths are kept (a rotation), and ``q_m . k_n``
depends only on ``m - n``. A rotation of the other pairs, (2i, 2i + 1), fails with kind ``pairing``.
"""
import math

import torch

from .. import rotary
from .core import CheckFailure, call_learner, expect_tensor, forbids, format_shape, random_tensor, rescaling
from .tripwire import package

_TOL = {"atol": 1e-5, "rtol": 1e-4}     # both dtypes: angles computed in float32 (as Hugging Face does) pass
_KNOWN = {"atol": 5e-3, "rtol": 5e-3}   # to recognise a known mistake, whatever precision it was computed in
_BASE = 10000.0                          # the default base of the exercise's signature
_RELATIVE = (torch.tensor([0, 3, 5, 12, 2, 9]), torch.tensor([0, 1, 9, 4, 2, 20]), 7)   # m, n, shift t


def _rotary_cases(thorough):
    """(label, x's shape (B, H, L, D), positions, base, dtype)."""
    f32, f64 = torch.float32, torch.float64
    yield "(B, H, L, D) = (2, 3, 5, 8), positions 0..4", (2, 3, 5, 8), torch.arange(5), _BASE, f32
    if thorough:
        yield "float64: (2, 2, 6, 16), positions 0..5", (2, 2, 6, 16), torch.arange(6), _BASE, f64
        yield "positions with gaps [3, 7, 8, 20]: (1, 2, 4, 16)", (1, 2, 4, 16), torch.tensor([3, 7, 8, 20]), _BASE, f32
        per_sequence = torch.tensor([[0, 1, 2, 3, 4], [5, 9, 10, 30, 31]])[:, None, :]      # (B, 1, L)
        yield ("positions (B, 1, L) = [[0, 1, 2, 3, 4], [5, 9, 10, 30, 31]], one row per sequence, broadcast "
               "over H = 3 heads: (2, 3, 5, 8)"), (2, 3, 5, 8), per_sequence, _BASE, f32
        yield "base = 500000.0 (Llama 3): (2, 2, 6, 16), positions 0..5", (2, 2, 6, 16), torch.arange(6), 500000.0, f32
        yield "D = 2, one pair: (2, 3, 4, 2), positions [0, 1, 2, 9]", (2, 3, 4, 2), torch.tensor([0, 1, 2, 9]), \
            _BASE, f32


def _shown(v, n=6):
    values = ", ".join(f"{x:.4f}" for x in v.detach().double().flatten()[:n].tolist())
    return f"[{values}{', ...' if v.numel() > n else ''}]"


def _rotate(fn, x, positions, base, case):
    """``fn(x, positions)``, or ``fn(x, positions, base)`` for a base other than the default 10000."""
    args = (x.clone(), positions.clone()) if base == _BASE else (x.clone(), positions.clone(), base)
    return call_learner(fn, args, case)


def _expect_shape_and_dtype(got, expected, case):
    """Type, shape, dtype and finiteness of ``got`` against the reference's ``expected`` (..., L, D)."""
    if isinstance(got, torch.Tensor) and got.shape != expected.shape:
        D = expected.shape[-1]
        hint = ""
        if got.shape[:-1] == expected.shape[:-1] and got.shape[-1] == D // 2:
            hint = (" Only D/2 features came back: return both rotated halves of every pair, concatenated "
                    "along the last axis (torch.cat(..., dim=-1)).")
        elif got.numel() == expected.numel():
            hint = " The numbers are all there: merge the pairs back into the last axis, (..., L, D)."
        elif got.dim() > expected.dim():
            hint = (" Did positions broadcast against the features? The angles positions[..., None] * theta "
                    "have shape (..., L, D/2), positions on the L axis.")
        raise CheckFailure("shape", f"{case}: x_rotated must keep x's shape (..., L, D) = "
                                    f"{format_shape(expected.shape)}; got {format_shape(got.shape)}.{hint}")
    if isinstance(got, torch.Tensor) and got.dtype != expected.dtype:
        raise CheckFailure("dtype", f"{case}: x_rotated must keep x's dtype {expected.dtype}; got {got.dtype}. "
                                    f"Compute the angles in any precision, then cast cos and sin to x.dtype.")
    if isinstance(got, torch.Tensor) and got.is_floating_point() and not torch.isfinite(got).all():
        raise CheckFailure("finite", f"{case}: x_rotated contains NaN or inf; the reference is finite (cos and "
                                     f"sin lie in [-1, 1]). Look for a division, or an exponent of base that "
                                     f"overflows.")
    expect_tensor("x_rotated", got, expected, case, "(..., L, D)", atol=math.inf)    # raises `type` only
    c = rescaling(got.detach().cpu(), expected, "scores")
    if c is not None:
        raise CheckFailure("scale", f"{case}: x_rotated is {c:.4g} times the right rotation; a rotation keeps each "
                                    f"vector's length. Multiply by cos and sin only, nothing else.")


def _identity_hint(a, e, base):
    """Why a row at position 0 came out changed: reordered features, cos and sin swapped, position 1."""
    if torch.allclose(a.sort().values, e.sort().values, **_TOL):
        return (" These are x's features in another order: write each turned pair back where it came from, "
                "features i and i + D/2 (torch.cat((first, second), dim=-1), not stack and flatten).")
    if torch.allclose(a.abs().sort().values, e.abs().sort().values, **_TOL):
        return (" These are x's features moved and negated, as when cos and sin are swapped: the first half is "
                "x_a * cos - x_b * sin, the second x_b * cos + x_a * sin.")
    if torch.allclose(a.double(), rotary.apply_rotary(e.double()[None], torch.tensor([1]), base)[0], **_KNOWN):
        return " They are turned as if at position 1: use the positions as given, without adding 1."
    return ""


def _expect_identity_and_norms(got, x, positions, base, case):
    """Position 0 leaves x unchanged; every position keeps each vector's length."""
    D = x.shape[-1]
    zero = torch.broadcast_to(positions == 0, x.shape[:-1])                           # (..., L)
    a, e = got.detach().cpu()[zero], x[zero]                                          # (N, D)
    if zero.any() and not torch.allclose(a, e, **_TOL):
        r = int((a - e).abs().amax(-1).argmax())
        index = zero.nonzero()[r].tolist()
        raise CheckFailure("values", f"{case}: position 0 must leave x unchanged (its angles 0 * theta_i are 0: "
                                     f"cos = 1, sin = 0); at x_rotated[{', '.join(map(str, index))}, :] (position 0) "
                                     f"got {_shown(a[r])}, expected x's {_shown(e[r])}."
                                     + _identity_hint(a[r], e[r], base))
    n_got, n_x = got.detach().cpu().norm(dim=-1), x.norm(dim=-1)                    # (..., L)
    if not torch.allclose(n_got, n_x, **_TOL):
        index = tuple(int(i) for i in ((n_got - n_x).abs() == (n_got - n_x).abs().max()).nonzero()[0])
        where = torch.broadcast_to(positions, x.shape[:-1])                         # (..., L)
        p = where[index].item()
        angle = rotary.rotary_angles(where, D, base, torch.float64)                 # (..., L, D/2)
        cos, sin = torch.cat((angle.cos(), angle.cos()), dim=-1), torch.cat((angle.sin(), angle.sin()), dim=-1)
        swapped = torch.cat((x[..., D // 2:], x[..., :D // 2]), dim=-1).double()      # (x_b, x_a)
        same_sign = any(torch.allclose(got.detach().cpu().double(), x.double() * cos + s * swapped * sin, **_KNOWN)
                        for s in (1, -1))
        hint = ("The two sin terms carry the same sign: that is no rotation. One line takes - sin, the other "
                "+ sin: (x_a cos - x_b sin, x_b cos + x_a sin); rotate_half(x) is torch.cat((-x_b, x_a), dim=-1), "
                "with its minus." if same_sign else
                "Turn each pair (x_a, x_b) by one angle: (x_a cos - x_b sin, x_b cos + x_a sin), cos and sin of "
                "the same p * theta_i in both lines.")
        raise CheckFailure("values", f"{case}: a rotation keeps each vector's length; at index {list(index)} "
                                     f"(position {p:g}) x has length {n_x[index].item():.4f} and x_rotated "
                                     f"{n_got[index].item():.4f}. {hint}")


def _expect_relative(fn, x_shape, base, dtype, g, label):
    """``q_m . k_n`` must be the same at (m, n) and (m + t, n + t); returns the four calls' (case, x, positions,
    result), whose values are compared with the reference's afterwards."""
    m, n, t = _RELATIVE
    L, D = len(m), x_shape[-1]
    q, k = random_tensor(g, 1, 1, L, D, dtype=dtype), random_tensor(g, 1, 1, L, D, dtype=dtype)
    calls = []
    for vec, name, pos in ((q, "q", m), (k, "k", n), (q, "q", m + t), (k, "k", n + t)):
        case = f"{label}; relative property: {name} (1, 1, {L}, {D}) at positions {pos.tolist()}"
        got = _rotate(fn, vec, pos, base, case)
        _expect_shape_and_dtype(got, rotary.apply_rotary(vec, pos, base), case)
        calls.append((case, vec, pos, got.detach().cpu()))
    before = (calls[0][3].double() * calls[1][3].double()).sum(-1)[0, 0]            # (L,): q_m . k_n
    after = (calls[2][3].double() * calls[3][3].double()).sum(-1)[0, 0]
    if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
        i = int((before - after).abs().argmax())
        raise CheckFailure("values", (
            f"{label}: q_m . k_n must depend only on the offset m - n. The same q and k rotated to (m, n) = "
            f"({m[i]}, {n[i]}) score {before[i].item():.4f}; moved together to ({m[i] + t}, {n[i] + t}) (offset "
            f"{m[i] - n[i]} both times) they score {after[i].item():.4f}. Each angle must be the position times a "
            f"fixed frequency, p * theta_i, so that (m + t) theta_i - (n + t) theta_i = (m - n) theta_i."))
    return calls


def _turned(x, positions, thetas, interleaved):
    """x (float64) with pair i turned by ``positions * thetas[i]``: the reference's rotation, pair by pair."""
    D, out = x.shape[-1], torch.empty_like(x)
    for i, theta in enumerate(thetas.tolist()):
        pair = [2 * i, 2 * i + 1] if interleaved else [i, i + D // 2]
        out[..., pair] = rotary.apply_rotary(x[..., pair], positions.double() * theta)   # D = 2: theta_0 = 1
    return out


def _angle_mistakes(D, base, positions, length):
    """[(thetas (D/2,), positions, what is wrong)]: the right angles first (description None), then known mistakes."""
    i = torch.arange(D // 2, dtype=torch.float64)
    right = base ** (-2 * i / D)
    mistakes = [
        (right, positions, None),
        (torch.zeros_like(i), positions, "x_rotated equals x: nothing was turned."),
        (-right, positions, "Yours turns the other way (by -p theta_i): the first half is x_a cos - x_b sin, "
                            "the second x_b cos + x_a sin."),
        (base ** (2 * i / D), positions, "Your frequencies grow with i, theta_i = base ** (+2i / D); RoPE's fall: "
                                         "theta_i = base ** (-2i / D), 1 for pair 0, then ever slower."),
        (base ** (-i / D), positions, "Your exponent is -i / D; it is -2i / D, i = 0 .. D/2 - 1 "
                                      "(torch.arange(0, D, 2) / D)."),
        (right.flip(0), positions, "Your frequencies are in reverse order: pair 0 (features 0 and D/2) turns "
                                   "fastest, theta_0 = 1, and pair D/2 - 1 slowest."),
        (torch.ones_like(i), positions, "Every pair turns by the position alone (theta_i = 1): each pair needs its "
                                        "own frequency, theta_i = base ** (-2i / D)."),
        (i, positions, "Your angles are the position times i: they are the position times theta_i = "
                       "base ** (-2i / D)."),
        (right, torch.arange(length), "Yours turns by the index 0 .. L-1, not by the positions given: use "
                                      "positions (they need not start at 0, nor be consecutive)."),
    ]
    if base != 10000.0:
        mistakes.append((10000.0 ** (-2 * i / D), positions,
                         f"Yours uses base 10000, not the base given ({base:g}): pass base on."))
    return mistakes


def _expect_values(got, x, positions, base, case):
    """Equal to the reference; else the pairing mix-up (kind ``pairing``) or a known mistake of the angles named."""
    L, D = x.shape[-2:]
    expected = rotary.apply_rotary(x, positions, base)
    a = got.detach().cpu().double()
    (right, _, _), *wrong = _angle_mistakes(D, base, positions, L)
    where = torch.broadcast_to(positions, x.shape[:-1])                              # (..., L)
    mistakes = [(right, positions, None)] + [                        # without the mistakes equal to the right one
        (th, pos, what) for th, pos, what in wrong
        if not (torch.allclose(th, right) and torch.equal(torch.broadcast_to(pos, x.shape[:-1]), where))]
    if D > 2 and not torch.allclose(got.detach().cpu(), expected, **_TOL):
        for thetas, pos, what in mistakes:
            neighbours = _turned(x.double(), pos, thetas, interleaved=True)
            same = torch.allclose(neighbours, _turned(x.double(), pos, thetas, interleaved=False), **_KNOWN)  # x
            if torch.allclose(a, neighbours, **_KNOWN) and not same:
                raise CheckFailure("pairing", (
                    f"{case}: x_rotated turns the pairs of neighbouring features (2i, 2i + 1), the interleaved "
                    f"pairing of the RoFormer paper, GPT-J and Meta's Llama code; this exercise asks for the "
                    f"half-split pairing of GPT-NeoX and Hugging Face's Llama, feature i with feature i + D/2 (the "
                    f"first half of the features with the second half). Weights trained with one pairing give wrong "
                    f"scores under the other, though every shape fits and q . k still depends only on m - n."
                    + (f" The angles are off too. {what}" if what else "")))

    def hint(actual, expected):
        for thetas, pos, what in mistakes[1:]:
            if torch.allclose(actual.double(), _turned(x.double(), pos, thetas, interleaved=False), **_KNOWN):
                return what
        index = [int(j) for j in ((actual - expected).abs() == (actual - expected).abs().max()).nonzero()[0]]
        p = where[tuple(index[:-1])].item()
        pair = index[-1] % (D // 2)
        return (f"The largest difference is at index {index}: position {p:g}, feature {index[-1]} (pair {pair}, "
                f"features {pair} and {pair + D // 2}). Pair i = (x[..., i], x[..., i + D/2]) turns by "
                f"position * theta_i, theta_i = base ** (-2i / D).")
    expect_tensor("x_rotated", got, expected, case, "(..., L, D)", hint=hint, **_TOL)


@forbids(*package(rotary.apply_rotary))
def check_apply_rotary(fn, thorough=False, seed=170):
    """``fn(x (..., L, D), positions (L,) or (..., L), base=10000.0) -> (..., L, D)``: RoPE with half-split pairs.

    As ``attn_course.rotary.apply_rotary(x, positions, base)`` (``interleaved=False``, Hugging Face's Llama):
    pair i = (x[..., i], x[..., i + D/2]) is turned by ``positions * base ** (-2i / D)``. The check calls
    ``fn(x, positions)``, or ``fn(x, positions, base)``, never with ``interleaved``. For each case: x's shape
    and dtype kept (kinds ``shape``, ``dtype``); position 0 the identity, lengths kept, ``q_m . k_n`` the same
    at (m, n) and (m + t, n + t) (kind ``values``); the neighbouring pairs (2i, 2i + 1) fail with kind
    ``pairing``; then the values (kind ``values``, naming a known mistake of the angles: the sign, the
    exponent, the order of the frequencies, the index used for the positions). ``thorough`` adds float64,
    positions with gaps, positions (B, 1, L) broadcast over the heads, base 500000 and D = 2.
    """
    g = torch.Generator().manual_seed(seed)
    for label, shape, positions, base, dtype in _rotary_cases(thorough):
        x = random_tensor(g, *shape, dtype=dtype)
        got = _rotate(fn, x, positions, base, label)
        _expect_shape_and_dtype(got, rotary.apply_rotary(x, positions, base), label)
        _expect_identity_and_norms(got, x, positions, base, label)
        calls = _expect_relative(fn, shape, base, dtype, g, label)
        _expect_values(got, x, positions, base, label)
        for case, vec, pos, result in calls:
            _expect_values(result, vec, pos, base, case)
