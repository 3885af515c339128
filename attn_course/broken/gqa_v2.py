"""A second version of the key/value head expansion of grouped-query attention (lesson 16)."""
import torch

from .. import gqa


def repeat_kv_v2(x, n_rep):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor (B, Hkv, S, D); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(n_rep, int) or isinstance(n_rep, bool) or n_rep <= 0:
        raise ValueError(f"n_rep must be a positive int (query heads per key/value head); got {n_rep!r}")
    if n_rep == 1:
        return x
    return x.repeat(1, n_rep, 1, 1)  # (B, Hkv, S, D) -> (B, Hkv*r, S, D)


repeat_kv_v2.__doc__ = gqa.repeat_kv.__doc__
