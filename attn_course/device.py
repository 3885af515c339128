"""Device selection and seeding.

The course runs on the CPU everywhere and on a GPU where one is present. Random tensors are always
drawn on the CPU from a seeded ``torch.Generator`` and then moved, so a lesson prints the same
numbers on every device.
"""
import os
import random

import torch

DEVICE_ENV = "ATTN_COURSE_DEVICE"
_CHOICES = ("auto", "cpu", "cuda")


def get_device(choice=None):
    """Return the device the course computes on.

    Args:
        choice: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available, else CPU). ``None`` reads the
            environment variable ``ATTN_COURSE_DEVICE`` and falls back to ``"auto"``.

    Returns:
        torch.device: ``cpu`` or ``cuda``.

    Raises:
        ValueError: the choice is not one of cpu | cuda | auto, or ``"cuda"`` is asked for on a
            machine where ``torch.cuda.is_available()`` is False.

    >>> get_device("cpu")
    device(type='cpu')
    """
    raw = os.environ.get(DEVICE_ENV, "") if choice is None else choice
    choice = str(raw).strip().lower() or "auto"  # unset or empty: auto
    if choice not in _CHOICES:
        raise ValueError(f"{DEVICE_ENV} must be one of {' | '.join(_CHOICES)}; got {raw!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}=cuda but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}); use cpu or auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def seed_everything(seed=0):
    """Seed Python's, PyTorch's (CPU and CUDA) random generators; return a seeded CPU generator.

    Args:
        seed: a non-negative int.

    Returns:
        torch.Generator: a CPU generator seeded with ``seed``, for ``torch.randn(..., generator=g)``.

    >>> g = seed_everything(0)
    >>> torch.randn(2, generator=g).shape
    torch.Size([2])
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def randn(*shape, generator, device=None, dtype=torch.float32):
    """Standard-normal tensor drawn on the CPU from ``generator``, then moved to ``device``.

    Drawing on the CPU makes the numbers identical on every device.

    >>> randn(2, 3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3])
    """
    return torch.randn(*shape, generator=generator, dtype=dtype).to(device or "cpu")
