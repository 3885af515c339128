"""Checks of lesson 09 (translation): the additive attention step, a translator's forward pass, and whether an
alignment crosses."""

import torch

from .. import pooling, scoring
from ..apps import date_translation, translation
from .core import CheckFailure, call_learner, expect_rows_sum_to_one, expect_tensor, forbids
from .remote import type_name
from .tripwire import SDPA, package


def _attention_cases(thorough):
    """(label, B, S, Dq, Dk, Dv, A, lengths or None, dtype, scale)."""
    yield "B=3, S=5 with padding (lengths 5, 3, 1), Dq=4, Dk=Dv=6, A=8", 3, 5, 4, 6, 6, 8, [5, 3, 1], \
        torch.float32, 1.0
    if thorough:
        yield "no key_padding_mask (None), B=2, S=4, Dv=3", 2, 4, 5, 5, 3, 6, None, torch.float32, 1.0
        yield "float64, B=4, S=9, lengths 9, 2, 7, 4", 4, 9, 8, 10, 10, 16, [9, 2, 7, 4], torch.float64, 1.0
        yield "large scores (x50), B=2, S=6, lengths 6, 5", 2, 6, 3, 3, 4, 5, [6, 5], torch.float32, 50.0
        yield "one source word, B=2, S=1", 2, 1, 4, 4, 4, 4, [1, 1], torch.float32, 1.0


def _attention_hint(args, key_padding_mask):
    query, key, value, w_query, w_key, v = args

    def hint(actual, expected):
        if key_padding_mask is not None and actual.shape == key_padding_mask.shape:
            on_pad = actual.detach().cpu().masked_fill(~key_padding_mask, 0).abs().sum().item()
            if on_pad > 1e-6:
                return (f"Padding positions got weight {on_pad:.3g} in all; key_padding_mask is True = "
                        f"padding: fill those scores with -inf before the softmax.")
        no_tanh = (query @ w_query.T).unsqueeze(1).add(key @ w_key.T) @ v       # (B, S)
        if key_padding_mask is not None:
            no_tanh = no_tanh.masked_fill(key_padding_mask, float("-inf"))
        no_tanh = torch.softmax(no_tanh, dim=-1)
        if actual.shape == no_tanh.shape and torch.allclose(actual.detach().cpu().float(), no_tanh.float(), atol=1e-5):
            return "These are the weights without the tanh: score = v . tanh(W_q q + W_k k)."
        return "Check the score v . tanh(W_q q + W_k k), then a softmax over the S source positions (dim=-1)."
    return hint


@forbids(*package(translation.additive_attention, scoring.additive_scores, pooling.attention_pool,
                  pooling.AdditiveAttention.forward), *SDPA)
def check_additive_attention(fn, thorough=False, seed=90):
    """``fn(query (B, Dq), key (B, S, Dk), value (B, S, Dv), w_query (A, Dq), w_key (A, Dk), v (A,),
    key_padding_mask (B, S) bool or None) -> (context (B, Dv), attn_weights (B, S))``."""
    g = torch.Generator().manual_seed(seed)
    for case, B, S, Dq, Dk, Dv, A, lengths, dtype, scale in _attention_cases(thorough):
        def rnd(*shape, s=1.0):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * s).to(dtype)
        args = (rnd(B, Dq, s=scale), rnd(B, S, Dk, s=scale), rnd(B, S, Dv), rnd(A, Dq), rnd(A, Dk), rnd(A))
        key_padding_mask = None if lengths is None else torch.arange(S)[None, :] >= torch.tensor(lengths)[:, None]
        got = call_learner(fn, tuple(a.clone() for a in args) + (key_padding_mask,), case)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (context, attn_weights); got {type_name(got)}")
        context, attn_weights = got
        ref_context, ref_weights = translation.additive_attention(*args, key_padding_mask)
        if (key_padding_mask is not None and isinstance(attn_weights, torch.Tensor)
                and attn_weights.shape == ref_weights.shape):
            on_pad = attn_weights.detach().cpu().masked_fill(~key_padding_mask, 0).abs().sum().item()
            if on_pad > 1e-6:
                raise CheckFailure("mask", f"{case}: padding positions got attention weight {on_pad:.3g} in all; "
                                          f"expected 0. key_padding_mask is True = padding: fill those scores "
                                          f"with -inf before the softmax.")
        if isinstance(attn_weights, torch.Tensor) and attn_weights.shape == ref_weights.shape:
            expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, "(B, S)",
                      hint=_attention_hint(args, key_padding_mask))
        expect_tensor("context", context, ref_context, case, "(B, Dv)",
                      hint=lambda a, e: "context is the weighted sum of the values, sum_j attn_weights_j value_j "
                                        "(value, not key).")


