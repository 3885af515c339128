"""Checks of lesson 18, the encoder-decoder Transformer: the decoder block, the shifted target, one beam-search step.

Raises ``attn_course.checks.CheckFailure`` with a message that says what was expected, what came and
where to look; ``thorough=True`` is what grading adds. Leaks are found by probes, never read off the
code: a decoder output that moves when a later target position or a padded source position changes, or
that does not move when a real source position changes (a causal mask on the cross-attention); a
decoder input that holds the label its own position must predict (a target shifted by 0 or by 2).
"""
import torch
from torch import nn

from .. import attention, encoder_decoder
from .core import CheckFailure, call_learner, expect_tensor, forbids, format_shape, random_tensor
from .heads import matches
from .remote import type_name
from .tripwire import package

_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _expect_layout(name, actual, like, case, legend):
    """Type, shape and dtype of ``actual`` as those of ``like``; the values are judged by the caller."""
    if not (isinstance(actual, torch.Tensor) and actual.shape == like.shape and actual.dtype == like.dtype):
        expect_tensor(name, actual, like, case, legend)


# ---------------------------------------------------------------------------------------- the decoder block

def _decoder_cases(thorough):
    """(label, B, L, S, E, H, F, norm_first, activation, dtype, source lengths)."""
    yield "post-LN (norm_first=False), relu, B=2, L=4, S=6, E=8, H=2, d_ff=16, source lengths (6, 4)", \
        2, 4, 6, 8, 2, 16, False, "relu", torch.float32, [6, 4]
    yield "pre-LN (norm_first=True), relu, B=2, L=4, S=6, E=8, H=2, d_ff=16, source lengths (6, 3)", \
        2, 4, 6, 8, 2, 16, True, "relu", torch.float32, [6, 3]
    if thorough:
        yield "post-LN, gelu, float64, S < L: B=3, L=6, S=4, E=16, H=4, d_ff=32, source lengths (4, 2, 3)", \
            3, 6, 4, 16, 4, 32, False, "gelu", torch.float64, [4, 2, 3]
        yield "pre-LN, gelu, float64, S > L: B=3, L=3, S=8, E=16, H=4, d_ff=32, source lengths (8, 5, 1)", \
            3, 3, 8, 16, 4, 32, True, "gelu", torch.float64, [8, 5, 1]
        yield "post-LN, relu, L = S = 5, B=4, E=8, H=2, d_ff=16, source lengths (5, 4, 2, 1)", \
            4, 5, 5, 8, 2, 16, False, "relu", torch.float32, [5, 4, 2, 1]


