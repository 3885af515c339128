"""Checks of lesson 16: the key/value head expansion of grouped-query attention."""
import torch

from .. import gqa
from .core import CheckFailure, call_learner, expect_tensor, forbids, format_shape, random_tensor
from .tripwire import package


def _repeat_cases(thorough):
    """(label, B, Hkv, r, S, D, dtype); the first case holds 0, 1, 2, ... (torch.arange) instead of random numbers."""
    yield "B=1, Hkv=2 key/value heads, n_rep r=2, S=3, D=4, x = torch.arange", 1, 2, 2, 3, 4, torch.float32
    if thorough:
        yield "batched: B=2, Hkv=3, r=4, S=5, D=8", 2, 3, 4, 5, 8, torch.float32
        yield "float64: B=2, Hkv=4, r=2, S=6, D=16", 2, 4, 2, 6, 16, torch.float64
        yield "multi-query: B=2, Hkv=1, r=6, S=4, D=8", 2, 1, 6, 4, 8, torch.float32
        yield "multi-head, r=1: B=2, Hkv=3, S=4, D=8", 2, 3, 1, 4, 8, torch.float32
        yield "one position: B=3, Hkv=2, r=3, S=1, D=2", 3, 2, 3, 1, 2, torch.float32


def _heads_read(out, x):
    """For each head h of ``out`` (B, H, S, D), the head g of ``x`` (B, Hkv, S, D) with ``out[:, h] == x[:, g]``, or None."""
    return [next((g for g in range(x.shape[1]) if torch.equal(out[:, h], x[:, g])), None) for h in range(out.shape[1])]


@forbids(*package(gqa.repeat_kv))
def check_repeat_kv(fn, thorough=False, seed=160):
    """``fn(x (B, Hkv, S, D), n_rep) -> (B, Hkv * n_rep, S, D)`` with ``out[:, h] == x[:, h // n_rep]``.

    Key/value head g must serve the query heads ``g*r .. g*r + r - 1`` (r = ``n_rep``), the order of
    ``repeat_interleave`` and of PyTorch's ``enable_gqa``. Any correct way of writing it passes (a loop, an
    index, ``expand`` then ``reshape``); a query head that reads the wrong key/value head fails with kind
    ``values`` and a message naming the head. ``thorough`` adds batches, float64, multi-query (Hkv = 1),
    r = 1 and S = 1.
    """
    g = torch.Generator().manual_seed(seed)
    for i, (case, B, Hkv, r, S, D, dtype) in enumerate(_repeat_cases(thorough)):
        x = (torch.arange(B * Hkv * S * D, dtype=dtype).view(B, Hkv, S, D) if i == 0
             else random_tensor(g, B, Hkv, S, D, dtype=dtype))
        got = call_learner(fn, (x.clone(), r), case)
        expected = gqa.repeat_kv(x, r)                                              # (B, Hkv*r, S, D)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape and got.numel() == expected.numel():
            raise CheckFailure("shape", f"{case}: out should have shape (B, Hkv * n_rep, S, D) = "
                                        f"{format_shape(expected.shape)}; got {format_shape(got.shape)}. Repeat "
                                        f"along the head axis (dim=1), not the batch or the positions.")
        if not (isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype):
            expect_tensor("out", got, expected, case, "(B, Hkv * n_rep, S, D)")   # raises type / shape / dtype
        read, wanted = _heads_read(got.detach().cpu(), x), [h // r for h in range(Hkv * r)]
        wrong = [h for h in range(Hkv * r) if read[h] is not None and read[h] != wanted[h]]
        if wrong:
            h = wrong[0]
            tiled = torch.equal(got.detach().cpu(), x.repeat(1, r, 1, 1))
            raise CheckFailure("values", (
                f"{case}: query head {h} should read key/value head {wanted[h]} (query heads g*r .. g*r+{r - 1} "
                f"share head g); it read head {read[h]}. Your {Hkv * r} query heads read key/value heads {read}; "
                f"expected {wanted}." + (" Did you use repeat instead of repeat_interleave? x.repeat(1, r, 1, 1) "
                                         "tiles the heads (0, 1, 0, 1); x.repeat_interleave(r, dim=1) keeps the "
                                         "copies of each head together (0, 0, 1, 1)." if tiled else "")))

        def hint(actual, expected, read=read):
            h = next((h for h, source in enumerate(read) if source is None), None)
            where = f"query head {h} equals no head of x. " if h is not None else ""
            return f"{where}out[:, h] must equal x[:, h // n_rep], a copy of the key/value head, unchanged."
        expect_tensor("out", got, expected, case, "(B, Hkv * n_rep, S, D)", atol=0, rtol=0, hint=hint)
