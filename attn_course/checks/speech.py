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
