"""Checks of lesson 12 (image captioning): the soft-attention step."""

import torch

from .. import pooling, scoring
from ..apps import captioning
from ..apps.captioning import soft_attention
from .core import CheckFailure, call_learner, expect_rows_sum_to_one, expect_tensor, forbids
from .remote import type_name
from .tripwire import SDPA, package


@forbids(*package(captioning.soft_attention, scoring.additive_scores, pooling.attention_pool), *SDPA)
def check_soft_attention(fn, thorough=False, seed=120):
    """Check ``fn(query (B, Hd), features (B, S, C), w_query (A, Hd), w_key (A, C), v (A,))``.

    It must return ``(context (B, C), attn_weights (B, S))``.
    """
    cases = [("one image: Hd=4, S=6, C=3, A=5", 1, 4, 6, 3, 5, torch.float32)]
    if thorough:
        cases += [("batch of 3: Hd=8, S=10, C=4, A=6", 3, 8, 10, 4, 6, torch.float32),
                  ("float64, batch of 2: Hd=5, S=7, C=9, A=3", 2, 5, 7, 9, 3, torch.float64)]
    g = torch.Generator().manual_seed(seed)
    for case, B, Hd, S, C, A, dtype in cases:
        args = [torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
                for shape in ((B, Hd), (B, S, C), (A, Hd), (A, C), (A,))]
        args[4] = args[4] * 3                                                  # peaked enough to tell
        got = call_learner(fn, tuple(a.clone() for a in args), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (context, attn_weights); got {type_name(got)}")
        context, attn_weights = got
        ref_context, ref_weights = soft_attention(*args)
        if not isinstance(attn_weights, torch.Tensor) or attn_weights.shape != ref_weights.shape:
            expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, S)")
        sums = attn_weights.detach().sum(0)
        if B > 1 and torch.allclose(sums, torch.ones_like(sums), atol=1e-4) or B == 1 and torch.allclose(
                attn_weights.detach(), torch.ones_like(attn_weights)):
            raise CheckFailure("normalisation", f"{case}: each image's attn_weights must sum to 1 over its S "
                                                f"positions (dim=-1); yours sum to 1 over the batch (dim=0). "
                                                f"Apply softmax over dim=-1.")
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, S)",
                      hint=lambda a, e: "attn_scores = tanh(query @ w_query.T (one row per image, broadcast "
                                        "over S) + features @ w_key.T) @ v.")
        expect_tensor("context", context, ref_context, case, legend="(B, C)",
                      hint=lambda a, e: "context[b] = sum over s of attn_weights[b, s] * features[b, s].")
