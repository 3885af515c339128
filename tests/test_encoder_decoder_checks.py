"""Lesson 18's checks: check_decoder_block, check_shift_right, check_beam_search_step.

Each passes the package's reference and answers written another way, fails the suspects of the bug hunt
with the kind the answer key gives, and fails a learner's usual mistakes with the kind and the message
that name them; a message is the same when the answer runs in the grader's process or behind its socket.
The answers below are written as a learner would, from the block's submodules and plain tensor operations.
"""
import functools

import pytest
import torch
from test_remote import served

from attn_course import encoder_decoder as ed
from attn_course.broken import DecoderBlock_v2, shift_right_v2
from attn_course.checks import (
    CheckFailure,
    check_beam_search_step,
    check_decoder_block,
    check_shift_right,
    tripwire,
)

from correct_variants import (
    beam_search_step_sort,
    beam_search_step_two_stage,
    decoder_block_float64,
    decoder_block_with_sdpa,
    shift_right_pad,
    shift_right_roll,
)

THOROUGH = [pytest.param(False, id="quick"), pytest.param(True, id="thorough")]


def fails(check, fn, thorough):
    with pytest.raises(CheckFailure) as info:
        check(fn, thorough=thorough)
    return info.value


# ------------------------------------------------------------------------------------------ the decoder block

def decoder_block(block, x, memory, tgt_mask, memory_key_padding_mask, mask_self=True, cross_padding="right",
                  cross_causal=False, cross_first=False, cross_source="memory", norms=(1, 2, 3), post_ln=None):
    """A learner's decoder block from the block's submodules; each keyword puts one mistake in."""
    padding = {"right": memory_key_padding_mask, "none": None, "inverted": ~memory_key_padding_mask}[cross_padding]

    def self_attn(h):
        return block.self_attn(h, attn_mask=tgt_mask if mask_self else None)[0]

    def cross_attn(h):
        if cross_source != "memory":                                                   # keys and values from x
            return block.multihead_attn(h, h, h, attn_mask=tgt_mask if cross_source == "decoder_masked" else None)[0]
        return block.multihead_attn(h, memory, memory, key_padding_mask=padding, is_causal=cross_causal)[0]

    n1, n2, n3 = (getattr(block, f"norm{i}") for i in norms)
    sublayers = [(n1, self_attn), (n2, cross_attn), (n3, block.feed_forward)]
    if cross_first:
        sublayers[0], sublayers[1] = (n1, cross_attn), (n2, self_attn)
    if cross_source == "skip":
        sublayers = [sublayers[0], sublayers[2]]
    post = not block.norm_first if post_ln is None else post_ln
    for norm, sublayer in sublayers:
        x = norm(x + sublayer(x)) if post else x + sublayer(norm(x))
    return x


def decoder_block_residual_of_norm(block, x, memory, tgt_mask, memory_key_padding_mask):
    """Pre-LN written as x = norm1(x); x = x + SelfAttn(x): the residual carries the normalised x."""
    if not block.norm_first:
        return decoder_block(block, x, memory, tgt_mask, memory_key_padding_mask)
    x = block.norm1(x)
    x = x + block.self_attn(x, attn_mask=tgt_mask)[0]
    h = block.norm2(x)
    x = x + block.multihead_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]
    return x + block.feed_forward(block.norm3(x))


def decoder_block_no_residual(block, x, memory, tgt_mask, memory_key_padding_mask):
    x = block.norm1(block.self_attn(x, attn_mask=tgt_mask)[0])
    x = block.norm2(block.multihead_attn(x, memory, memory, key_padding_mask=memory_key_padding_mask)[0])
    return block.norm3(block.feed_forward(x))


def decoder_block_returns_tuple(block, x, memory, tgt_mask, memory_key_padding_mask):
    return block(x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask, need_weights=True)


def decoder_block_v2(block, x, memory, tgt_mask, memory_key_padding_mask):
    return DecoderBlock_v2.forward(block, x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)


