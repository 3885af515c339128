"""Checks of lesson 11 (image recognition): spatial attention pooling and the attention map."""
import math

import torch
from torch.nn import functional as F

from ..apps import vision
from ..apps.vision import attention_map, spatial_attention_pool
from .core import CheckFailure, call_learner, expect_rows_sum_to_one, expect_tensor, forbids
from .remote import type_name
from .tripwire import MHA, SDPA, package


def _pool_cases(thorough):
    yield "one image: C=4, H=3, W=5, query (C,)", 1, 4, 3, 5, False, 1.0, torch.float32
    if thorough:
        yield "batch of 3, C=8, H=4, W=2, query (B, C)", 3, 8, 4, 2, True, 1.0, torch.float32
        yield "float64, C=16, H=W=6", 2, 16, 6, 6, False, 1.0, torch.float64
        yield "large scores (x100), C=6, H=1, W=7", 2, 6, 1, 7, False, 100.0, torch.float32


def _pool_hint(features, query):
    def hint(actual, expected):
        B, C, H, W = features.shape
        if actual.shape == (B, H * W):
            transposed = expected.view(B, H, W).transpose(1, 2).reshape(B, H * W)
            if H != W and H > 1 and W > 1 and torch.allclose(actual, transposed, atol=1e-5):
                return ("Yours are the weights of the positions in column-major order (w * H + h): flatten "
                        "with features.flatten(2), which is row-major (h * W + w).")
            scale = math.sqrt(C)
            unscaled = torch.softmax(torch.log(expected.clamp_min(1e-30)) * scale, -1)
            if torch.allclose(actual, unscaled, atol=1e-4):
                return f"Divide the scores by sqrt(C) = {scale:.3g}."
        return "Scores are query . features at each position / sqrt(C); softmax over positions (dim=-1)."
    return hint


@forbids(*package(vision.spatial_attention_pool), *SDPA, *MHA)
def check_spatial_attention_pool(fn, thorough=False, seed=110):
    """Check ``fn(features (B, C, H, W), query (C,) or (B, C)) -> (pooled (B, C), attn_weights (B, H*W))``."""
    g = torch.Generator().manual_seed(seed)
    for case, B, C, H, W, per_image, scale, dtype in _pool_cases(thorough):
        features = (torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(dtype)
        query = (torch.randn(*((B, C) if per_image else (C,)), generator=g, dtype=torch.float64) * scale).to(dtype)
        got = call_learner(fn, (features.clone(), query.clone()), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (pooled, attn_weights); got {type_name(got)}")
        pooled, attn_weights = got
        ref_pooled, ref_weights = spatial_attention_pool(features, query)
        if not isinstance(attn_weights, torch.Tensor) or attn_weights.shape != ref_weights.shape:
            expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, H*W)")   # type or shape
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, H*W)",
                      hint=_pool_hint(features, query))
        expect_tensor("pooled", pooled, ref_pooled, case, legend="(B, C)",
                      hint=lambda a, e: "pooled[b] = sum over positions s of attn_weights[b, s] * features[b, :, s].")


@forbids(*package(vision.attention_map))
def check_attention_map(fn, thorough=False, seed=111):
    """Check ``fn(attn_weights (B, H*W), height, width) -> (B, height, width)``, positions row-major."""
    cases = [("one image, H=2, W=3", 1, 2, 3)]
    if thorough:
        cases += [("batch of 4, H=5, W=3", 4, 5, 3), ("H=1, W=6", 2, 1, 6), ("square, H=W=4", 3, 4, 4)]
    g = torch.Generator().manual_seed(seed)
    for case, B, H, W in cases:
        attn_weights = torch.softmax(torch.randn(B, H * W, generator=g), -1)
        got = call_learner(fn, (attn_weights.clone(), H, W), case)
        expected = attention_map(attn_weights, H, W)

        def hint(actual, expected, H=H, W=W):
            if torch.allclose(actual, expected.reshape(-1, W, H).transpose(1, 2)):
                return ("Your map[b, h, w] holds the weight of position w * H + h (the positions read "
                        "column by column): the picture is mirrored across its diagonal. Positions were "
                        "flattened row by row, s = h * W + w.")
            return "map[b, h, w] must be attn_weights[b, h * W + w]."
        expect_tensor("attention map", got, expected, case, legend="(B, H, W)", hint=hint)


# ------------------------------------------------------------------------------- how much attention is on ink?