def _random_decoder_block(g, E, H, F_, norm_first, activation, dtype):
    """A DecoderBlock in eval mode with weights drawn from ``g`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        block = encoder_decoder.DecoderBlock(E, H, F_, norm_first=norm_first, activation=activation)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(random_tensor(g, *p.shape, scale=0.3) + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return block.to(dtype).eval()


def _decoder_variants(block, x, memory, tgt_mask, memory_key_padding_mask):
    """Outputs of common mistakes, with the hint for each."""
    n1, n2, n3, ff = block.norm1, block.norm2, block.norm3, block.feed_forward

    def self_attn(h):
        return block.self_attn(h, attn_mask=tgt_mask)[0]

    def cross(h):
        return block.multihead_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]

    def post(h, first=self_attn, second=cross, norms=(n1, n2, n3)):
        h = norms[0](h + first(h))
        h = norms[1](h + second(h))
        return norms[2](h + ff(h))

    def pre(h, first=self_attn, second=cross, norms=(n1, n2, n3)):
        h = h + first(norms[0](h))
        h = h + second(norms[1](h))
        return h + ff(norms[2](h))

    mine, other = (pre, post) if block.norm_first else (post, pre)
    this = "pre-LN (x = x + SelfAttn(norm1(x)))" if block.norm_first else "post-LN (x = norm1(x + SelfAttn(x)))"
    yield other(x), (f"That is the {'post' if block.norm_first else 'pre'}-LN block, but block.norm_first is "
                     f"{block.norm_first}: this block is {this}.")
    yield mine(x, cross, self_attn), ("The sublayers run in the wrong order: the masked self-attention first, then "
                                      "the cross-attention over memory, then the feed-forward.")
    yield mine(x, second=lambda h: block.multihead_attn(h, h, h, attn_mask=tgt_mask)[0]), (
        "The cross-attention's keys and values must come from memory, the encoder's output; yours come from the "
        "decoder, so the block never reads the source.")
    for norms in ((n1, n3, n2), (n2, n1, n3), (n1, n1, n1)):
        yield mine(x, norms=norms), ("Each sublayer has its own LayerNorm: norm1 with the self-attention, norm2 "
                                     "with the cross-attention, norm3 with the feed-forward.")
    missing = ("The cross-attention sublayer is missing: between the self-attention and the feed-forward, the "
               "decoder reads the source.")
    for last in (n2, n3):
        if block.norm_first:
            h = x + self_attn(n1(x))
            yield h + ff(last(h)), missing
        else:
            h = n1(x + self_attn(x))
            yield last(h + ff(h)), missing
    if block.norm_first:
        residual = ("The residual must carry x itself, not the normalised x: pre-LN normalises only each sublayer's "
                    "input, x = x + SelfAttn(norm1(x)).")
        h = n1(x)
        h = h + self_attn(h)                                 # x replaced by norm1(x) before the first residual
        h2 = h + cross(n2(h))
        yield h2 + ff(n3(h2)), residual
        h = n2(h)
        h = n3(h + cross(h))                                 # ... and before every residual
        yield h + ff(h), residual
    else:
        h = n2(cross(n1(self_attn(x))))
        yield n3(ff(h)), "The residual connections are missing: add each sublayer's input to its output before the LayerNorm."
        h = n1(x + self_attn(x))
        h = n2(h + cross(h))
        yield h + ff(h), ("The third LayerNorm (block.norm3) is missing: post-LN normalises after every sublayer, the "
                          "feed-forward's too.")


def _spans(positions):
    """'3', '3..5' or '1..2 and 4' for a sorted list of positions."""
    runs, start = [], positions[0]
    for a, b in zip(positions, positions[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}..{a}")
            start = b
    return " and ".join(runs)


def _diagnose_decoder(fn, block, x, memory, tgt_mask, memory_key_padding_mask, got, g, case):
    """Probe the learner's block for a leak or a blind spot; raise kind ``causality`` or ``mask`` for the first
    found. Returns quietly when none is (the mismatch is then reported as ``values``)."""
    B, L, E = x.shape
    S = memory.shape[1]
    atol = _TOL[x.dtype]

    def moved(x2, memory2):
        """(B, L): how far the learner's output moved from ``got`` when the inputs became (x2, memory2)."""
        again = call_learner(fn, (block, x2.clone(), memory2.clone(), tgt_mask.clone(),
                                  memory_key_padding_mask.clone()), case)
        if not isinstance(again, torch.Tensor) or again.shape != got.shape:
            return torch.zeros(B, L, dtype=torch.float64)
        diff = (again.detach().double().cpu() - got.detach().double().cpu()).abs().amax(-1)
        return diff.nan_to_num(float("inf"))

    t = (L - 1) // 2
    later = x.clone()
    later[:, t + 1:] += 3 * random_tensor(g, B, L - t - 1, E, dtype=x.dtype)       # change the future only
    leak = moved(later, memory)[:, :t + 1]
    if (leak > atol).any():
        seen = sorted({int(i) for i in (leak > atol).nonzero()[:, 1]})
        raise CheckFailure("causality", f"{case}: changing x at target positions {t + 1}..{L - 1} changed the output "
                                        f"at position(s) {_spans(seen)} by up to {leak.max().item():.3g}: a target "
                                        f"position must not see later ones (the words it is learning to predict). "
                                        f"Only the self-attention reads other target positions, and tgt_mask (True "
                                        f"= ignore) keeps it causal; the cross-attention reads memory.")
    pad = memory_key_padding_mask                                                    # (B, S), True = padding
    noise = 3 * random_tensor(g, B, S, E, dtype=x.dtype)
    on_pad = moved(x, memory + noise * pad[..., None].to(x.dtype))                  # only padding changes
    if (on_pad > atol).any():
        b = int((on_pad > atol).any(-1).nonzero()[0])
        padded = pad[b].nonzero().flatten().tolist()
        on_real = moved(x, memory + noise * (~pad)[..., None].to(x.dtype))[b]
        raise CheckFailure("mask", f"{case}: changing the memory at source positions {_spans(padded)} of sequence "
                                   f"{b}, padding (memory_key_padding_mask is True there), changed its output by up "
                                   f"to {on_pad[b].max().item():.3g}: the cross-attention reads padding. "
                                   f"memory_key_padding_mask (True = padding) is the cross-attention's key padding "
                                   f"mask." + ("" if (on_real > atol).any() else
                                               " Its output did not move when the real source positions changed: "
                                               "the polarity is inverted (here True = padding, to be ignored)."))
    real = ~pad
    reach = torch.zeros(B, L, S, dtype=torch.bool)                                   # target i moved with source j
    for j in range(S):
        one = torch.zeros(B, S, 1, dtype=x.dtype)
        one[:, j] = 1
        reach[:, :, j] = moved(x, memory + noise * one) > atol
    full = real[:, None, :].expand(B, L, S)                                          # every real source position
    reach &= full
    if not reach.any() or torch.equal(reach, full):
        return                                                                       # no blind spot (or no memory)
    if torch.equal(reach, full & (torch.arange(S)[None, :] <= torch.arange(L)[:, None])):
        n = int(real.sum(-1).max())
        raise CheckFailure("mask", f"{case}: target position i attended only to source positions 0..i: the output "
                                   f"at target position 0 did not change when the memory at source positions "
                                   f"{_spans(list(range(1, n)))} changed, none of them padding. The cross-attention "
                                   f"must see the whole source; only the decoder's self-attention is causal. Is "
                                   f"a causal mask (is_causal=True, or tgt_mask) reaching block.multihead_attn?")
    b, i, j = (full & ~reach).nonzero()[0].tolist()
    raise CheckFailure("mask", f"{case}: the output at target position {i} of sequence {b} did not change when the "
                               f"memory at source position {j} changed, and it is not padding: every target position "
                               f"must read every real source position. Only memory_key_padding_mask masks the "
                               f"cross-attention.")