def reference_block(block, x, memory, tgt_mask, memory_key_padding_mask):
    return block(x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [reference_block, decoder_block, decoder_block_with_sdpa, decoder_block_float64],
                         ids=["reference", "learner", "sdpa", "float64"])
def test_decoder_block_correct_answers_pass(fn, thorough):
    check_decoder_block(fn, thorough=thorough)


CAUSAL_CROSS = ("target position i attended only to source positions 0..i", "must see the whole source",
                "the output at target position 0 did not change when the memory at source positions 1..5 changed")


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (decoder_block_v2, "mask", CAUSAL_CROSS),
    (functools.partial(decoder_block, cross_causal=True), "mask", CAUSAL_CROSS),
    (functools.partial(decoder_block, cross_padding="none"), "mask",
     ("source positions 4..5 of sequence 1, padding", "the cross-attention reads padding")),
    (functools.partial(decoder_block, cross_padding="inverted"), "mask",
     ("the cross-attention reads padding", "the polarity is inverted")),
    (functools.partial(decoder_block, mask_self=False), "causality",
     ("changing x at target positions 2..3 changed the output", "must not see later ones", "tgt_mask")),
    (functools.partial(decoder_block, post_ln=True), "values", ("block.norm_first is True", "this block is pre-LN")),
    (functools.partial(decoder_block, cross_first=True), "values", ("wrong order",)),
    (functools.partial(decoder_block, cross_source="decoder"), "causality",
     ("changed the output at position(s) 0..1", "the cross-attention reads memory")),
    (functools.partial(decoder_block, cross_source="decoder_masked"), "values", ("must come from memory",)),
    (functools.partial(decoder_block, cross_source="skip"), "values", ("cross-attention sublayer is missing",)),
    (functools.partial(decoder_block, norms=(1, 3, 2)), "values", ("its own LayerNorm",)),
    (decoder_block_no_residual, "values", ("residual connections are missing",)),
    (decoder_block_returns_tuple, "type", ("not a tuple of 3",)),
], ids=["DecoderBlock_v2", "is_causal_cross", "no_memory_padding", "inverted_memory_padding", "no_tgt_mask",
        "post_ln_always", "cross_first", "cross_from_decoder", "cross_from_decoder_masked", "no_cross", "norms_swapped", "no_residual", "tuple"])
def test_decoder_block_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(check_decoder_block, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)


def test_decoder_block_v2_reads_the_source_top_left_teacher_forced_and_position_0_only_when_decoding():
    torch.manual_seed(0)
    model = ed.TransformerTranslator(12, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=2,
                                     d_ff=32, max_len=10, dropout=0.0).eval()
    for block in model.transformer.decoder_layers:
        block.__class__ = DecoderBlock_v2                                            # the lesson's swap
    src = torch.tensor([[4, 5, 6, 7, 8, 9], [4, 5, 6, 7, 0, 0]])                   # S = 6, the second padded
    with torch.no_grad():
        _, weights = model(src, torch.tensor([[2, 5, 6, 7], [2, 8, 9, 3]]), need_weights=True)
    allowed = torch.ones(4, 6, dtype=torch.bool).tril() & (src != 0)[:, None, None, :]  # (B, 1, L, S)
    for cross in weights["cross"]:                                                   # (B, H, L, S) per layer
        assert (cross[~allowed.expand_as(cross)] == 0).all() and (cross[allowed.expand_as(cross)] > 0).all()
    _, cross = ed.greedy_decode(model, src, max_len=4)                               # (B, N, H, T, S)
    assert torch.equal(cross[..., 0], torch.ones_like(cross[..., 0]))                # source position 0 alone


def test_decoder_block_pre_ln_residual_mistake_is_named_on_the_pre_ln_case():
    err = fails(check_decoder_block, decoder_block_residual_of_norm, False)
    assert err.kind == "values" and str(err).startswith("[values] pre-LN (norm_first=True)")
    assert "not the normalised x" in str(err)


