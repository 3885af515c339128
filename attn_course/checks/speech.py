"""Checks of lesson 13 (speech recognition): attention pooling over frames and the subsampled padding mask."""

import torch
from torch import nn

from .. import pooling
from ..apps import speech
from ..apps.speech import query_attention_pool
from .core import call_learner, forbids
from .remote import type_name
from .tripwire import MHA, SDPA, package


def _pool_cases(thorough):
    """(label, B, S, E, Dv, lengths, per-clip query, score scale, dtype)."""
    yield "3 clips of 7, 4 and 2 frames, padded to S=7, E=8", 3, 7, 8, 5, [7, 4, 2], False, 1.0, torch.float32
    if thorough:
        yield "one query per clip, lengths 9, 1, 5, 9, E=16", 4, 9, 16, 6, [9, 1, 5, 9], True, 1.0, torch.float32
        yield "float64, no padding at all, E=32", 2, 6, 32, 32, [6, 6], False, 1.0, torch.float64
        yield "large scores (x50), lengths 12, 3", 2, 12, 8, 4, [12, 3], False, 50.0, torch.float32
        yield "a single clip of one frame", 1, 1, 4, 3, [1], False, 1.0, torch.float32


@forbids(*package(speech.query_attention_pool, pooling.attention_pool), *SDPA, *MHA)
def check_query_attention_pool(fn, thorough=False, seed=130):
    """``fn(query, key, value, key_padding_mask) -> (context (B, Dv), attn_weights (B, S))`` against
    ``query_attention_pool``: shapes, weights summing to 1 over each clip's frames, zero weight on padding,
    values, and an output that does not change when the padding frames' contents change."""
    from ..checks import CheckFailure, expect_rows_sum_to_one, expect_tensor
    g = torch.Generator().manual_seed(seed)
    for case, B, S, E, Dv, lengths, per_clip, scale, dtype in _pool_cases(thorough):
        query = (torch.randn(*((B, E) if per_clip else (E,)), generator=g, dtype=torch.float64) * scale).to(dtype)
        key = torch.randn(B, S, E, generator=g, dtype=torch.float64).to(dtype)
        value = torch.randn(B, S, Dv, generator=g, dtype=torch.float64).to(dtype)
        key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]          # (B, S), True = padding
        got = call_learner(fn, (query, key, value, key_padding_mask), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (context, attn_weights); got {type_name(got)}")
        context, attn_weights = got
        expected_context, expected_weights = query_attention_pool(query, key, value, key_padding_mask)
        if not isinstance(attn_weights, torch.Tensor) or attn_weights.shape != expected_weights.shape:
            expect_tensor("attn_weights", attn_weights, expected_weights, case, legend="(B, S)")  # type or shape
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
        on_padding = attn_weights.detach()[key_padding_mask].abs()
        if on_padding.numel() and on_padding.max() > 1e-6:
            b = int(key_padding_mask.nonzero()[on_padding.argmax()][0])
            raise CheckFailure("mask", f"{case}: clip {b} has {lengths[b]} real frames and {S - lengths[b]} padding "
                                       f"frames (key_padding_mask True), which got weight "
                                       f"{attn_weights[b][key_padding_mask[b]].sum().item():.3f} in all; padding must "
                                       f"get exactly 0. Fill the padded scores with -inf before the softmax.")
        expect_tensor("attn_weights", attn_weights, expected_weights, case, legend="(B, S)")
        expect_tensor("context", context, expected_context, case, legend="(B, Dv)")
        noisy_key, noisy_value = key.clone(), value.clone()
        noisy_key[key_padding_mask] = 1e3
        noisy_value[key_padding_mask] = -1e3
        context2, _ = call_learner(fn, (query, noisy_key, noisy_value, key_padding_mask), case + ", padding filled with 1000s")
        expect_tensor("context", context2, expected_context, case + " (padding frames filled with +-1000: "
                      "the output must not change)", legend="(B, Dv)")


def _mask_cases(thorough):
    """(label, lengths, S, stride)."""
    yield "lengths 9, 5, 2 padded to S=9, stride 2", [9, 5, 2], 9, 2
    if thorough:
        yield "even S=8, lengths 8, 7, 1, stride 2", [8, 7, 1], 8, 2
        yield "stride 3, lengths 10, 4, 6 of S=10", [10, 4, 6], 10, 3
        yield "stride 1 (no subsampling)", [5, 3], 5, 1
        yield "one long and one short clip, S=41, stride 2", [41, 12], 41, 2


@forbids(*package(speech.subsample_padding_mask))
def check_subsample_padding_mask(fn, thorough=False, seed=131):
    """``fn(key_padding_mask (B, S), stride) -> (B, ceil(S / stride))`` bool, True = padding, against a real
    ``nn.Conv1d(kernel_size=5, stride, padding=2)``: an output frame is padding when the input frame at its
    centre is; the length is the convolution's."""
    from ..checks import CheckFailure, expect_tensor
    del seed  # the cases are fixed; the argument keeps the checks' common signature
    for case, lengths, S, stride in _mask_cases(thorough):
        key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]         # (B, S), True = padding
        S_out = nn.Conv1d(1, 1, kernel_size=5, stride=stride, padding=2)(torch.zeros(1, 1, S)).shape[-1]
        centres = torch.arange(S_out) * stride                                       # the input frame under each output
        expected = key_padding_mask[:, centres]                                      # (B, S')
        got = call_learner(fn, (key_padding_mask, stride), case)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == torch.bool and \
                not torch.equal(got, expected):
            b = int((got != expected).any(-1).nonzero()[0])
            t = int((got[b] != expected[b]).nonzero()[0])
            raise CheckFailure("values", f"{case}: clip {b} ({lengths[b]} real frames of {S}): expected the mask "
                                         f"{expected[b].int().tolist()}, got {got[b].int().tolist()}. Encoder frame "
                                         f"{t} is centred on input frame {stride * t}, which is "
                                         f"{'padding' if expected[b, t] else 'real'}.")
        expect_tensor("key_padding_mask", got, expected, case, legend=f"(B, ceil(S / {stride}))")


