"""Checks of lesson 04: hard attention and straight-through Gumbel-softmax."""
import torch
from torch.nn import functional as F

from .. import hard
from .core import (
    CheckFailure,
    call_learner,
    call_learner_grad,
    expect_rows_sum_to_one,
    expect_tensor,
    forbids,
    format_shape,
    random_tensor,
)
from .remote import type_name
from .tripwire import package


def _hard_cases(thorough):
    """(label, batch dims, S, Dv, dtype, masked) for the hard-attention checks."""
    yield "B=4, S=6, Dv=3", (4,), 6, 3, torch.float32, False
    if thorough:
        yield "batched (2, 3), S=9, Dv=5", (2, 3), 9, 5, torch.float32, False
        yield "float64, B=3, S=5, Dv=4", (3,), 5, 4, torch.float64, False
        yield "scores with -inf (positions that may not be picked), B=5, S=7", (5,), 7, 2, torch.float32, True


def _hard_inputs(g, batch, S, Dv, dtype, masked):
    attn_scores = random_tensor(g, *batch, S, scale=2.0, dtype=dtype)                  # (..., S)
    if masked:
        attn_scores[..., 1::2] = float("-inf")                                   # odd positions forbidden
    return attn_scores, random_tensor(g, *batch, S, Dv, dtype=dtype)                   # (..., S, Dv)


def _expect_selection(case, got, attn_scores, value, ref_index=None):
    """``got = (context, index, attn_weights)``: index int64 (...,), one-hot weights, picked value."""
    if not (isinstance(got, tuple) and len(got) == 3):
        length = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        raise CheckFailure("type", f"{case}: return a tuple (context, index, attn_weights); got "
                                   f"{type_name(got)}{length}")
    context, index, attn_weights = got
    S = attn_scores.shape[-1]
    if ref_index is not None:
        expect_tensor("index", index, ref_index, case, "(...,) int64", hint=lambda a, e: (
            "You picked the smallest score: hard attention takes the argmax." if torch.equal(a, attn_scores.argmin(-1))
            else "index = attn_scores.argmax(dim=-1): the highest score of each row, over the last axis."))
    elif not isinstance(index, torch.Tensor) or index.shape != attn_scores.shape[:-1] or index.dtype != torch.int64:
        raise CheckFailure("type", f"{case}: index must be an int64 tensor of shape (...,) = "
                                   f"{format_shape(attn_scores.shape[:-1])}; got " + (
                                       f"{index.dtype} {format_shape(index.shape)}" if isinstance(index, torch.Tensor)
                                       else type_name(index)))
    idx = index.detach().cpu()
    if ((idx < 0) | (idx >= S)).any():
        raise CheckFailure("values", f"{case}: index must lie in [0, S={S}); got values {idx.unique().tolist()}")
    if torch.isneginf(attn_scores.gather(-1, idx.unsqueeze(-1))).any():
        raise CheckFailure("values", f"{case}: you picked a position whose score is -inf; such a position "
                                     f"may never be picked (its softmax weight is 0).")
    one_hot = F.one_hot(idx, S).to(attn_scores.dtype)                           # (..., S)
    expect_tensor("attn_weights", attn_weights, one_hot, case, "(..., S)", hint=lambda a, e: (
        "These are the soft weights softmax(attn_scores); hard attention's weights are one-hot."
        if torch.allclose(a, torch.softmax(attn_scores, -1), atol=1e-5) else
        "attn_weights must be one-hot: 1.0 at the picked position, 0.0 elsewhere (F.one_hot(index, S))."))
    expect_tensor("context", context, (one_hot.unsqueeze(-2) @ value).squeeze(-2), case, "(..., Dv)",
                  hint=lambda a, e: "context is the value at the picked position: value[..., index, :].")
    return context, idx


def _check_argmax_mode(fn, extra_args, thorough, g):
    for case, batch, S, Dv, dtype, masked in _hard_cases(thorough):
        attn_scores, value = _hard_inputs(g, batch, S, Dv, dtype, masked)
        got = call_learner(fn, (attn_scores.clone(), value.clone(), *extra_args), case)
        _expect_selection(case, got, attn_scores, value, ref_index=hard.hard_attention(attn_scores, value)[1])
    if thorough:                                                                # the picked row gets the gradient
        case = "gradient to value, B=3, S=4"
        attn_scores, value = _hard_inputs(g, (3,), 4, 2, torch.float32, False)
        _, (grad,) = call_learner_grad(fn, (attn_scores.clone(), value, *extra_args), case, wrt=(1,), pick=(0,))
        if grad is None:
            raise CheckFailure("gradient", f"{case}: context must stay differentiable in value (the picked "
                                           f"value gets the gradient): no .detach(), no torch.no_grad().")
        expected = F.one_hot(attn_scores.argmax(-1), 4).to(value.dtype).unsqueeze(-1).expand_as(value)
        if not torch.allclose(grad, expected):
            raise CheckFailure("gradient", f"{case}: d context / d value should be 1 at the picked position "
                                           f"and 0 elsewhere; got {grad[..., 0].tolist()}.")