def test_decoder_block_causal_cross_attention_is_caught_when_source_and_target_lengths_differ_either_way():
    from attn_course.checks.encoder_decoder import _decoder_cases
    shapes = {(L, S) for _, _, L, S, *_ in _decoder_cases(True)}
    assert any(S < L for L, S in shapes) and any(S > L for L, S in shapes) and any(S == L for L, S in shapes)
    calls = []

    def recording(block, x, memory, tgt_mask, memory_key_padding_mask):
        calls.append((x.shape[1], memory.shape[1]))
        return decoder_block(block, x, memory, tgt_mask, memory_key_padding_mask)
    check_decoder_block(recording, thorough=True)
    assert set(calls) == shapes                                                      # called once per case when right


def test_decoder_block_unfinished_and_none():
    def unfinished(*args):
        raise NotImplementedError("Exercise: write it")
    err = fails(check_decoder_block, unfinished, False)
    assert err.kind == "error" and "not implemented" in str(err)
    err = fails(check_decoder_block, lambda *args: None, False)
    assert err.kind == "type" and "return" in str(err)


# ------------------------------------------------------------------------------------------ the shifted target

def shift_unshifted(tgt_out, bos_id):
    return tgt_out.clone()


def shift_too_long(tgt_out, bos_id):
    return torch.cat([torch.full_like(tgt_out[:, :1], bos_id), tgt_out], dim=1)


def shift_float(tgt_out, bos_id):
    tgt_in = torch.zeros(tgt_out.shape)
    tgt_in[:, 0] = bos_id
    tgt_in[:, 1:] = tgt_out[:, :-1]
    return tgt_in


def shift_pad_with_zero(tgt_out, bos_id):
    return torch.nn.functional.pad(tgt_out[:, :-1], (1, 0))                       # value= forgotten: 0


def shift_bos_two(tgt_out, bos_id):
    return torch.nn.functional.pad(tgt_out[:, :-1], (1, 0), value=2)               # the lesson's bos id, hard-coded


def shift_rolled(tgt_out, bos_id):
    return tgt_out.roll(1, dims=1)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [ed.shift_right, shift_right_pad, shift_right_roll], ids=["reference", "pad", "roll"])
def test_shift_right_correct_answers_pass(fn, thorough):
    check_shift_right(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (shift_right_v2, "causality", ("tgt_in[:, 1] holds tgt_out[:, 1] = y_2, the label of position 1",
                                   "the decoder would read the token it must predict")),
    (shift_unshifted, "causality", ("tgt_in[:, 0] holds tgt_out[:, 0] = y_1", "nothing is shifted",
                                    "read the token it must predict")),
    (shift_too_long, "shape", ("(B, L) = (2, 5)", "got (2, 6)", "the last label falls off")),
    (shift_float, "dtype", ("torch.int64", "got torch.float32", "dtype=")),
    (shift_pad_with_zero, "values", ("tgt_in[:, 0] should be bos_id = 2", "Every sentence starts with 0")),
    (shift_rolled, "values", ("rolled round",)),
], ids=["shift_right_v2", "unshifted", "too_long", "float", "pad_with_zero", "rolled"])
def test_shift_right_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(check_shift_right, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)


def test_shift_right_hard_coded_bos_is_caught_when_thorough():
    check_shift_right(shift_bos_two)
    err = fails(check_shift_right, shift_bos_two, True)
    assert err.kind == "values" and "Every sentence starts with 2: use the bos_id argument (1 here)" in str(err)


# ------------------------------------------------------------------------------------------ one beam-search step

def candidates(log_probs, beam_scores):
    B, K, V = log_probs.shape
    return (beam_scores[:, :, None] + log_probs).reshape(B, K * V)                  # (B, K*V)


def beam_no_prefix(log_probs, beam_scores, beam_size):
    scores, flat = log_probs.flatten(1).topk(beam_size, dim=-1)                    # beam_scores forgotten
    V = log_probs.shape[-1]
    return scores, flat // V, flat % V


