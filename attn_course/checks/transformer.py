"""Checks of lesson 07: masks, the transformer block, positional encodings."""
import torch
from torch import nn

from .. import attention, transformer
from .core import CheckFailure, call_learner, expect_tensor, forbids, random_tensor
from .heads import matches
from .remote import callable_object, is_instance, type_name
from .tripwire import package

_MASK_TOL = {torch.float16: (2e-3, 1e-2), torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-7)}


def _left_padded_causal(B, L, lengths):
    """attn_mask (B, L, L), True = may attend: causal, and keys left of each sequence's start are padding."""
    keep = torch.arange(L)[None, :] >= (L - torch.as_tensor(lengths))[:, None]        # (B, S), True = real
    return attention.causal_mask(L) & keep[:, None, :]                                 # (L, S) & (B, 1, S)


def _masked_softmax_cases(thorough):
    """(label, scores shape, attn_mask, dtype, score scale, causal)."""
    pad = attention.key_padding_to_attn_mask(attention.padding_mask([5, 2], 5))          # (2, 1, 5)
    yield "padding: scores (2, 4, 5), attn_mask (2, 1, 5) from lengths (5, 2)", (2, 4, 5), pad, torch.float32, 1.0, False
    left = _left_padded_causal(2, 4, [4, 2])                                             # (2, 4, 4)
    yield "causal + left padding: scores (2, 4, 4), lengths (4, 2)", (2, 4, 4), left, torch.float32, 1.0, True
    if thorough:
        yield "float16, causal + left padding, heads: scores (2, 3, 4, 4)", (2, 3, 4, 4), left[:, None], \
            torch.float16, 1.0, True
        both = attention.causal_mask(5, 7) & attention.key_padding_to_attn_mask(
            attention.padding_mask([7, 3], 7))[:, None]                                  # (2, 1, 5, 7)
        yield "float64, causal (5, 7) & padding, scores (2, 3, 5, 7)", (2, 3, 5, 7), both, torch.float64, 1.0, True
        yield "float16, padding, scores x10: (2, 4, 5)", (2, 4, 5), pad, torch.float16, 10.0, False
        yield "large scores (x100), causal (6, 6)", (6, 6), attention.causal_mask(6), torch.float32, 100.0, True


def _expect_masked(name, got, allowed, case):
    """No weight on a forbidden key; rows with no allowed key all zero."""
    w = got.detach().cpu().double()
    allowed = allowed.expand(w.shape)
    empty = ~allowed.any(-1)                                                             # (..., L) rows with no key
    if empty.any() and (w.abs() > 0)[empty].any():
        row = tuple(int(i) for i in (empty & (w.abs() > 0).any(-1)).nonzero()[0])
        raise CheckFailure("mask", f"{case}: query {list(row)} may attend to no key, so its row of {name} must be "
                                   f"all zeros (as in PyTorch's SDPA); got weights summing to {w[row].sum().item():.4f}. "
                                   f"A finite fill such as -1e9 or torch.finfo(dtype).min turns such a row into a "
                                   f"uniform distribution over keys it must not see: set those rows to zero.")
    leak = (w.abs() > 1e-6) & ~allowed
    if leak.any():
        where = tuple(int(i) for i in leak.nonzero()[0])
        inverted = not ((w.abs() > 1e-6) & allowed).any()
        raise CheckFailure("mask", f"{case}: {name}{list(where)} = {w[where].item():.4f}, but attn_mask forbids "
                                   f"that key (False there). " + (
                                       "Your weights are non-zero exactly where attn_mask is False: the polarity is "
                                       "inverted. Here True = may attend (as in SDPA); nn.MultiheadAttention's masks "
                                       "use True = ignore." if inverted else
                                       "Fill the forbidden scores with -inf (or the dtype's minimum) before the softmax."))