@forbids(*package(hard.hard_attention))
def check_hard_attention_argmax(fn, thorough=False, seed=40):
    """``fn(attn_scores (..., S), value (..., S, Dv)) -> (context (..., Dv), index (...,), attn_weights (..., S))``."""
    _check_argmax_mode(fn, (), thorough, torch.Generator().manual_seed(seed))


_PICK_SCORES = torch.tensor([1.0, -0.5, 0.0, 2.0, 0.5], dtype=torch.float64)  # softmax 0.05 .. 0.55: not uniform


def _frequency_hint(freq, probs):
    S = len(probs)
    if (freq - 1 / S).abs().max() < 0.03:
        return (f"Your picks are spread evenly over the {S} positions, whatever the scores; position j must "
                f"come with probability softmax(attn_scores)_j.")
    if freq[probs.argmax()] > 0.99:
        return "You always pick the highest score (that is argmax, not a draw): sample from softmax(attn_scores)."
    return "Position j must come with probability softmax(attn_scores)_j."


def _expect_frequencies(case, freq, probs, tol, what):
    if (freq - probs).abs().max() > tol:
        raise CheckFailure("values", f"{case}: {what} differ from softmax(attn_scores) by up to "
                                     f"{(freq - probs).abs().max().item():.3f} (tolerance {tol}): got "
                                     f"{[round(f, 3) for f in freq.tolist()]}, expected "
                                     f"{[round(p, 3) for p in probs.tolist()]}. {_frequency_hint(freq, probs)}")


@forbids(*package(hard.hard_attention))
def check_hard_attention(fn, thorough=False, seed=41):
    """``fn(attn_scores, value, mode, generator) -> (context, index, attn_weights)``, modes argmax and sample."""
    g = torch.Generator().manual_seed(seed)
    _check_argmax_mode(fn, ("argmax", None), thorough, g)
    for n in (4000, 20000) if thorough else (4000,):                          # the picks follow the weights
        case = f"mode='sample', one row of scores drawn {n} times"
        attn_scores = _PICK_SCORES.to(torch.float32).expand(n, -1).clone()      # (n, S)
        value = torch.arange(5.0).expand(n, -1).unsqueeze(-1).clone()           # (n, S, 1)
        got = call_learner(fn, (attn_scores, value, "sample", torch.Generator().manual_seed(seed + n)), case)
        _, index = _expect_selection(case, got, attn_scores, value)
        freq = torch.bincount(index, minlength=5).double() / n
        _expect_frequencies(case, freq, torch.softmax(_PICK_SCORES, -1), 0.03 if n == 4000 else 0.015,
                            "the pick frequencies")
    cases = [("", (4,), 6, 3, torch.float32, False)] + (list(_hard_cases(True))[1:] if thorough else [])
    for _, batch, S, Dv, dtype, masked in cases:                               # reproducible with a seed
        attn_scores, value = _hard_inputs(g, (64,) + batch[1:], S, Dv, dtype, masked)   # 64 rows: picks differ
        case = (f"mode='sample', attn_scores {format_shape(attn_scores.shape)} {str(dtype)[6:]}"
                + (" with -inf" if masked else ""))
        picks = [_expect_selection(case, call_learner(fn, (attn_scores.clone(), value.clone(), "sample",
                                                    torch.Generator().manual_seed(s)), case),
                                   attn_scores, value)[1] for s in (seed, seed, seed + 1)]
        if not torch.equal(picks[0], picks[1]):
            raise CheckFailure("values", f"{case}: two calls with generators seeded alike picked different "
                                         f"positions: draw with the generator you are given (generator=generator).")
        if torch.equal(picks[0], picks[2]):
            raise CheckFailure("values", f"{case}: generators with different seeds picked the same 64 positions: "
                                         f"do your draws use the generator?")


def _expect_like(name, actual, like, case, legend):
    """Type, shape, dtype and finiteness of ``actual`` as those of ``like`` (values are checked elsewhere)."""
    if isinstance(actual, torch.Tensor) and actual.shape == like.shape and actual.dtype == like.dtype:
        like = actual.detach()
    expect_tensor(name, actual, like, case, legend)


def _sample_and_grad(fn, logits, tau, hard_, seed, c, case):
    """One call ``fn(logits, tau, hard_, generator)``; returns y and d sum(y * c) / d logits (None if none)."""
    y, (grad,) = call_learner_grad(fn, (logits, tau, hard_, torch.Generator().manual_seed(seed)), case,
                                   wrt=(0,), weight=c)
    _expect_like("y (hard=True)" if hard_ else "y_soft (hard=False)", y, logits, case, "(..., S)")
    return y.detach(), grad