def beam_per_beam_topk(log_probs, beam_scores, beam_size):
    scores, token_idx = (beam_scores[:, :, None] + log_probs).topk(beam_size, dim=-1)   # (B, K, beam_size)
    return scores, torch.arange(log_probs.shape[1]).expand_as(token_idx), token_idx


def beam_best_token_per_beam(log_probs, beam_scores, beam_size):
    best, token = (beam_scores[:, :, None] + log_probs).max(dim=-1)               # (B, K): one token per beam
    scores, beam_idx = best.topk(beam_size, dim=-1)
    return scores, beam_idx, token.gather(1, beam_idx)


def beam_flat_unsplit(log_probs, beam_scores, beam_size):
    scores, flat = candidates(log_probs, beam_scores).topk(beam_size, dim=-1)
    return scores, flat, flat


def beam_swapped(log_probs, beam_scores, beam_size):
    scores, flat = candidates(log_probs, beam_scores).topk(beam_size, dim=-1)
    V = log_probs.shape[-1]
    return scores, flat % V, flat // V


def beam_split_by_k(log_probs, beam_scores, beam_size):
    scores, flat = candidates(log_probs, beam_scores).topk(beam_size, dim=-1)
    K = log_probs.shape[1]
    return scores, flat // K, flat % K


def beam_true_division(log_probs, beam_scores, beam_size):
    scores, flat = candidates(log_probs, beam_scores).topk(beam_size, dim=-1)
    V = log_probs.shape[-1]
    return scores, (flat / V).floor(), flat % V


def beam_worst_first(log_probs, beam_scores, beam_size):
    scores, flat = candidates(log_probs, beam_scores).topk(beam_size, dim=-1)
    V = log_probs.shape[-1]
    return scores.flip(-1), (flat // V).flip(-1), (flat % V).flip(-1)


def beam_two_of_three(log_probs, beam_scores, beam_size):
    return ed.beam_search_step(log_probs, beam_scores, beam_size)[:2]


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [ed.beam_search_step, beam_search_step_sort, beam_search_step_two_stage],
                         ids=["reference", "sort", "two_stage"])
def test_beam_search_step_correct_answers_pass(fn, thorough):
    check_beam_search_step(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (beam_no_prefix, "values", ("log-probabilities of the next token alone", "beam_scores[b, k] + log_probs[b, k, v]")),
    (beam_per_beam_topk, "shape", ("one row per beam", "got (2, 3, 3)", "all K x V candidates")),
    (beam_best_token_per_beam, "values", ("Each beam kept its own best token",)),
    (beam_flat_unsplit, "values", ("the index into the K x V = 15 candidates", "flat // V and flat % V")),
    (beam_swapped, "values", ("swapped",)),
    (beam_split_by_k, "values", ("Split by V = 5", "not by K = 3")),
    (beam_true_division, "dtype", ("torch.int64", "//")),
    (beam_worst_first, "values", ("wrong order",)),
    (beam_two_of_three, "type", ("three (B, beam_size) tensors", "got tuple of 2")),
], ids=["no_prefix", "per_beam_topk", "best_token_per_beam", "flat_unsplit", "swapped", "split_by_k",
        "true_division", "worst_first", "two_of_three"])
def test_beam_search_step_mistakes_fail(fn, kind, fragments, thorough):
    err = fails(check_beam_search_step, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)


def test_beam_search_step_names_an_empty_beam_among_the_survivors():
    def takes_empty_slots(log_probs, beam_scores, beam_size):
        if torch.isfinite(beam_scores).all():
            return ed.beam_search_step(log_probs, beam_scores, beam_size)
        scores, flat = candidates(log_probs, beam_scores).sort(dim=-1)             # ascending: -inf first
        V = log_probs.shape[-1]
        return scores[:, :beam_size], flat[:, :beam_size] // V, flat[:, :beam_size] % V
    check_beam_search_step(takes_empty_slots)
    err = fails(check_beam_search_step, takes_empty_slots, True)
    assert err.kind == "values" and "the first step" in str(err)
    assert "is -inf, a continuation of an empty beam" in str(err)