@forbids(*package(encoder_decoder.DecoderBlock.forward),
         ("torch.nn.TransformerDecoderLayer", nn.TransformerDecoderLayer.forward))
def check_decoder_block(fn, thorough=False, seed=180):
    """``fn(block, x (B, L, E), memory (B, S, E), tgt_mask, memory_key_padding_mask) -> (B, L, E)``, equal to
    ``block(x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)`` in eval mode.

    ``tgt_mask`` (L, L) is causal and ``memory_key_padding_mask`` (B, S) marks the source's padding: both
    bool, **True = ignore**, as in ``torch.nn.TransformerDecoderLayer``. ``block`` is an
    ``attn_course.encoder_decoder.DecoderBlock``; ``fn`` combines ``self_attn``, ``multihead_attn``,
    ``feed_forward`` and ``norm1..3`` as post-LN or pre-LN (``block.norm_first``).

    On a mismatch, probes name the leak: the output moves when later target positions change (kind
    ``causality``), or when padded source positions change, or it stays put when real source positions
    change, as under a causal cross-attention (kind ``mask``); else a known mistake of the sublayers'
    order, norms or residuals is named (kind ``values``). ``thorough`` adds float64, gelu, S < L, S > L
    and more padding.
    """
    g = torch.Generator().manual_seed(seed)
    for case, B, L, S, E, H, F_, norm_first, activation, dtype, lengths in _decoder_cases(thorough):
        block = _random_decoder_block(g, E, H, F_, norm_first, activation, dtype)
        x = random_tensor(g, B, L, E, dtype=dtype)                                   # (B, L, E), the target side
        memory = random_tensor(g, B, S, E, dtype=dtype)                              # (B, S, E), the encoder's output
        tgt_mask = ~attention.causal_mask(L)                                         # (L, L), True = ignore
        memory_key_padding_mask = attention.padding_mask(lengths, S)                 # (B, S), True = padding
        with torch.no_grad():
            ref = block(x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)
            got = call_learner(fn, (block, x.clone(), memory.clone(), tgt_mask.clone(),
                                    memory_key_padding_mask.clone()), case)
            if isinstance(got, (tuple, list)):
                raise CheckFailure("type", f"{case}: return only the block's output x (B, L, E), not a "
                                           f"{type_name(got)} of {len(got)}.")
            _expect_layout("x", got, ref, case, "(B, L, E)")
            if not torch.isfinite(got).all():
                raise CheckFailure("finite", f"{case}: x contains NaN or inf; the reference is finite. A position that "
                                             f"may attend to no key gets NaN from the softmax: both masks here mean "
                                             f"True = ignore (tgt_mask is True above the diagonal, "
                                             f"memory_key_padding_mask on padding). Is one of them inverted?")
            variants = []
            if not torch.allclose(got, ref, atol=_TOL[dtype], rtol=1e-4):
                _diagnose_decoder(fn, block, x, memory, tgt_mask, memory_key_padding_mask, got, g, case)
                variants = list(_decoder_variants(block, x, memory, tgt_mask, memory_key_padding_mask))

        def hint(actual, expected):
            for candidate, text in variants:
                if matches(actual, candidate, atol=1e-6):
                    return text
            return ("Post-LN: x = norm1(x + SelfAttn(x)); x = norm2(x + CrossAttn(x, memory)); x = norm3(x + FFN(x)). "
                    "Pre-LN: x = x + SelfAttn(norm1(x)); x = x + CrossAttn(norm2(x), memory); x = x + FFN(norm3(x)).")
        expect_tensor("x", got, ref, case, "(B, L, E)", atol=_TOL[dtype], hint=hint)