def _ink_cases(thorough, g):
    """(label, attn_weights (B, h*w), images (B, 1, H, W), h, w, threshold)."""
    def make(B, H, W, h, w, dtype=torch.float32, level=None):
        images = (torch.rand(B, 1, H, W, generator=g, dtype=torch.float64) ** 3).to(dtype)   # mostly dark
        images[:, :, H // 4:H // 2, :W // 2] = 1.0                                          # a stroke off-centre
        if level is not None:                                                                # one cell exactly at it
            images[:, :, -(H // h):, -(W // w):] = level
        attn_weights = torch.softmax(2 * torch.randn(B, h * w, generator=g, dtype=torch.float64), -1).to(dtype)
        return attn_weights, images
    yield ("B=2 images 8x12 on a 4x4 grid (cells of 2x3 pixels), threshold 0.5, the last cell's mean exactly 0.5",
           *make(2, 8, 12, 4, 4, level=0.5), 4, 4, 0.5)
    if thorough:
        yield ("B=3 images 8x8 on their own 8x8 grid, threshold 0.3", *make(3, 8, 8, 8, 8), 8, 8, 0.3)
        yield ("float64, B=2 images 12x6 on a 3x2 grid, threshold 0.25", *make(2, 12, 6, 3, 2, torch.float64), 3, 2,
               0.25)
        yield ("B=4 images 16x16 on a 2x8 grid, threshold 0.3", *make(4, 16, 16, 2, 8), 2, 8, 0.3)


def _ink_hint(attn_weights, images, height, width, threshold):
    """A hint naming the usual slip, when exactly one matches the wrong answer."""
    B = len(images)
    pooled = F.adaptive_avg_pool2d(images, (height, width))                                  # (B, 1, h, w)
    slips = {
        "a cell is ink when the MEAN of its pixels exceeds the threshold (adaptive_avg_pool2d, then compare), "
        "not when any one pixel does":
            F.adaptive_max_pool2d(images, (height, width)).flatten(1) > threshold,
        "a cell is ink when its mean is ABOVE the threshold (>), not at or above it (>=)":
            pooled.flatten(1) >= threshold,
        "flatten the grid row by row (s = h * width + w), as the attention weights are":
            pooled.transpose(-1, -2).flatten(1) > threshold,
    }
    answers = {text: (attn_weights * ink.reshape(B, -1)).sum(-1) for text, ink in slips.items()}   # (B,) each

    def hint(actual, expected):
        matches = [text for text, answer in answers.items()
                   if answer.shape == actual.shape
                   and torch.allclose(actual.detach().cpu().to(answer.dtype), answer, atol=1e-5)
                   and not torch.allclose(answer, expected.cpu(), atol=1e-5)]
        if len(matches) == 1:
            return matches[0][0].upper() + matches[0][1:] + "."
        return ("ink = adaptive_avg_pool2d(images, (height, width)).flatten(1) > threshold; on_ink = the sum of the "
                "weights where ink is True, per image.")
    return hint


@forbids(*package(vision.attention_on_ink))
def check_attention_on_ink(fn, thorough=False, seed=112):
    """Check ``fn(attn_weights (B, h*w), images (B, 1, H, W), height, width, threshold)
    -> (on_ink (B,), ink_share (B,))``.

    A grid cell is ink when the mean intensity of its pixels (``adaptive_avg_pool2d``) exceeds ``threshold``;
    ``on_ink`` is the attention mass on ink cells, ``ink_share`` the fraction of cells that are ink.
    Failures: ``type``, ``shape``, ``dtype``; ``values`` with a hint naming the usual slip (any pixel rather than
    the mean, ``>=``, column-major cells) when exactly one matches.
    """
    g = torch.Generator().manual_seed(seed)
    for case, attn_weights, images, height, width, threshold in _ink_cases(thorough, g):
        got = call_learner(fn, (attn_weights.clone(), images.clone(), height, width, threshold), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (on_ink, ink_share); got {type_name(got)}")
        on_ink, ink_share = vision.attention_on_ink(attn_weights, images, height, width, threshold)
        expect_tensor("on_ink", got[0], on_ink, case, legend="(B,)",
                      hint=_ink_hint(attn_weights, images, height, width, threshold))
        expect_tensor("ink_share", got[1], ink_share.to(images.dtype), case, legend="(B,)",
                      hint=lambda a, e: "ink_share[b] = the fraction of the height * width cells that are ink: "
                                        "ink.float().mean(-1), in the images' dtype.")