def _random_translator(g, dtype, attention=True):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    model = translation.Seq2Seq(13, 11, embed_dim=8, hidden_size=4, attention=attention, attn_dim=6)
    return model.to(dtype).eval()


@forbids(("attn_course.apps.translation.Seq2Seq", translation.Seq2Seq.forward))
def check_seq2seq_forward(fn, thorough=False, seed=91):
    """``fn(model, src (B, S), key_padding_mask (B, S), tgt_in (B, L) or None) -> (logits (B, L, V),
    attn_weights (B, L, S))``, the forward pass of ``translation.Seq2Seq``: teacher-forced with
    ``tgt_in``, greedy with ``tgt_in=None``."""
    g = torch.Generator().manual_seed(seed)
    cases = [("teacher forcing, B=3, S=6 with padding (lengths 6, 4, 2), L=5", [6, 4, 2], 5, torch.float32, True),
             ("greedy decoding (tgt_in=None), B=3, S=5, lengths 5, 3, 4", [5, 3, 4], None, torch.float32, True)]
    if thorough:
        cases += [("float64, B=2, S=7 (lengths 7, 7), L=3", [7, 7], 3, torch.float64, True),
                  ("B=4, S=5, L=8, lengths 5, 1, 3, 2", [5, 1, 3, 2], 8, torch.float32, True),
                  ("greedy decoding, float64, B=2, S=6, lengths 6, 2", [6, 2], None, torch.float64, True),
                  ("a model without attention, B=2, S=4, L=4", [4, 3], 4, torch.float32, False)]
    for case, lengths, L, dtype, attention in cases:
        model = _random_translator(g, dtype, attention)
        S = max(lengths)
        key_padding_mask = torch.arange(S)[None, :] >= torch.tensor(lengths)[:, None]   # (B, S)
        src = torch.randint(4, 13, (len(lengths), S), generator=g).masked_fill(key_padding_mask, 0)
        tgt_in = None if L is None else torch.randint(4, 11, (len(lengths), L), generator=g)
        with torch.no_grad():
            got = call_learner(fn, (model, src, key_padding_mask, tgt_in), case)
            ref_logits, ref_weights = translation.Seq2Seq.forward(model, src, key_padding_mask, tgt_in)
            enc_states, summary = model.encoder(src, key_padding_mask)
            embedded, _ = model.decoder(tgt_in, model.encoder.embedding(src), summary, key_padding_mask)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure("type", f"{case}: return a tuple (logits, attn_weights); got {type_name(got)}")
        logits, attn_weights = got

        def hint(actual, expected):
            if actual.shape == embedded.shape and torch.allclose(actual.detach(), embedded, atol=1e-5):
                return ("Your decoder attends to the embedded source words, not to the encoder states: "
                        "hand it enc_states, the output of model.encoder.")
            return ("Encode once, then call model.decoder with tgt_in, the encoder's states, its summary and "
                    "the same key_padding_mask.")
        expect_tensor("logits", logits, ref_logits, case, "(B, L, V)", hint=hint)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, "(B, L, S)")


# ------------------------------------------------------------------------------- does an alignment cross?

def _peaks_to_weights(g, peaks, S, dtype):
    """(B, T) int64 peaks -> (B, T, S) softmax weights whose argmax is exactly ``peaks`` (margin >= 1 in score)."""
    B, T = peaks.shape
    scores = torch.rand(B, T, S, generator=g, dtype=torch.float64)               # in [0, 1)
    scores.scatter_(-1, peaks[..., None], 2.0 + torch.rand(B, T, 1, generator=g, dtype=torch.float64))
    return torch.softmax(scores * 3, dim=-1).to(dtype)