def test_beam_search_step_cases_have_no_ties_and_the_usual_mistakes_differ_from_the_answer():
    from attn_course.checks.encoder_decoder import _beam_cases, _best_continuations
    for case, log_probs, beam_scores, beam_size in _beam_cases(True, torch.Generator().manual_seed(182)):
        flat = candidates(log_probs, beam_scores)
        for row in flat:
            finite = row[torch.isfinite(row)]
            assert finite.unique().numel() == finite.numel() >= beam_size, case
        scores, beam_idx, token_idx = _best_continuations(log_probs, beam_scores, beam_size)
        ref = ed.beam_search_step(log_probs, beam_scores, beam_size)
        torch.testing.assert_close(scores, ref[0], rtol=0, atol=0)
        assert torch.equal(beam_idx, ref[1]) and torch.equal(token_idx, ref[2]), case
        if beam_size > 1:
            assert not torch.equal(beam_no_prefix(log_probs, beam_scores, beam_size)[0], scores), case


# ------------------------------------------------------------------------------------------ all three

CHECKS = [check_decoder_block, check_shift_right, check_beam_search_step]


def test_each_check_forbids_the_reference_it_asks_for():
    labels = {check.__name__: [label for label, _ in check.forbidden] for check in CHECKS}
    assert labels == {
        "check_decoder_block": ["attn_course.encoder_decoder.DecoderBlock.forward", "torch.nn.TransformerDecoderLayer"],
        "check_shift_right": ["attn_course.encoder_decoder.shift_right"],
        "check_beam_search_step": ["attn_course.encoder_decoder.beam_search_step"],
    }


@pytest.mark.parametrize("check, fn", [(check_decoder_block, reference_block),
                                       (check_shift_right, lambda tgt_out, bos_id: ed.shift_right(tgt_out, bos_id)),
                                       (check_beam_search_step, lambda lp, bs, k: ed.beam_search_step(lp, bs, k))],
                         ids=lambda v: getattr(v, "__name__", "fn"))
def test_an_answer_that_calls_the_reference_is_refused_when_the_tripwire_is_armed(check, fn):
    check(fn)                                                                        # disarmed (the tests' default)
    tripwire.enable(True)
    err = fails(check, fn, False)
    assert err.kind == "reference" and "which is what this exercise asks you to write yourself" in str(err)


@pytest.mark.parametrize("check, fn", [(check_decoder_block, decoder_block), (check_shift_right, shift_right_pad),
                                       (check_beam_search_step, beam_search_step_sort)],
                         ids=["decoder_block", "shift_right", "beam_search_step"])
def test_an_answer_written_from_the_parts_passes_with_the_tripwire_armed(check, fn):
    tripwire.enable(True)
    check(fn, thorough=True)


@pytest.mark.parametrize("check, fn", [
    (check_decoder_block, decoder_block_v2),
    (check_decoder_block, functools.partial(decoder_block, cross_padding="inverted")),
    (check_decoder_block, functools.partial(decoder_block, mask_self=False)),
    (check_decoder_block, functools.partial(decoder_block, cross_source="skip")),
    (check_decoder_block, decoder_block_returns_tuple),
    (check_shift_right, shift_right_v2),
    (check_shift_right, shift_too_long),
    (check_shift_right, shift_rolled),
    (check_beam_search_step, beam_per_beam_topk),
    (check_beam_search_step, beam_flat_unsplit),
    (check_beam_search_step, beam_two_of_three),
], ids=lambda v: getattr(v, "__name__", None) or getattr(getattr(v, "func", None), "__name__", "fn"))
def test_a_message_is_the_same_in_the_notebook_and_behind_the_graders_socket(check, fn):
    local = fails(check, fn, True)
    torch.manual_seed(0)
    with served(fn) as handle:
        far = fails(check, handle, True)
    assert (far.kind, str(far)) == (local.kind, str(local))