@forbids(*package(attention.masked_softmax))
def check_masked_softmax(fn, thorough=False, seed=70):
    """``fn(attn_scores (..., L, S), attn_mask bool, True = may attend) -> attn_weights (..., L, S)``.

    Forbidden keys get weight 0, each row with an allowed key sums to 1, rows with no allowed key are
    all zeros, and scores of forbidden keys have no influence at all (a causality probe).
    """
    g = torch.Generator().manual_seed(seed)
    for case, shape, attn_mask, dtype, scale, causal in _masked_softmax_cases(thorough):
        attn_scores = random_tensor(g, *shape, scale=scale, dtype=dtype)
        ref = attention.masked_softmax(attn_scores, attn_mask)
        try:
            got = call_learner(fn, (attn_scores.clone(), attn_mask.clone()), case)
        except CheckFailure as exc:
            if "overflow" in str(exc):
                raise CheckFailure("error", f"{exc} -- a fill value such as -1e9 does not fit in {dtype} (largest "
                                            f"magnitude {torch.finfo(dtype).max:g}): fill with float('-inf') or "
                                            f"torch.finfo(attn_scores.dtype).min.") from None
            raise
        _expect_like_no_values("attn_weights", got, ref, case, "(..., L, S)")
        if not torch.isfinite(got).all():
            empty = ~attn_mask.expand(ref.shape).any(-1, keepdim=True)                 # rows with no allowed key
            raise CheckFailure("finite", f"{case}: attn_weights contains NaN or inf. " + (
                "A query that may attend to no key has a row of -inf scores, and softmax of it is 0/0 = NaN: "
                "set those rows to zero (e.g. torch.where or masked_fill on the rows where attn_mask has no True)."
                if torch.isfinite(got.masked_fill(empty, 0.0)).all() else
                "Large scores overflow exp(): does your softmax subtract each row's maximum?"))
        _expect_masked("attn_weights", got, attn_mask, case)
        probe = attn_scores.masked_fill(~attn_mask, 0.0) + random_tensor(g, *shape, scale=20.0, dtype=dtype).masked_fill(
            attn_mask, 0.0)                                                              # only forbidden scores change
        again = call_learner(fn, (probe, attn_mask.clone()), case)
        atol, rtol = _MASK_TOL[dtype]
        if isinstance(again, torch.Tensor) and again.shape == got.shape and not torch.allclose(
                again.detach().double(), got.detach().double(), atol=atol, rtol=rtol, equal_nan=True):
            diff = (again.detach().double() - got.detach().double()).abs()
            row = tuple(int(i) for i in (diff == diff.max()).nonzero()[0][:-1])
            what = "the future (keys after the query)" if causal else "padding keys"
            raise CheckFailure("causality" if causal else "mask", (
                f"{case}: changing only the scores that attn_mask forbids, those of {what}, changed the weights of "
                f"query {list(row)} by up to {diff.max().item():.3g}: information leaks from positions the query "
                f"must not see. Mask the scores before the softmax; zeroing weights after it leaves the forbidden "
                f"scores in the denominator."))
        nonempty = attn_mask.expand(ref.shape).any(-1)
        off = (got.detach().double().sum(-1) - 1).abs() > 10 * atol                    # (..., L)
        if (off & nonempty).any():
            sums = got.detach().double().sum(-1)
            row = tuple(int(i) for i in (off & nonempty).nonzero()[0])
            raise CheckFailure("normalisation", f"{case}: the weights of query {list(row)} sum to "
                                                f"{sums[row].item():.4f} over the keys; a query with at least one "
                                                f"allowed key must sum to 1. Zeroing weights after the softmax does "
                                                f"not renormalise: mask the scores before it.")
        expect_tensor("attn_weights", got, ref, case, "(..., L, S)", atol=atol, rtol=rtol,
                      hint=lambda a, e: "Softmax over the key axis (dim=-1), after filling the forbidden scores.")