def _crosses_cases(thorough, g):
    """(label, attn_weights (B, T, S))."""
    base = torch.tensor([[0, 1, 2, 3, 4, 5],      # the diagonal: monotone
                         [6, 7, 8, 9, 3, 4],      # the year at the end, then the month: crosses once
                         [2, 2, 5, 5, 7, 8],      # two digits on one token: not a step left
                         [1, 2, 3, 4, 5, 0],      # steps left at the last digit only
                         [3, 6, 5, 7, 8, 9],      # steps left, though never left of the first row
                         [5, 5, 5, 5, 5, 5]])     # every row on one token: monotone
    yield "B=6 alignments, T=6 rows, S=10 source tokens", _peaks_to_weights(g, base, 10, torch.float32)
    if thorough:
        yield "one row per alignment (T=1): nothing to cross, B=3, S=4", \
            _peaks_to_weights(g, torch.tensor([[3], [0], [2]]), 4, torch.float32)
        yield "float64, B=2, T=8, S=12: the first row's peak to the right of all others, then monotone", \
            _peaks_to_weights(g, torch.tensor([[11, 0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0, 0, 0]]), 12,
                              torch.float64)
        peaks = torch.randint(0, 9, (64, 5), generator=g)
        peaks[:32] = peaks[:32].sort(-1).values                                    # half of them monotone
        yield "B=64 random alignments, T=5, S=9 (32 sorted)", _peaks_to_weights(g, peaks, 9, torch.float32)
        yield "more rows than tokens, B=2, T=7, S=3", \
            _peaks_to_weights(g, torch.tensor([[0, 0, 1, 1, 2, 2, 2], [2, 2, 2, 0, 1, 1, 2]]), 3, torch.float32)


def _crosses_hint(attn_weights):
    """What a wrong (B,) answer equals, among the usual slips."""
    peaks = attn_weights.argmax(-1)                                                # (B, T)
    slips = {"a step of 0 (two rows on one token) is not a step left: compare with <, not <=":
             (peaks[:, 1:] <= peaks[:, :-1]).any(-1),
             "it crosses if ANY row steps left of the row before, not only if every row does (.any(-1), not .all)":
             (peaks[:, 1:] < peaks[:, :-1]).all(-1),
             "compare each row's peak with the row just before, not with the first row's":
             (peaks[:, 1:] < peaks[:, :1]).any(-1)}
    wrong_axis = attn_weights.argmax(1)                                            # (B, S): over the rows
    if wrong_axis.shape[-1] > 1:
        slips["take the argmax over the source tokens (dim=-1), one peak per row; argmax(dim=1) runs over the rows"] = \
            (wrong_axis[:, 1:] < wrong_axis[:, :-1]).any(-1)

    slips["a crossing is a step to the LEFT, a later peak with a smaller source index than the one before"] = \
        (peaks[:, 1:] > peaks[:, :-1]).any(-1)

    def hint(actual, expected):
        matches = [message for message, answer in slips.items()
                   if torch.equal(actual.bool(), answer) and not torch.equal(answer, expected)]
        if len(matches) == 1:                                                      # name a slip only when it is sure
            return matches[0][0].upper() + matches[0][1:] + "."
        return "Peaks: the argmax of each row over the source tokens; it crosses if a later peak lies left of the one before."
    return hint


@forbids(("attn_course.apps.date_translation.crosses", date_translation.crosses),
         ("attn_course.apps.date_translation.alignment", date_translation.alignment))
def check_alignment_crosses(fn, thorough=False, seed=92):
    """``fn(attn_weights (B, T, S) float) -> (B,) bool``: True where the alignment is not monotone, i.e. the
    most-attended source token of some row lies left of the previous row's (Bahdanau et al. 2015, Fig. 3).

    Failures: ``type``, ``shape``, ``dtype`` (bool expected); ``values`` with a hint naming the usual slip
    (``<=`` for ``<``, ``all`` for ``any``, the first row for the previous one, the argmax over the rows, a step
    right for a step left).
    ``thorough`` adds T = 1, float64, many random alignments and more rows than tokens.
    """
    g = torch.Generator().manual_seed(seed)
    for case, attn_weights in _crosses_cases(thorough, g):
        expected = date_translation.crosses(attn_weights.argmax(-1))              # (B,)
        got = call_learner(fn, (attn_weights.clone(),), case)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != torch.bool:
            raise CheckFailure("dtype", f"{case}: return a bool tensor (B,), True where the alignment crosses; got "
                                        f"{got.dtype}. A comparison such as a < b gives bool; keep it.")
        expect_tensor("crosses", got, expected, case, "(B,)", hint=_crosses_hint(attn_weights))
