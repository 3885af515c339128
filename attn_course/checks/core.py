"""The machinery every check shares: CheckFailure, calling the learner's function, comparing tensors."""
import contextvars
import functools
import math

import torch

from . import remote
from .remote import type_name

KINDS = ("type", "shape", "dtype", "finite", "normalisation", "scale", "mask", "causality", "values", "error",
         "gradient", "reference", "pairing")


class CheckFailure(AssertionError):
    """A failed check. ``kind`` is one of ``KINDS``; ``str(err)`` is the message for the learner."""

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


def format_shape(shape):
    """``(2, 3)`` for a ``torch.Size`` or any sequence of ints: how messages print shapes."""
    return str(tuple(shape))


_forbidden = contextvars.ContextVar("forbidden", default=())


def forbids(*rules):
    """Declare what a check's exercise asks the learner to write (a decorator for ``check_*``).

    ``rules`` are ``(label, callable)`` pairs (``tripwire.package(...)``, ``tripwire.SOFTMAX``, ...).
    While the decorated check runs, ``call_learner`` watches the learner's function for a call of
    any of them; when the tripwire is armed (the default, in notebooks and in grading), such a call
    fails the check with kind ``reference``. The rules stay readable as ``check.forbidden``.
    """
    rules = tuple(rules)

    def decorate(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            token = _forbidden.set(rules)
            try:
                return check(*args, **kwargs)
            finally:
                _forbidden.reset(token)

        run.forbidden = rules
        return run

    return decorate


def _refuse_reference(hit, fn, case):
    if hit:
        raise CheckFailure("reference", f"{case}: {getattr(fn, '__name__', 'your function')} calls "
                                        f"{hit}, which is what this exercise asks you to write "
                                        f"yourself; a call to it fails this check here and scores no points "
                                        f"when graded.") from None


def _call(fn, args, case, wrt=(), pick=(), weight=None):
    name = getattr(fn, "__name__", "your function")
    try:
        if isinstance(fn, remote.Remote):                    # graded: the function lives in the notebook's process
            answer = fn.call(args, rules=_forbidden.get(), wrt=wrt, pick=pick, weight=weight)
        else:
            answer = remote.call_traced(fn, args, rules=_forbidden.get(), wrt=wrt, pick=pick, weight=weight)
    except remote.Unanswered as exc:
        raise CheckFailure("error", f"{case}: {name} gave no answer: {exc}") from None
    except NotImplementedError as exc:
        _refuse_reference(getattr(exc, "hit", None), fn, case)
        raise CheckFailure("error", f"{case}: {name} is not implemented yet ({exc})") from None
    except Exception as exc:
        _refuse_reference(getattr(exc, "hit", None), fn, case)
        shapes = ", ".join(format_shape(a.shape) if isinstance(a, torch.Tensor) else repr(a) for a in args)
        raise CheckFailure("error", f"{case}: {name}({shapes}) raised "
                                    f"{getattr(exc, 'type_name', type(exc).__name__)}: {exc}") from None
    _refuse_reference(answer["hit"], fn, case)
    return answer


def call_learner(fn, args, case):
    """``fn(*args)``, with any exception turned into a ``CheckFailure`` of kind ``error`` naming ``case``.

    ``fn`` is the learner's function, or a ``remote.Remote`` handle to it when the classroom grader
    runs the check outside the notebook's process (the result then comes back as plain data).
    Inside a check declared with ``@forbids``, and when the tripwire is armed (the default),
    a call of a forbidden function fails with kind ``reference`` instead.
    """
    return _call(fn, args, case)["result"]


def call_learner_grad(fn, args, case, wrt, pick=(), weight=None):
    """``(fn(*args), grads)``: the call of ``call_learner`` and the gradients of ``sum(y * weight)``.

    ``y`` is the result, or ``result[i][j]...`` for ``pick = (i, j, ...)``; ``weight`` (a tensor that
    broadcasts with ``y``, or None for 1) makes the loss a generic linear function of ``y``. ``wrt``
    lists what to differentiate with respect to: argument positions (that argument is passed as a
    fresh leaf tensor with ``requires_grad``) or attribute names of ``fn`` (its parameters, when ``fn``
    is a module). ``grads`` holds one tensor per ``wrt`` entry, None where ``y`` is not differentiable
    in it (``.detach()``, ``torch.no_grad()``, an unused input). Computed where ``fn`` lives, so it
    serves both the notebook's self-check and the classroom grader.
    """
    answer = _call(fn, args, case, tuple(wrt), tuple(pick), weight)
    return answer["result"], answer["grads"]


def rescaling(actual, expected, of="scores"):
    """The factor c with ``actual == c * expected`` (``of="scores"``), or with ``actual`` equal to a
    softmax of c times the logits behind ``expected`` (``of="weights"``); None when there is none or c is 1.

    For weights, ``log actual = c * log expected + (a constant per row)`` on the keys with weight.
    """
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape or a.numel() < 2:
        return None
    if of == "scores":
        c = ((a * e).sum() / (e * e).sum()).item() if (e * e).sum() > 0 else float("nan")
        fits = math.isfinite(c) and torch.allclose(a, c * e, atol=1e-5, rtol=1e-3)
    else:
        if (a <= 0).any() or (e <= 0).any() or a.shape[-1] < 2:
            return None
        la, le = a.log(), e.log()
        la, le = la - la.mean(-1, keepdim=True), le - le.mean(-1, keepdim=True)  # drop the row constants
        c = ((la * le).sum() / (le * le).sum()).item() if (le * le).sum() > 1e-12 else float("nan")
        fits = math.isfinite(c) and torch.allclose(la, c * le, atol=1e-4, rtol=1e-3)
    return c if fits and abs(c - 1) > 1e-3 else None


def expect_tensor(name, actual, expected, case="", legend="", atol=1e-5, rtol=1e-4, hint=None, rescaled=None):
    """Compare one returned tensor with the reference: type, shape, dtype, finiteness, values.

    Args:
        name: the variable's name in the message (``attn_weights``).
        legend: the expected shape in symbols, e.g. ``"(B, L, S)"``.
        hint: a callable ``hint(actual, expected) -> str`` for a values mismatch, or None.
        rescaled: ``"scores"`` or ``"weights"`` to report a mismatch that is only a constant factor
            (see ``rescaling``) as kind ``scale``; None to report every mismatch as ``values``.
    """
    where = f"{case}: " if case else ""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailure("type", f"{where}{name} must be a torch.Tensor; got {type_name(actual)}"
                                   + (" (did you forget `return`?)" if actual is None else ""))
    if actual.shape != expected.shape:
        raise CheckFailure("shape", f"{where}{name} should have shape {legend + ' = ' if legend else ''}"
                                    f"{format_shape(expected.shape)}; got {format_shape(actual.shape)}")
    if actual.dtype != expected.dtype:
        raise CheckFailure("dtype", f"{where}{name} should have dtype {expected.dtype}; got {actual.dtype}")
    if actual.is_floating_point() and not torch.isfinite(actual).all():
        raise CheckFailure("finite", f"{where}{name} contains NaN or inf; the reference is finite. "
                                     f"Large scores overflow exp(): does softmax subtract the max?")
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if not a.is_floating_point():
        if not torch.equal(a, e):
            wrong = (a != e).nonzero()[0].tolist()
            extra = hint(a, e) if hint else ""
            raise CheckFailure("values", f"{where}{name} differs from the reference at index {wrong}: "
                                         f"got {a[tuple(wrong)].item()}, expected {e[tuple(wrong)].item()}."
                                         + (f" {extra}" if extra else ""))
    elif not torch.allclose(a, e, atol=atol, rtol=rtol):
        err = (a - e).abs().max().item()
        extra = hint(a, e) if hint else ""
        c = rescaling(a, e, rescaled) if rescaled else None
        if c is not None:
            what = (f"{c:.4g} times the reference" if rescaled == "scores" else
                    f"a softmax of the reference's scores multiplied by {c:.4g} "
                    f"({'sharper' if c > 1 else 'flatter'}: a temperature or a scale is off)")
            raise CheckFailure("scale", f"{where}{name} is {what}; it differs by up to {err:.3g}."
                                        + (f" {extra}" if extra else ""))
        raise CheckFailure("values", f"{where}{name} differs from the reference by up to {err:.3g} "
                                     f"(tolerance {atol:g})." + (f" {extra}" if extra else ""))


def expect_rows_sum_to_one(name, attn_weights, case="", atol=1e-4):
    """Each row of ``attn_weights`` (..., L, S) must sum to 1 over the key axis (dim=-1)."""
    where = f"{case}: " if case else ""
    sums = attn_weights.detach().sum(-1)
    if not torch.isfinite(sums).all():
        raise CheckFailure("finite", f"{where}{name} contains NaN or inf; the reference is finite. "
                                     f"Large scores overflow exp(): does softmax subtract the max?")
    bad = ~((sums - 1).abs() <= atol)  # NaN rows count as bad
    if bad.any():
        row = tuple(int(i) for i in bad.nonzero()[0])
        msg = (f"{where}{name} rows must sum to 1 over the key axis (dim=-1); row {row} sums to "
               f"{sums[row].item():.4f}.")
        if attn_weights.shape[-2] > 1 and ((attn_weights.detach().sum(-2) - 1).abs() <= atol).all():
            msg += " The columns sum to 1 instead: did you apply softmax over the query axis (dim=-2)?"
        raise CheckFailure("normalisation", msg)


def random_tensor(g, *shape, scale=1.0, dtype=torch.float32):
    """A standard normal tensor drawn in float64 from generator ``g``, times ``scale``, cast to ``dtype``.

    Drawing in float64 then casting gives the same numbers in float32 and float64 for one seed."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def attention_cases(thorough, seed):
    """(label, batch dims, L, S, D, Dv, score scale, dtype) for the attention checks."""
    yield "one sentence: L=3, S=4, D=8", (), 3, 4, 8, 5, 1.0, torch.float32
    if thorough:
        yield "batched (2, 3): L=5, S=7, D=16", (2, 3), 5, 7, 16, 4, 1.0, torch.float32
        yield "float64, L=S=6, D=32", (2,), 6, 6, 32, 32, 1.0, torch.float64
        yield "large scores (x100), L=4, S=9", (2,), 4, 9, 8, 3, 100.0, torch.float32


def scale_hint(actual, expected):
    """A values hint for scores: names the factor sqrt(d) when ``actual`` is ``expected`` times it (or over it)."""
    ratio = (actual.abs().mean() / expected.abs().mean()).item()
    for d in range(2, 257):
        if abs(ratio - math.sqrt(d)) < 1e-3 * math.sqrt(d):
            return (f"Yours are sqrt({d}) = {ratio:.2f} times too large: did you forget to divide by "
                    f"sqrt(d_k)?")
        if abs(ratio - 1 / math.sqrt(d)) < 1e-3 / math.sqrt(d):
            return f"Yours are {1 / ratio:.2f} = sqrt({d}) times too small: divide by sqrt(d_k) once, by d_k never."
    return "Compare your formula with query @ key.transpose(-2, -1) / sqrt(d_k)."