def _random_block(g, E, H, F, norm_first, activation, dtype):
    """A TransformerBlock in eval mode with weights drawn from ``g`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        block = transformer.TransformerBlock(E, H, F, norm_first=norm_first, activation=activation)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(random_tensor(g, *p.shape, scale=0.3) + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return block.to(dtype).eval()


def _block_variants(block, x, attn_mask, key_padding_mask):
    """Outputs of common mistakes, with the hint for each."""
    def attend(h, masked=True):
        return block.self_attn(h, attn_mask=attn_mask if masked else None,
                               key_padding_mask=key_padding_mask if masked else None)[0]
    n1, n2, ff = block.norm1, block.norm2, block.feed_forward
    post = n2(n1(x + attend(x)) + ff(n1(x + attend(x))))
    pre = x + attend(n1(x)) + ff(n2(x + attend(n1(x))))
    mine = "pre-LN (x + SelfAttn(LN(x)))" if block.norm_first else "post-LN (LN(x + SelfAttn(x)))"
    other = "post-LN" if block.norm_first else "pre-LN"
    yield (pre if not block.norm_first else post), (f"That is the {other} block, but block.norm_first is "
                                                    f"{block.norm_first}: this block is {mine}.")
    h = n1(x)
    yield h + attend(h) + ff(n2(h + attend(h))), ("The residual must carry x itself, not norm1(x): pre-LN "
                                                  "normalises only each sublayer's input, x = x + SelfAttn(LN(x)).")
    if block.norm_first:
        yield x + attend(n1(x), False) + ff(n2(x + attend(n1(x), False))), (
            "That is the block without masks: pass attn_mask and key_padding_mask to block.self_attn.")
    else:
        h = n1(x + attend(x, False))
        yield n2(h + ff(h)), "That is the block without masks: pass attn_mask and key_padding_mask to block.self_attn."
        yield n2(n1(attend(x)) + ff(n1(attend(x)))), ("The residual connections are missing: add each sublayer's "
                                                       "input to its output before the LayerNorm.")
        yield n1(x + attend(x)) + ff(n1(x + attend(x))), "The second LayerNorm (block.norm2) is missing."


def _block_cases(thorough):
    """(label, B, L, E, H, F, norm_first, activation, dtype, lengths, causal)."""
    yield "post-LN (norm_first=False), relu, B=2, L=5, E=8, H=2, d_ff=16, lengths (5, 3)", 2, 5, 8, 2, 16, \
        False, "relu", torch.float32, [5, 3], False
    yield "pre-LN (norm_first=True), relu, B=2, L=5, E=8, H=2, d_ff=16, lengths (5, 3)", 2, 5, 8, 2, 16, \
        True, "relu", torch.float32, [5, 3], False
    if thorough:
        yield "post-LN, gelu, causal attn_mask, float64, B=3, L=6, E=16, H=4, d_ff=32", 3, 6, 16, 4, 32, \
            False, "gelu", torch.float64, [6, 4, 2], True
        yield "pre-LN, gelu, causal attn_mask, float64, B=3, L=6, E=16, H=4, d_ff=32", 3, 6, 16, 4, 32, \
            True, "gelu", torch.float64, [6, 6, 1], True


@forbids(("attn_course.transformer.TransformerBlock", transformer.TransformerBlock.forward),
         ("torch.nn.TransformerEncoderLayer", nn.TransformerEncoderLayer.forward))
def check_transformer_block(fn, thorough=False, seed=71):
    """``fn(block, x (B, L, E), attn_mask, key_padding_mask) -> (B, L, E)``, equal to ``block(x, ...)`` in eval mode.

    ``attn_mask`` (L, L) and ``key_padding_mask`` (B, L) are the block's: bool, **True = ignore**.

    ``block`` is an ``attn_course.transformer.TransformerBlock``; ``fn`` combines its submodules
    ``self_attn``, ``norm1``, ``norm2`` and ``feed_forward`` as post-LN or pre-LN (``block.norm_first``).
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, E, H, F_, norm_first, activation, dtype, lengths, causal in _block_cases(thorough):
        block = _random_block(g, E, H, F_, norm_first, activation, dtype)
        x = random_tensor(g, B, L, E, dtype=dtype)
        key_padding_mask = attention.padding_mask(lengths, L)                            # (B, L), True = padding
        attn_mask = ~attention.causal_mask(L) if causal else None                        # (L, L), True = ignore (module polarity)
        with torch.no_grad():
            ref = block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
            got = call_learner(fn, (block, x.clone(), attn_mask, key_padding_mask), case)
            if isinstance(got, tuple):
                raise CheckFailure("type", f"{case}: return only the block's output x (B, L, E), not a tuple of "
                                           f"{len(got)}.")
            _expect_like_no_values("x", got, ref, case, "(B, L, E)")
            if causal:
                t = L // 2
                later = x.clone()
                later[:, t + 1:] += random_tensor(g, B, L - t - 1, E, dtype=dtype)             # change the future only
                again = call_learner(fn, (block, later, attn_mask, key_padding_mask), case)
                if not torch.allclose(again[:, :t + 1], got[:, :t + 1], atol=1e-8, rtol=1e-6):
                    raise CheckFailure("causality", f"{case}: changing x at positions > {t} changed the output at "
                                                    f"positions <= {t}: with a causal attn_mask a position must not "
                                                    f"see later ones. Pass attn_mask to block.self_attn.")
            variants = list(_block_variants(block, x, attn_mask, key_padding_mask))

        def hint(actual, expected):
            for candidate, text in variants:
                if matches(actual, candidate, atol=1e-6):
                    return text
            return ("Post-LN: x = norm1(x + self_attn(x)); x = norm2(x + feed_forward(x)). "
                    "Pre-LN: x = x + self_attn(norm1(x)); x = x + feed_forward(norm2(x)).")
        expect_tensor("x", got, ref, case, "(B, L, E)", atol=1e-5 if dtype == torch.float32 else 1e-10, hint=hint)