# ---------------------------------------------------------------------------------------- the shifted target

def _targets(g, tokens, L, eos, vocab_size, first_id=4):
    """(B, L) int64 labels: ``tokens[b]`` random ids in first_id..vocab_size-1, then <eos>, then padding 0."""
    tgt_out = torch.zeros(len(tokens), L, dtype=torch.long)
    for b, n in enumerate(tokens):
        tgt_out[b, :n] = torch.randint(first_id, vocab_size, (n,), generator=g)
        tgt_out[b, n] = eos
    return tgt_out


def _shift_cases(thorough, g):
    """(label, tgt_out (B, L) int64, bos_id)."""
    yield ("bos_id=2, <eos>=3, <pad>=0: tgt_out [[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]]",
           torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]]), 2)
    if thorough:
        yield "bos_id=1, <eos>=2, B=3, L=7, 6, 3 and 0 words then padding", _targets(g, [6, 3, 0], 7, 2, 30), 1
        yield "bos_id=40 (the last id of 41), <eos>=3, B=4, L=9", _targets(g, [8, 5, 7, 1], 9, 3, 40), 40
        yield "one position: L=1, bos_id=2, tgt_out [[3], [3]]", torch.tensor([[3], [3]]), 2
        yield "two positions: L=2, bos_id=5, tgt_out [[7, 3], [3, 0]]", torch.tensor([[7, 3], [3, 0]]), 5


def _holds_own_label(got, tgt_out, expected):
    """The first position t where ``got`` holds the label of position t, ``tgt_out[:, t]``, in every sentence
    while the right input differs from it in one at least; None if there is none."""
    for t in range(tgt_out.shape[1]):
        if torch.equal(got[:, t], tgt_out[:, t]) and not torch.equal(expected[:, t], tgt_out[:, t]):
            return t
    return None


