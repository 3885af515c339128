"""A second version of the rotary position embedding (lesson 17)."""
import torch

from .. import rotary


def apply_rotary_v2(x, positions, base=10000.0, interleaved=False):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[-1] % 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor (..., L, D) with D even; got {got}")
    L, D = x.shape[-2:]
    if not isinstance(positions, torch.Tensor) or positions.shape[-1:] != (L,):
        got = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise ValueError(f"positions must be a tensor whose last dimension has the sequence length {L}; got {got}")
    angle = rotary.rotary_angles(positions.to(x.device), D, base, dtype=torch.float64)    # (..., L, D/2)
    if interleaved:
        x_a, x_b = x[..., :D // 2], x[..., D // 2:]                                     # (..., L, D/2) each
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        return torch.cat((x_a * cos - x_b * sin, x_b * cos + x_a * sin), dim=-1)       # (..., L, D)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], D // 2, 2))        # (..., L, D/2) complex
    turned = pairs * torch.polar(torch.ones_like(angle), angle)                          # times e^(i p theta)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)                          # (..., L, D/2, 2) -> (..., L, D)


apply_rotary_v2.__doc__ = rotary.apply_rotary.__doc__