@forbids(("attn_course.transformer.SinusoidalPositionalEncoding", transformer.SinusoidalPositionalEncoding.forward))
def check_positional_encoding(cls, thorough=False, seed=72):
    """``cls(max_len, d_model)`` -> a module; ``module(x (B, L, E)) -> x + PE[:L]`` (sinusoidal, Vaswani et al. 3.5)."""
    g = torch.Generator().manual_seed(seed)
    cases = [("max_len=16, d_model=8, x (2, 5, 8)", 16, 8, 2, 5, torch.float32)]
    if thorough:
        cases += [("L = max_len: max_len=12, d_model=8, x (3, 12, 8)", 12, 8, 3, 12, torch.float32),
                  ("float64, max_len=32, d_model=32, x (4, 10, 32)", 32, 32, 4, 10, torch.float64),
                  ("float16, max_len=16, d_model=16, x (2, 7, 16)", 16, 16, 2, 7, torch.float16),
                  ("one position: max_len=8, d_model=4, x (3, 1, 4)", 8, 4, 3, 1, torch.float32)]
    for case, max_len, E, B, L, dtype in cases:
        module = call_learner(cls, (max_len, E), f"{case}: building {getattr(cls, '__name__', 'it')}(max_len, d_model)")
        if not callable_object(module):
            raise CheckFailure("type", f"{case}: {getattr(cls, '__name__', 'cls')}(max_len, d_model) must build a "
                                       f"module; got {type_name(module)}")
        if is_instance(module, nn.Module):
            module.eval()
        x = random_tensor(g, B, L, E, dtype=dtype)
        ref = transformer.SinusoidalPositionalEncoding(max_len, E)(x)
        with torch.no_grad():
            got = call_learner(module, (x.clone(),), case)
        _expect_like_no_values("output", got, ref, case, "(B, L, E)")
        atol = {torch.float16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-6}[dtype]
        added = got.detach().double() - x.double()                                      # what the module added
        if B > 1 and not torch.allclose(added, added[:1].expand_as(added), atol=atol):
            by_batch = L > 1 and torch.allclose(added, added[:, :1].expand_as(added), atol=atol)
            raise CheckFailure("values", f"{case}: the sequences of the batch received different encodings; the "
                                         f"encoding depends on the position only. " + (
                                             "Do you slice pe by the batch size x.shape[0] instead of the length "
                                             "x.shape[1]?" if by_batch else
                                             "Add a fixed table to x (x + pe[...]) without transforming x."))
        if L > 1 and torch.allclose(added, added[:, :1].expand_as(added), atol=atol):
            raise CheckFailure("values", f"{case}: every position received the same encoding vector (the one "
                                         f"added at position 0 equals the one at position {L - 1}), so the model "
                                         f"cannot tell word order: shuffle the tokens and nothing changes. Position "
                                         f"l must get row l of pe: which rows does your slice pick?")
        expect_tensor("output", got, ref, case, "(B, L, E)", atol=atol, hint=lambda a, e: (
            "Add row l of sinusoidal_positional_encoding(max_len, d_model) to position l, for l < L."))