@forbids(*package(encoder_decoder.shift_right))
def check_shift_right(fn, thorough=False, seed=181):
    """``fn(tgt_out (B, L) int64, bos_id) -> tgt_in (B, L) int64``: ``<bos>`` first, then the labels
    ``tgt_out[:, :L-1]``, so that position t reads y_t (y_0 = ``<bos>``) and predicts y_{t+1}.

    Failures: ``type``, ``shape``, ``dtype``; ``causality`` when a position of ``tgt_in`` holds its own label
    or a later one (not shifted, or shifted by two: the decoder would read what it must predict); ``values``
    otherwise (``<bos>`` missing, or another id). ``thorough`` adds other ``bos_id`` values, more padding,
    L = 1 and L = 2.
    """
    g = torch.Generator().manual_seed(seed)
    for case, tgt_out, bos_id in _shift_cases(thorough, g):
        B, L = tgt_out.shape
        expected = torch.cat([torch.full((B, 1), bos_id, dtype=torch.long), tgt_out[:, :-1]], dim=1)  # (B, L)
        got = call_learner(fn, (tgt_out.clone(), bos_id), case)
        if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[0] == B and got.shape[1] != L:
            raise CheckFailure("shape", f"{case}: tgt_in should have shape (B, L) = {format_shape(expected.shape)}, "
                                        f"the length of tgt_out; got {format_shape(got.shape)}. <bos> goes first and "
                                        f"the last label falls off: it predicts nothing.")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != torch.long:
            raise CheckFailure("dtype", f"{case}: tgt_in should have dtype torch.int64, token ids as in tgt_out; got "
                                        f"{got.dtype}." + (" torch.zeros and torch.empty make floats unless given "
                                                           "dtype=, and nn.Embedding refuses float ids."
                                                           if got.is_floating_point() else ""))
        _expect_layout("tgt_in", got, expected, case, "(B, L)")
        got = got.detach().cpu()
        t = _holds_own_label(got, tgt_out, expected)
        if t is not None:
            note = " (tgt_in equals tgt_out: nothing is shifted)" if torch.equal(got, tgt_out) else ""
            raise CheckFailure("causality", f"{case}: tgt_in[:, {t}] holds tgt_out[:, {t}] = y_{t + 1}, the label of "
                                            f"position {t}{note}: at position {t} the decoder would read the token it "
                                            f"must predict, and the causal mask cannot hide a position's own input. "
                                            f"Training loss falls towards zero and generation fails. Position t of "
                                            f"tgt_in must hold y_t, the label of position t - 1 (y_0 = <bos>).")
        if not torch.equal(got[:, 0], expected[:, 0]):
            first = got[:, 0]
            if torch.equal(first, tgt_out[:, -1]) and L > 1:
                extra = (f" It holds the last label, tgt_out[:, {L - 1}]: the labels were rolled round, not shifted "
                         f"in; position 0 reads <bos>.")
            elif (first == first[0]).all():
                extra = f" Every sentence starts with {first[0].item()}: use the bos_id argument ({bos_id} here)."
            else:
                extra = ""
            raise CheckFailure("values", f"{case}: tgt_in[:, 0] should be bos_id = {bos_id} in every sentence; got "
                                         f"{first.tolist()}.{extra}")
        expect_tensor("tgt_in", got, expected, case, "(B, L)", hint=lambda a, e: (
            "Position t must hold y_t, the label of position t - 1; the last label falls off."))


# ---------------------------------------------------------------------------------------- one beam-search step

