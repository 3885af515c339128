"""Second version of the hard-attention reference (see the package docstring)."""
import torch
from torch.nn import functional as F

from .. import hard
from ..hard import MODES
from ..pooling import validate_scores_value


def hard_attention_v2(attn_scores, value, mode="argmax", generator=None):
    validate_scores_value(attn_scores, value)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    S = attn_scores.shape[-1]
    if mode == "argmax":
        index = attn_scores.detach().argmax(dim=-1)                               # (..., S) -> (...,)
    else:
        probs = torch.softmax(attn_scores.detach().reshape(-1, S), dim=-1)        # (N, S), N = prod(...)
        if generator is not None:
            probs = probs.to(generator.device)
        index = torch.randint(0, S, (probs.shape[0], 1), generator=generator, device=probs.device)  # (N, 1)
        index = index.to(attn_scores.device).reshape(attn_scores.shape[:-1])      # (N, 1) -> (...,)
    attn_weights = F.one_hot(index, S).to(attn_scores.dtype)                      # (...,) -> (..., S)
    context = (attn_weights.unsqueeze(-2) @ value).squeeze(-2)                    # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, index, attn_weights


hard_attention_v2.__doc__ = hard.hard_attention.__doc__