def _one_hot_hint(actual, expected):
    if ((actual.abs() < 1e-6) | ((actual - 1).abs() < 1e-6)).all() and torch.allclose(actual.sum(-1), expected.sum(-1)):
        return ("The 1.0 should sit at the argmax of the soft sample drawn with the same seed: draw the noise "
                "with the generator, the same way for hard=True and hard=False.")
    return "hard=True must return one-hot rows (1.0 at the argmax of the soft sample, 0.0 elsewhere)."


@forbids(*package(hard.gumbel_softmax_st), ("torch.nn.functional.gumbel_softmax", F.gumbel_softmax))
def check_gumbel_softmax_st(fn, thorough=False, seed=42):
    """``fn(logits (..., S), tau, hard, generator) -> y (..., S)``: Gumbel-softmax, straight-through when hard."""
    g = torch.Generator().manual_seed(seed)
    cases = [("B=6, S=5, tau=0.5", (6,), 5, 0.5, torch.float32, 1.0)]
    if thorough:
        cases += [("batched (2, 3), S=8, tau=1.0", (2, 3), 8, 1.0, torch.float32, 1.0),
                  ("float64, B=5, S=4, tau=2.0", (5,), 4, 2.0, torch.float64, 1.0),
                  ("large logits (x30), B=4, S=6, tau=0.3", (4,), 6, 0.3, torch.float32, 30.0)]
    for i, (case, batch, S, tau, dtype, scale) in enumerate(cases):
        logits = random_tensor(g, *batch, S, scale=scale, dtype=dtype)                # (..., S)
        c = random_tensor(g, *batch, S, dtype=dtype)                                  # loss = sum(y * c)
        y_soft, grad_soft = _sample_and_grad(fn, logits, tau, False, seed + i, c, f"{case}, hard=False")
        expect_rows_sum_to_one("y_soft (hard=False)", y_soft, case)
        if grad_soft is None:
            raise CheckFailure("gradient", f"{case}: y_soft (hard=False) must be differentiable in the logits; "
                                           f"it has no gradient (a .detach() or torch.no_grad() too many?).")
        y, grad = _sample_and_grad(fn, logits, tau, True, seed + i, c, f"{case}, hard=True")
        expect_tensor("y (hard=True)", y, F.one_hot(y_soft.argmax(-1), S).to(dtype), case, "(..., S)",
                      atol=1e-6, rtol=0, hint=_one_hot_hint)
        if not torch.equal(y, _sample_and_grad(fn, logits, tau, True, seed + i, c, case)[0]):
            raise CheckFailure("values", f"{case}: two calls with generators seeded alike gave different samples: "
                                         f"draw the noise with the generator you are given (generator=generator).")
        if grad is None or (scale == 1.0 and not grad.abs().max() > 0):
            raise CheckFailure("gradient", f"{case}: y (hard=True) passes no gradient to the logits. The "
                                           f"straight-through trick returns y_hard - y_soft.detach() + y_soft: "
                                           f"the value of y_hard, the gradient of y_soft.")
        if not torch.allclose(grad, grad_soft, atol=1e-5, rtol=1e-4):
            raise CheckFailure("gradient", f"{case}: the gradient of y (hard=True) differs from that of the soft "
                                           f"sample by up to {(grad - grad_soft).abs().max().item():.3g}; they should "
                                           f"be equal. Which term carries .detach() in y_hard - y_soft.detach() + y_soft?")
    case = "tau=0.5 and tau=2.0 with the same seed, float64"                   # softmax((logits + g) / tau)
    logits = random_tensor(g, 8, 5, dtype=torch.float64)
    noise = [tau * torch.log(call_learner(fn, (logits, tau, False, torch.Generator().manual_seed(seed)), case).detach())
             - logits for tau in (0.5, 2.0)]                                   # g + a constant per row
    if not torch.allclose(*[n - n.mean(-1, keepdim=True) for n in noise], atol=1e-6):
        raise CheckFailure("values", f"{case}: y_soft must be softmax((logits + g) / tau): divide the noisy "
                                     f"logits, logits and noise together, by tau.")
    probs = torch.softmax(_PICK_SCORES, -1)
    for n in (4000, 20000) if thorough else (4000,):                           # argmax(logits + g) ~ softmax(logits)
        case = f"hard=True, one row of logits drawn {n} times, tau=0.5"
        logits = _PICK_SCORES.to(torch.float32).expand(n, -1).clone()          # (n, S)
        y = call_learner(fn, (logits, 0.5, True, torch.Generator().manual_seed(seed + n)), case).detach()
        freq = y.double().sum(0) / n
        if (freq - probs).abs().max() > (0.03 if n == 4000 else 0.015):
            hint = ("Your picks hardly vary: add Gumbel noise to the logits before the argmax." if freq.max() > 0.99
                    else "Is the noise Gumbel? g = -log(-log(U)), U ~ Uniform(0, 1), or -log of an Exponential(1) draw.")
            raise CheckFailure("values", f"{case}: the one-hot picks should come with probability softmax(logits); "
                                         f"got frequencies {[round(f, 3) for f in freq.tolist()]}, expected "
                                         f"{[round(p, 3) for p in probs.tolist()]}. {hint}")