def _beam_inputs(g, B, K, V, dtype, dead=()):
    """log_probs (B, K, V) (rows log-softmaxed) and beam_scores (B, K) < 0, ``-inf`` for the beams in ``dead``;
    redrawn until the finite candidates of each sentence are distinct (no ties to order)."""
    while True:
        log_probs = torch.log_softmax(random_tensor(g, B, K, V, scale=2.0, dtype=torch.float64), -1).to(dtype)
        beam_scores = -random_tensor(g, B, K, scale=3.0, dtype=torch.float64).abs().to(dtype)
        beam_scores[:, list(dead)] = float("-inf")
        candidates = (beam_scores[:, :, None] + log_probs).reshape(B, K * V)
        if all(len(set(row[torch.isfinite(row)].tolist())) == int(torch.isfinite(row).sum()) for row in candidates):
            return log_probs, beam_scores


def _beam_cases(thorough, g):
    """(label, log_probs (B, K, V), beam_scores (B, K), beam_size)."""
    yield "B=2 sentences, K=3 beams, V=5 words, beam_size=3", *_beam_inputs(g, 2, 3, 5, torch.float32), 3
    if thorough:
        log_probs, beam_scores = _beam_inputs(g, 2, 3, 7, torch.float32, dead=(1, 2))
        log_probs = log_probs[:, :1].expand(-1, 3, -1).clone()               # the first step: every beam reads <bos>
        beam_scores[:, 0] = 0.0
        yield "the first step: beam_scores [0, -inf, -inf], B=2, K=3, V=7, beam_size=6", log_probs, beam_scores, 6
        yield "an empty slot: beam 1 at -inf, B=3, K=4, V=6, beam_size=4", \
            *_beam_inputs(g, 3, 4, 6, torch.float32, dead=(1,)), 4
        yield "beam_size > V: B=2, K=5, V=3, beam_size=7", *_beam_inputs(g, 2, 5, 3, torch.float32), 7
        yield "float64, B=2, K=4, V=50, beam_size=8", *_beam_inputs(g, 2, 4, 50, torch.float64), 8
        yield "greedy: beam_size=1, B=3, K=2, V=9", *_beam_inputs(g, 3, 2, 9, torch.float32), 1


def _best_continuations(log_probs, beam_scores, beam_size):
    """The ``beam_size`` best (score, beam, token) of each sentence, by sorting its K x V candidates in Python."""
    B, K, V = log_probs.shape
    best = []
    for b in range(B):
        candidates = [((beam_scores[b, k] + log_probs[b, k, v]).item(), k, v) for k in range(K) for v in range(V)]
        best.append(sorted(candidates, key=lambda c: c[0], reverse=True)[:beam_size])
    return (torch.tensor([[c[0] for c in row] for row in best], dtype=log_probs.dtype),
            torch.tensor([[c[1] for c in row] for row in best], dtype=torch.long),
            torch.tensor([[c[2] for c in row] for row in best], dtype=torch.long))


