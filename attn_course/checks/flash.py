"""Checks of lesson 16: FlashAttention's inner loop, one key block of the online softmax."""
# ruff: noqa: E741 -- `l` is the running sum, the papers' ell (Milakov & Gimelshein 2018; Dao et al. 2022)
import math

import torch

from .. import attention, flash
from .core import CheckFailure, call_learner, expect_tensor, forbids, format_shape, random_tensor
from .remote import type_name
from .tripwire import package

_TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-9)}


def _update_cases(thorough):
    """(label, batch dims, L, keys per block, Dv, score scale, dtype, a block masked for every row)."""
    yield "L=3 queries, 3 key blocks of 2, 3 and 2 keys, Dv=4", (), 3, (2, 3, 2), 4, 1.0, torch.float32, None
    if thorough:
        yield "float64, batch (2, 3), L=4, 4 key blocks of 3, 1, 4 and 2 keys, block 2 all -inf", (2, 3), 4, \
            (3, 1, 4, 2), 5, 1.0, torch.float64, 2
        yield "large scores (x100), batch (2,), L=4, 3 key blocks of 4 keys", (2,), 4, (4, 4, 4), 3, 100.0, \
            torch.float32, None


def _blocks(g, batch, L, sizes, Dv, scale, dtype, dead_block):
    """[(attn_scores (..., L, Sb), value (..., Sb, Dv))], with a running max that grows from block to block.

    Row 1 sees no key in block 0 (its running max stays -inf), row 0 sees none in the last block; in
    ``dead_block`` no row sees a key; with L >= 4 the last row never sees one (its output is zeros).
    """
    blocks = []
    for j, Sb in enumerate(sizes):
        attn_scores = random_tensor(g, *batch, L, Sb, scale=scale, dtype=dtype) + 3.0 * scale * j   # (..., L, Sb)
        if j == 0:
            attn_scores[..., 1, :] = float("-inf")
        if j == len(sizes) - 1:
            attn_scores[..., 0, :] = float("-inf")
        if j == dead_block:
            attn_scores[...] = float("-inf")
        if L >= 4:
            attn_scores[..., -1, :] = float("-inf")
        blocks.append((attn_scores, random_tensor(g, *batch, Sb, Dv, dtype=dtype)))                  # (..., Sb, Dv)
    return blocks


def _row(index):
    return list(index) if len(index) > 1 else index[0]


def _expect_state(got, ref, old, block, case):
    """The learner's (m, l, acc) after one block against the reference's; ``old`` is the state it started from."""
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        length = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        raise CheckFailure("type", f"{case}: return the new state as a tuple (m, l, acc); got {type_name(got)}{length}"
                                   + (" (did you forget `return`?)" if got is None else ""))
    attn_scores, value = block
    for name, g, r, legend in zip(("m", "l", "acc"), got, ref, ("(..., L, 1)", "(..., L, 1)", "(..., L, Dv)")):
        if isinstance(g, torch.Tensor) and name != "acc" and g.shape == r.shape[:-1]:
            raise CheckFailure("shape", f"{case}: {name} should have shape {legend} = {format_shape(r.shape)}; got "
                                        f"{format_shape(g.shape)}. Keep the reduced axis: amax(dim=-1, keepdim=True), "
                                        f"sum(dim=-1, keepdim=True), so that {name} broadcasts against (..., L, Sb).")
        if isinstance(g, torch.Tensor) and g.shape == r.shape and torch.isnan(g).any():
            empty = torch.isneginf(ref[0]).expand(r.shape)                                   # no key allowed so far
            hint = ("It is NaN only in rows whose scores so far are all -inf: there m_new = -inf and "
                    "exp(-inf - (-inf)) = exp(nan). Where m_new is -inf, subtract 0 instead (a safe max: "
                    "m_new.masked_fill(m_new == float('-inf'), 0.0)); such a row keeps l = 0 and acc = 0."
                    if not torch.isnan(g.masked_fill(empty, 0.0)).any() else
                    "Large scores overflow exp(): subtract the running max m_new before exp.")
            raise CheckFailure("finite", f"{case}: {name} contains NaN. {hint}")
    m, l, acc = got
    ref_m, ref_l, ref_acc = ref
    atol, rtol = _TOL[ref_acc.dtype]
    if isinstance(m, torch.Tensor) and m.shape == ref_m.shape:
        empty = torch.isneginf(ref_m)                      # no key so far: -inf or any finite stand-in will do
        m, ref_m = m.masked_fill(empty, 0.0), ref_m.masked_fill(empty, 0.0)
    expect_tensor("m", m, ref_m, case, "(..., L, 1)", atol=atol, rtol=rtol, hint=lambda a, e: (
        "m_new is the running max: torch.maximum(m, attn_scores.amax(dim=-1, keepdim=True)), the old max "
        "included."))
    m_old, l_old, acc_old = old
    m_new = ref[0]
    rose = (m_new > m_old) & (l_old > 0)                                                  # (..., L, 1)

    def rescale_hint(name, old_value, add, got_value, expected):
        unscaled = old_value + add                                                        # the old sum, not rescaled
        if rose.any() and torch.allclose(got_value.detach().double(), unscaled.double(), atol=atol, rtol=rtol):
            err = ((got_value.detach().double() - expected.double()).abs().amax(-1, keepdim=True) * rose)
            i = tuple(int(k) for k in (err == err.max()).nonzero()[0][:-1])
            a, b = m_old[i].item(), m_new[i].item()
            shown = [round(x, 4) for x in got_value[i].detach().double().flatten()[:3].tolist()]
            want = [round(x, 4) for x in expected[i].double().flatten()[:3].tolist()]
            return (f"In row {_row(i)} the running max rose from {a:.4g} to {b:.4g}, so the old {name} must be "
                    f"multiplied by exp({a:.4g} - {b:.4g}) = {math.exp(a - b):.3g} before "
                    f"this block's {'rowsum(p)' if name == 'l' else 'p @ value'} is added: your {name}[{_row(i)}] "
                    f"is {shown}, expected {want}; it equals the old {name} plus this block's part, not rescaled.")
        return None

    p = torch.exp(attn_scores - torch.where(torch.isneginf(m_new), 0.0, m_new))          # (..., L, Sb)
    expect_tensor("l", l, ref_l, case, "(..., L, 1)", atol=atol, rtol=rtol, hint=lambda a, e: rescale_hint(
        "l", l_old, p.sum(-1, keepdim=True), a, e) or "l_new = exp(m - m_new) * l + p.sum(dim=-1, keepdim=True), "
                                                      "with p = exp(attn_scores - m_new).")

    def acc_hint(a, e):
        found = rescale_hint("acc", acc_old, p @ value, a, e)
        if found:
            return found
        if torch.allclose(a.double(), flash.online_softmax_finish(ref_l, e).double(), atol=atol, rtol=rtol):
            return ("Your acc is divided by l already: keep it unnormalised (a running sum of "
                    "exp(score - m) * value) and divide by l once, after the last block.")
        return "acc_new = exp(m - m_new) * acc + p @ value, with p = exp(attn_scores - m_new) (..., L, Sb)."
    expect_tensor("acc", acc, ref_acc, case, "(..., L, Dv)", atol=atol, rtol=rtol, hint=acc_hint)


