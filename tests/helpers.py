"""What the test modules share: devices, dtypes, check modes, tolerances and seeded random tensors.

Imported by name (``from helpers import DEVICES, draw``): pytest puts ``tests/`` on ``sys.path``.
"""
import pytest
import torch

F16, F32, F64 = torch.float16, torch.float32, torch.float64
CUDA = torch.cuda.is_available()

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="CUDA is not available"))]
"""``"cpu"``, and ``"cuda"`` where a GPU is present (skipped, and reported as skipped, elsewhere)."""
DTYPES = [pytest.param(F32, id="f32"), pytest.param(F64, id="f64")]
THOROUGH = [pytest.param(False, id="quick"), pytest.param(True, id="thorough")]
"""A check's two modes: quick (the lesson's) and thorough (what grading adds)."""


def tol(dtype, device="cpu"):
    """``assert_close`` tolerances for results computed in ``dtype`` on ``device`` (GPU kernels round differently)."""
    if dtype == F64:
        return {"atol": 1e-10, "rtol": 1e-9}
    if dtype == F16:
        return {"atol": 2e-3, "rtol": 1e-2}
    return {"atol": 1e-5, "rtol": 1e-4} if device == "cpu" else {"atol": 1e-4, "rtol": 1e-3}


def draw(g, *shape, dtype=F32, device="cpu", scale=1.0):
    """A standard normal tensor of ``shape`` from generator ``g``, times ``scale``, in ``dtype`` on ``device``.

    Drawn in float64 on the CPU, then scaled, cast and moved: one seed gives the same numbers (up to
    rounding) in every dtype and on every device.
    """
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(dtype=dtype, device=device)
