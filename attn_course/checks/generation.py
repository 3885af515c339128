"""Checks of the text-generation lesson's exercises: sampling and the causal forward pass.

Each raises ``attn_course.checks.CheckFailure`` with a message that says what was expected, what came
and where to look; ``thorough=True`` is what grading adds.
"""
import torch

from ..apps import generation
from ..apps.generation import CharTransformer, causality_probe
from .core import CheckFailure, call_learner, expect_tensor, forbids
from .remote import type_name
from .tripwire import package


def _expect_ids(name, got, B, case):
    if not isinstance(got, torch.Tensor):
        raise CheckFailure("type", f"{case}: {name} must return a torch.Tensor of ids; got {type_name(got)}"
                                   + (" (did you forget `return`?)" if got is None else ""))
    if tuple(got.shape) != (B,):
        hint = " (squeeze the sample axis: torch.multinomial returns (B, 1))" if tuple(got.shape) == (B, 1) else ""
        raise CheckFailure("shape", f"{case}: {name} should return one id per row, shape (B,) = ({B},); "
                                    f"got {tuple(got.shape)}{hint}")
    if got.dtype != torch.long:
        raise CheckFailure("dtype", f"{case}: {name} should return int64 ids; got {got.dtype}")


def _reference_probs(logits, temperature, top_k):
    scaled = logits.double() / temperature
    if top_k is not None:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.softmax(scaled, dim=-1)


def _sample_cases(thorough):
    cases = [("T=1, top_k=None", 1.0, None, torch.float32), ("T=0.5, top_k=3", 0.5, 3, torch.float32)]
    if thorough:
        cases += [("T=2, top_k=None", 2.0, None, torch.float32), ("T=1.5, top_k=V", 1.5, 8, torch.float32),
                  ("T=0.7, top_k=5, float64", 0.7, 5, torch.float64)]
    return cases


@forbids(*package(generation.sample_next))
def check_sample_next(fn, thorough=False, seed=150):
    """Check ``fn(logits (B, V), temperature, top_k, generator) -> ids (B,)`` against ``sample_next``.

    Checks that are true of every correct sampler, however it is written: ``top_k=1`` gives the argmax;
    no id outside the ``top_k`` largest logits is ever drawn; the same seed gives the same draws; and
    over 20,000 draws from one row the frequencies match ``softmax(logits / T)`` over the top k (within
    4 standard errors + 0.005). ``thorough`` adds more temperatures, ``top_k = V``, float64, huge logits
    and checks that ``logits`` is not modified in place.
    """
    g = torch.Generator().manual_seed(seed)
    V, N = 8, 20000
    row = torch.randn(V, generator=g) * 1.5                                        # (V,) one row of logits
    for case, temperature, top_k, dtype in _sample_cases(thorough):
        logits = row.to(dtype).expand(N, V).clone()                                # (N, V): N draws at once
        before = logits.clone()
        got = call_learner(fn, (logits, temperature, top_k, torch.Generator().manual_seed(seed + 1)), case)
        _expect_ids("sample_next", got, N, case)
        if thorough and not torch.equal(logits, before):
            raise CheckFailure("values", f"{case}: sample_next changed its input logits in place; use "
                                         f"masked_fill (not logits[...] = ...) on a new tensor")
        probs = _reference_probs(row.to(dtype), temperature, top_k)                # (V,)
        if top_k is not None:
            outside = sorted(set(got.tolist()) - set(torch.nonzero(probs > 0).flatten().tolist()))
            if outside:
                raise CheckFailure("values", f"{case}: drew ids {outside}, which are not among the top_k={top_k} "
                                             f"largest logits {torch.topk(row, top_k).indices.tolist()}; "
                                             f"set every other logit to -inf before the softmax")
        again = call_learner(fn, (logits, temperature, top_k, torch.Generator().manual_seed(seed + 1)), case)
        if not torch.equal(got, again):
            raise CheckFailure("values", f"{case}: two calls with generators seeded alike drew different ids; "
                                         f"pass generator=generator to torch.multinomial so that text is reproducible")
        freq = torch.bincount(got, minlength=V).double() / N                       # (V,)
        tol = 4 * (probs * (1 - probs) / N).sqrt() + 0.005
        if ((freq - probs).abs() > tol).any():
            raise CheckFailure("values", f"{case}: over {N} draws from one row of logits the frequencies are "
                                         f"{[round(f, 3) for f in freq.tolist()]}; softmax(logits / T) over the "
                                         f"top k gives {[round(p, 3) for p in probs.tolist()]}. Divide the logits "
                                         f"by the temperature (do not multiply), keep exactly k logits, and take "
                                         f"the softmax over the vocabulary axis (dim=-1)")
    logits = torch.randn(5, V, generator=g) * 3                                    # (B=5, V)
    got = call_learner(fn, (logits, 1.0, 1, torch.Generator().manual_seed(seed + 2)), "top_k=1")
    _expect_ids("sample_next", got, 5, "top_k=1")
    if not torch.equal(got, logits.argmax(-1)):
        raise CheckFailure("values", f"top_k=1: only the largest logit of each row may be drawn, "
                                     f"{logits.argmax(-1).tolist()}; got {got.tolist()}")
    if thorough:
        huge = torch.tensor([[1000.0, 999.0, -1000.0, 0.0]])                       # exp would overflow
        got = call_learner(fn, (huge.expand(4000, 4).clone(), 1.0, None, torch.Generator().manual_seed(seed + 3)),
                    "huge logits")
        _expect_ids("sample_next", got, 4000, "huge logits")
        share = (got == 0).double().mean().item()
        if not 0.68 < share < 0.78:
            raise CheckFailure("finite", f"huge logits [1000, 999, -1000, 0]: id 0 should be drawn with "
                                         f"probability 0.731; got {share:.3f}. exp(1000) overflows: use "
                                         f"torch.softmax, or subtract each row's maximum first")