def _expect_like_no_values(name, actual, like, case, legend):
    """Type, shape and dtype of ``actual`` as those of ``like`` (NaN is judged by the caller)."""
    if isinstance(actual, torch.Tensor) and actual.shape == like.shape and actual.dtype == like.dtype:
        return
    expect_tensor(name, actual, like, case, legend)


@forbids(*package(attention.causal_mask))
def check_causal_mask(fn, thorough=False, seed=73):
    """``fn(L, S=None, device=None) -> attn_mask (L, S) bool, True = may attend``: query i sees keys 0..i.

    First a causality probe: attention under the mask is run twice, the second time with the keys and
    values of positions after i changed; query i's output must not move (kind ``causality``). Then the
    mask itself is compared with ``attention.causal_mask`` (kind ``mask``).
    """
    g = torch.Generator().manual_seed(seed)
    cases = [("L=S=5", 5, None)]
    if thorough:
        cases += [("L=3, S=6", 3, 6), ("L=S=1", 1, None), ("L=S=9", 9, None)]
    for case, L, S in cases:
        S_ = L if S is None else S
        got = call_learner(fn, (L, S), case)
        ref = attention.causal_mask(L, S)
        if not isinstance(got, torch.Tensor):
            raise CheckFailure("type", f"{case}: return a torch.Tensor; got {type_name(got)}")
        if got.shape != ref.shape or got.dtype != torch.bool:
            raise CheckFailure("shape" if got.shape != ref.shape else "dtype",
                               f"{case}: attn_mask must be bool (L, S) = {tuple(ref.shape)}; got "
                               f"{got.dtype} {tuple(got.shape)}")
        query, key, value = random_tensor(g, 1, L, 8), random_tensor(g, 1, S_, 8), random_tensor(g, 1, S_, 4)
        out = attention.scaled_dot_product_attention(query, key, value, attn_mask=got)     # (1, L, 4)
        for i in range(min(L, S_) - 1):
            key2, value2 = key.clone(), value.clone()
            key2[:, i + 1:] += 5 * random_tensor(g, 1, S_ - i - 1, 8)                            # change the future only
            value2[:, i + 1:] += 5 * random_tensor(g, 1, S_ - i - 1, 4)
            out2 = attention.scaled_dot_product_attention(query, key2, value2, attn_mask=got)
            if not torch.allclose(out[:, i], out2[:, i], atol=1e-6):
                seen = got[i].nonzero().flatten().tolist()
                raise CheckFailure("causality", f"{case}: changing only positions {i + 1}..{S_ - 1} (the future "
                                                f"of query {i}) changed query {i}'s output by "
                                                f"{(out[:, i] - out2[:, i]).abs().max().item():.3g}: query {i} "
                                                f"may attend to keys {seen}; it must see keys 0..{i} only.")
        if not torch.equal(got, ref):
            r, c = (got != ref).nonzero()[0].tolist()
            raise CheckFailure("mask", f"{case}: attn_mask[{r}, {c}] is {bool(got[r, c])}; expected {bool(ref[r, c])} "
                                       f"(True = may attend; query i sees keys 0..i, diagonal included).")
