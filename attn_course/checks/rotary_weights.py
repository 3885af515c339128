"""Check of lesson 17's conversion exercise: projection rows trained with interleaved RoPE, reordered for half-split."""
import torch

from .. import rotary
from .core import CheckFailure, call_learner, expect_tensor, forbids, random_tensor
from .tripwire import package


def _cases(thorough):
    """(label, rows H * D, columns or None for a bias, H, dtype); the first holds 0, 1, 2, ... (one column)."""
    yield "weight (8, 1) = arange, H=2 heads of D=4", 8, 1, 2, torch.float32
    if thorough:
        yield "weight (32, 16), H=4, D=8", 32, 16, 4, torch.float32
        yield "bias (24,), H=3, D=8", 24, None, 3, torch.float32
        yield "float64 weight (16, 12), H=1, D=16", 16, 12, 1, torch.float64
        yield "weight (12, 6), H=6, D=2 (one pair per head)", 12, 6, 6, torch.float32


def _scores(w_q, w_k, x, num_heads, interleaved):
    """(H, L, L) RoPE scores of inputs x (L, E) through projections w_q, w_k (H * D, E)."""
    L = x.shape[0]
    q = (x @ w_q.T).view(L, num_heads, -1).transpose(0, 1)                      # (H, L, D)
    k = (x @ w_k.T).view(L, num_heads, -1).transpose(0, 1)
    positions = torch.arange(L)
    return (rotary.apply_rotary(q, positions, interleaved=interleaved)
            @ rotary.apply_rotary(k, positions, interleaved=interleaved).transpose(-1, -2))


@forbids(*package(rotary.interleaved_to_half_split))
def check_interleaved_to_half_split(fn, thorough=False, seed=170):
    """``fn(weight (H * D, ...), num_heads) -> weight`` with each head's rows (0, 1, 2, 3, ...) reordered to
    (0, 2, 4, ..., 1, 3, 5, ...): what interleaved RoPE rotated together, half-split RoPE then rotates together.

    First the scores: queries and keys projected with the converted weights and rotated with the
    half-split pairing must score exactly as the original weights with the interleaved pairing (kind
    ``pairing`` if not). Then the weights themselves against the reference (kind ``values``), with the
    input left unchanged. ``thorough`` adds several heads, a bias (1-D), float64, D = 2.
    """
    g = torch.Generator().manual_seed(seed)
    for i, (case, rows, cols, H, dtype) in enumerate(_cases(thorough)):
        shape = (rows,) if cols is None else (rows, cols)
        weight = torch.arange(rows, dtype=dtype).view(rows, 1) if i == 0 else random_tensor(g, *shape, dtype=dtype)
        given = weight.clone()
        got = call_learner(fn, (given, H), case)
        expected = rotary.interleaved_to_half_split(weight, H)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            expect_tensor("weight", got, expected, case, "(H * D, ...)")          # raises type / shape / dtype
        if not torch.equal(given, weight):
            raise CheckFailure("values", f"{case}: your function changed the weight it was given; return a new "
                                         f"tensor (reshape, transpose, then clone or reshape into a copy).")
        D = rows // H
        order = list(range(0, D, 2)) + list(range(1, D, 2))
        order_text = f"{order[:8]}{'...' if D > 8 else ''}"
        if cols is not None:
            w_k = random_tensor(g, *shape, dtype=dtype)
            x = random_tensor(g, 5, cols, dtype=dtype)                            # (L=5, E)
            k_got = call_learner(fn, (w_k.clone(), H), case)
            before = _scores(weight, w_k, x, H, interleaved=True)
            after = _scores(got.detach(), k_got.detach(), x, H, interleaved=False)
            gap = (before - after).abs().max().item()
            if gap > 1e-4 * (1 + before.abs().max().item()):
                raise CheckFailure("pairing", (
                    f"{case}: with your converted w_q and w_k, half-split RoPE scores differ from the interleaved "
                    f"scores of the original weights by up to {gap:.3g}. Within each head, the rows rotated "
                    f"together as (2i, 2i+1) must become rows i and i + D/2: within each head of D={D} rows, "
                    f"the new order is {order_text}."))

        def hint(actual, exp, D=D, order_text=order_text):
            return (f"Within each head of D={D} rows, the new row order is {order_text}: "
                    f"weight.view(H, D // 2, 2, ...).transpose(1, 2).reshape(weight.shape).")
        expect_tensor("weight", got, expected, case, "(H * D, ...)", hint=hint)