def _scores_hint(got, expected, log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    if matches(got, log_probs.reshape(B, K * V).sort(-1, descending=True)[0][:, :beam_size]):
        return ("These are the log-probabilities of the next token alone: a continuation scores the log-probability "
                "of its whole prefix, beam_scores[b, k] + log_probs[b, k, v].")
    if beam_size <= K and matches(got, (beam_scores[:, :, None] + log_probs).amax(-1).sort(-1, descending=True)[0]
                                  [:, :beam_size]):
        return ("Each beam kept its own best token: the beam_size best of all K x V candidates of a sentence may "
                "hold several tokens of one beam and none of another. Rank them all together.")
    if matches(got.sort(-1, descending=True)[0], expected):
        return "The right candidates in the wrong order: return them best first."
    return "scores[b, i] is the i-th largest of beam_scores[b, k] + log_probs[b, k, v] over every beam k and token v."


def _indices_hint(got_beam, got_token, beam_idx, token_idx, K, V):
    flat = beam_idx * V + token_idx                                          # the index into the K x V candidates
    if torch.equal(got_beam, flat) or torch.equal(got_token, flat):
        return (f"That is the index into the K x V = {K * V} candidates: split it into the beam and the token, "
                f"flat // V and flat % V.")
    if torch.equal(got_beam, flat % V) and torch.equal(got_token, flat // V):
        return "beam_idx and token_idx are swapped: the beam is flat // V, the token flat % V."
    if torch.equal(got_beam, flat // K) and torch.equal(got_token, flat % K):
        return f"Split by V = {V}, the number of tokens per beam, not by K = {K}: flat // V and flat % V."
    return "beam_idx[b, i] is the beam that survivor i extends, token_idx[b, i] the token it appends."


@forbids(*package(encoder_decoder.beam_search_step))
def check_beam_search_step(fn, thorough=False, seed=182):
    """``fn(log_probs (B, K, V), beam_scores (B, K), beam_size) -> (scores, beam_idx, token_idx)``, each
    (B, beam_size), best first: the ``beam_size`` best continuations ``beam_scores[b, k] + log_probs[b, k, v]``
    of each sentence over all K x V, compared with a sort of every candidate in Python.

    Failures: ``type``, ``shape``, ``dtype``, and ``values`` with a hint for the usual mistakes (the beam
    scores not added, the top-k taken per beam, the flat indices not split into beam and token, the wrong
    order). ``thorough`` adds the first step (one live beam), an empty slot (``-inf``), beam_size > V,
    greedy (beam_size = 1) and float64.
    """
    g = torch.Generator().manual_seed(seed)
    for case, log_probs, beam_scores, beam_size in _beam_cases(thorough, g):
        B, K, V = log_probs.shape
        scores, beam_idx, token_idx = _best_continuations(log_probs, beam_scores, beam_size)
        got = call_learner(fn, (log_probs.clone(), beam_scores.clone(), beam_size), case)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailure("type", f"{case}: return (scores, beam_idx, token_idx), three (B, beam_size) tensors; "
                                       f"got {type_name(got)}" + (f" of {len(got)}" if isinstance(got, (tuple, list))
                                                                  else "") +
                               (" (did you forget `return`?)" if got is None else ""))
        for name, actual, like in zip(("scores", "beam_idx", "token_idx"), got, (scores, beam_idx, token_idx)):
            if isinstance(actual, torch.Tensor) and tuple(actual.shape) == (B, K, beam_size):
                raise CheckFailure("shape", f"{case}: {name} should have shape (B, beam_size) = "
                                            f"{format_shape(like.shape)}; got {format_shape(actual.shape)}, one row per "
                                            f"beam: the top beam_size of each beam's V tokens. The beam_size best "
                                            f"are chosen among all K x V candidates of a sentence together.")
            if isinstance(actual, torch.Tensor) and actual.shape == like.shape and name != "scores" \
                    and actual.is_floating_point():
                raise CheckFailure("dtype", f"{case}: {name} should have dtype torch.int64, an index; got "
                                            f"{actual.dtype}. / divides into floats; // (floor division) keeps "
                                            f"integers.")
            _expect_layout(name, actual, like, case, "(B, beam_size)")
        got_scores, got_beam, got_token = (t.detach().cpu() for t in got)
        if not torch.isfinite(got_scores).all():
            where = (~torch.isfinite(got_scores)).nonzero()[0].tolist()
            raise CheckFailure("values", f"{case}: scores{where} is {got_scores[tuple(where)].item()}, a continuation "
                                         f"of an empty beam (beam_scores = -inf), although finite candidates were "
                                         f"left: the best beam_size are {scores.tolist()}.")
        expect_tensor("scores", got_scores, scores, case, "(B, beam_size)", atol=_TOL[log_probs.dtype],
                      hint=lambda a, e: _scores_hint(a, e, log_probs, beam_scores, beam_size))
        hint = _indices_hint(got_beam, got_token, beam_idx, token_idx, K, V)
        expect_tensor("beam_idx", got_beam, beam_idx, case, "(B, beam_size)", hint=lambda a, e: hint)
        expect_tensor("token_idx", got_token, token_idx, case, "(B, beam_size)", hint=lambda a, e: hint)