def _lm_cases(thorough):
    cases = [("B=2, L=7, learned positions", 2, 7, "learned")]
    if thorough:
        cases += [("B=3, L=10 = max_len, sinusoidal positions", 3, 10, "sinusoidal"),
                  ("B=1, L=1", 1, 1, "learned"), ("B=2, L=4, sinusoidal positions", 2, 4, "sinusoidal")]
    return cases


@forbids(("attn_course.apps.generation.CharTransformer", generation.CharTransformer.forward))
def check_lm_forward(fn, thorough=False, seed=151):
    """Check ``fn(model, ids (B, L)) -> logits (B, L, V)``: the forward pass of a ``CharTransformer``.

    First the causality probe: changing the character at position p must leave the logits at
    positions 0..p-1 exactly unchanged; then the logits against ``model(ids)``.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, positional in _lm_cases(thorough):
        torch.manual_seed(seed)
        model = CharTransformer(vocab_size=12, d_model=16, num_heads=2, num_layers=2, max_len=10,
                                positional=positional).eval()
        with torch.no_grad():
            for p in model.parameters():                                           # weights large enough to matter
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        ids = torch.randint(0, 12, (B, L), generator=g)
        with torch.no_grad():
            expected = model(ids)                                                  # (B, L, V)
            got = call_learner(fn, (model, ids), case)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                expect_tensor("logits", got, expected, case, legend="(B, L, V)")   # raises type / shape
            for position in range(1, L):
                probe = causality_probe(lambda x: fn(model, x), ids, position, 12, seed=position)
                if probe["before"] > 1e-5:
                    raise CheckFailure("causality", (
                        f"{case}: changing only the character at position {position} changed the logits at "
                        f"earlier positions by up to {probe['before']:.3g}; a position may only see itself and "
                        f"the characters before it. Look at the diagonal of your mask: a block's attn_mask is True where "
                        f"a position must be ignored, so the causal one is torch.ones(L, L).triu(diagonal=1): row i "
                        f"hides columns i+1..L-1 and allows 0..i"))
            expect_tensor("logits", got, expected, case, legend="(B, L, V)", atol=1e-4)