@forbids(*package(flash.online_softmax_update))
def check_online_softmax_update(fn, thorough=False, seed=160):
    """``fn(m (..., L, 1), l (..., L, 1), acc (..., L, Dv), attn_scores (..., L, Sb), value (..., Sb, Dv))
    -> (m_new, l_new, acc_new)``: one key block of FlashAttention's loop, as ``flash.online_softmax_update``.

    Feeds a sequence of key blocks whose running max grows (so a missing rescale shows), with rows and
    a block that see no key (-inf); after each block the learner's state, computed from the reference's
    state before it, must equal the reference's. Then the learner's own chain from
    ``online_softmax_init`` must end with ``acc / l`` equal to softmax attention over all the blocks.
    In rows with no allowed key yet, ``m`` may be -inf or any finite stand-in; ``l`` and ``acc`` must be 0.
    """
    g = torch.Generator().manual_seed(seed)
    for label, batch, L, sizes, Dv, scale, dtype, dead_block in _update_cases(thorough):
        blocks = _blocks(g, batch, L, sizes, Dv, scale, dtype, dead_block)
        state = flash.online_softmax_init((*batch, L), Dv, dtype=dtype)
        start = 0
        for j, (attn_scores, value) in enumerate(blocks):
            case = f"{label}; block {j} (keys {start}..{start + attn_scores.shape[-1] - 1})"
            ref = flash.online_softmax_update(*state, attn_scores, value)
            got = call_learner(fn, tuple(t.clone() for t in (*state, attn_scores, value)), case)
            _expect_state(got, ref, state, (attn_scores, value), case)
            state, start = ref, start + attn_scores.shape[-1]
        case = f"{label}; your update applied block after block from m = -inf, l = 0, acc = 0"
        mine = flash.online_softmax_init((*batch, L), Dv, dtype=dtype)
        for j, (attn_scores, value) in enumerate(blocks):
            mine = call_learner(fn, tuple(t.clone() for t in (*mine, attn_scores, value)), f"{case}, block {j}")
            if not (isinstance(mine, (tuple, list)) and len(mine) == 3
                    and all(isinstance(t, torch.Tensor) for t in mine)):
                raise CheckFailure("type", f"{case}, block {j}: return the new state as a tuple of 3 tensors "
                                           f"(m, l, acc); got {type_name(mine)}")
        attn_scores = torch.cat([s for s, _ in blocks], dim=-1)                              # (..., L, S)
        value = torch.cat([v for _, v in blocks], dim=-2)                                    # (..., S, Dv)
        expected = attention.weighted_sum(attention.masked_softmax(attn_scores), value)      # (..., L, Dv)
        atol, rtol = _TOL[dtype]
        expect_tensor("attn_output = acc / l", flash.online_softmax_finish(mine[1], mine[2]), expected, case,
                      "(..., L, Dv)", atol=atol, rtol=rtol, hint=lambda a, e: (
                          "Each block alone matched, but the chain does not: does your update rely on something "
                          "other than its five arguments (a global, a value kept from an earlier call)?"))