# ------------------------------------------------------------------------------- the pyramid's frame stacking

def _stack_cases(thorough):
    """(label, B, S, F, lengths, factor, dtype)."""
    yield "3 clips of 7, 4 and 3 frames padded to S=7, F=2, factor 2 (S odd)", 3, 7, 2, [7, 4, 3], 2, torch.float32
    if thorough:
        yield "S=8 (even), lengths 8, 5, F=3, factor 2", 2, 8, 3, [8, 5], 2, torch.float32
        yield "factor 4, S=10, lengths 10, 6, 1, F=2", 3, 10, 2, [10, 6, 1], 4, torch.float32
        yield "float64, factor 3, S=9, lengths 9, 7, F=4", 2, 9, 4, [9, 7], 3, torch.float64
        yield "factor 1: nothing to stack, S=5, lengths 5, 2", 2, 5, 3, [5, 2], 1, torch.float32


def _stack_slips(x, key_padding_mask, factor):
    """Outputs of the usual slips: {message: (stacked or None, mask or None)}."""
    B, S, F_ = x.shape
    S_out = -(-S // factor)
    padded = torch.nn.functional.pad(x, (0, 0, 0, S_out * factor - S))               # (B, S' * factor, F)
    mask_pad = torch.nn.functional.pad(key_padding_mask, (0, S_out * factor - S), value=True)
    slips = {
        "Stack neighbours in time: frames factor*t .. factor*t + factor - 1 form group t, each frame's F "
        "bands kept together (reshape (B, S', factor * F) of the time-padded x, no transpose)":
            (padded.reshape(B, S_out, factor, F_).transpose(2, 3).reshape(B, S_out, factor * F_), None),
        "Group t holds frames factor*t .. factor*t + factor - 1, neighbours in time; reshaping to (B, factor, S', F) "
        "first groups frames S' apart":
            (padded.reshape(B, factor, S_out, F_).transpose(1, 2).reshape(B, S_out, factor * F_), None),
        "Pad at the END of time (the right), where padding already sits, not at the start":
            (torch.nn.functional.pad(x, (0, 0, S_out * factor - S, 0)).reshape(B, S_out, factor * F_), None),
        "A group is padding only when its FIRST frame is: a group that straddles the clip's end still holds real "
        "frames (speech.subsample_padding_mask(key_padding_mask, factor) gives exactly that mask)":
            (None, mask_pad.reshape(B, S_out, factor).any(-1)),
        "The mask must follow the frames: group t starts at frame factor * t, so its mask is that frame's; "
        "mask[:, :S'] keeps the first S' columns and unmasks padding (speech.subsample_padding_mask does it right)":
            (None, key_padding_mask[:, :S_out]),
    }
    return slips


@forbids(*package(speech.stack_frames))
def check_stack_frames(fn, thorough=False, seed=132):
    """``fn(x (B, S, F), key_padding_mask (B, S), factor) -> (stacked (B, S', factor*F), mask (B, S'))``,
    S' = ceil(S / factor), against ``speech.stack_frames`` (Chan et al. 2016, sec. 3.1). Failures: ``type``,
    ``shape``, ``dtype``, ``values`` (with a hint naming the usual slip: the bands interleaved, frames grouped
    S' apart, zero frames put first) and ``mask`` (a group straddling the clip's end, the mask cut instead of
    subsampled)."""
    from ..checks import CheckFailure, expect_tensor
    g = torch.Generator().manual_seed(seed)
    for case, B, S, F_, lengths, factor, dtype in _stack_cases(thorough):
        key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]          # (B, S), True = padding
        x = torch.randn(B, S, F_, generator=g, dtype=torch.float64).to(dtype).masked_fill(key_padding_mask[..., None], 0)
        got = call_learner(fn, (x.clone(), key_padding_mask.clone(), factor), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (stacked, key_padding_mask); got {type_name(got)}")
        stacked, mask = speech.stack_frames(x, key_padding_mask, factor)
        slips = _stack_slips(x, key_padding_mask, factor)

        def hint(which):
            def named(actual, expected):
                matches = [text for text, answer in slips.items() if answer[which] is not None
                           and answer[which].shape == actual.shape and torch.equal(actual.detach().cpu(), answer[which])
                           and not torch.equal(answer[which], expected)]
                if len(matches) == 1:
                    return matches[0] + "."
                return ("stacked[b, t] = the frames factor*t .. factor*t + factor - 1 side by side (zero frames added "
                        "at the end so S divides); the new mask: speech.subsample_padding_mask(key_padding_mask, factor).")
            return named
        expect_tensor("stacked", got[0], stacked, case, "(B, ceil(S / factor), factor * F)", hint=hint(0))
        if isinstance(got[1], torch.Tensor) and got[1].shape == mask.shape and got[1].dtype == torch.bool \
                and not torch.equal(got[1].cpu(), mask):
            raise CheckFailure("mask", f"{case}: the new key_padding_mask differs from the reference "
                                       f"{mask.int().tolist()}; got {got[1].int().tolist()}. {hint(1)(got[1], mask)}")
        expect_tensor("key_padding_mask", got[1], mask, case, "(B, ceil(S / factor))")
