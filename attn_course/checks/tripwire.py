"""The tripwire: an exercise answered by calling the implementation it asks for fails its check.

Each check declares, with ``@forbids(...)`` (``attn_course.checks.core``), what its exercise asks the
learner to write: the package's reference (``attn_course.attention.softmax_with_temperature`` for
the softmax exercise) and PyTorch's own version where there is one (``SOFTMAX``, ``SDPA``, ``MHA``
below). While the tripwire is armed (``enable()``, the default), ``checks.core.call_learner``
runs the learner's function under ``watch(rules)``, a ``sys.setprofile`` hook that records the
first call of a forbidden function, by its code object (Python functions, whatever name or alias
the learner used) or by its name and owner (PyTorch's C functions and ``Tensor`` methods). The
check then fails with kind ``reference``. It is armed by default, so the rule is the same in the
learner's notebook and in the classroom grader (which arms it again before a submission runs): an
answer the notebook's check accepts is not refused when graded. The package's own tests of the
references turn it off (``enable(False)``), since there the reference is the function under test.

The rules name PyTorch's aten operators too (``aten._softmax``, ``aten._safe_softmax``, the fused
attention kernels): they are recorded when they run, below autograd, so ``torch._softmax``,
``torch.ops.aten._softmax`` or any other route to the same operator is caught.

What it does not catch: code copied out of the reference (``exec(inspect.getsource(...))``), calls
made from another thread, and a submission that switches the tripwire off on purpose: it runs in the
learner's process. It is a rule made visible, not a security boundary; the score itself is decided
in another process (``checks.remote``).
"""
import contextlib
import sys

import torch
from torch import nn
from torch._ops import OpOverload, OpOverloadPacket
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from .. import attention, heads

_enabled = True

SOFTMAX = [("torch.softmax", torch.softmax), ("torch.Tensor.softmax", torch.Tensor.softmax),
           ("torch.nn.functional.softmax", F.softmax), ("torch.special.softmax", torch.special.softmax),
           ("torch.log_softmax", torch.log_softmax), ("torch.Tensor.log_softmax", torch.Tensor.log_softmax),
           ("torch.nn.functional.log_softmax", F.log_softmax), ("torch.nn.Softmax", nn.Softmax.forward)]
"""PyTorch's softmax in all its spellings: what the softmax exercise forbids."""
SDPA = [("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention)]
"""PyTorch's fused attention: what every exercise that builds attention forbids."""
MHA = [("torch.nn.MultiheadAttention", nn.MultiheadAttention.forward),
       ("torch.nn.functional.multi_head_attention_forward", F.multi_head_attention_forward),
       ("attn_course.MultiHeadAttention", attention.MultiHeadAttention.forward),
       ("attn_course.heads.multi_head_attention", heads.multi_head_attention)]


def _operators(*names):
    """Rules for aten operators: ``("aten.<name>", torch.ops.aten.<name>)`` for those this PyTorch has."""
    found = []
    for name in names:
        try:
            found.append((f"aten.{name}", getattr(torch.ops.aten, name)))
        except (AttributeError, RuntimeError):
            pass
    return found


# The operators the functions above reach, whatever spelling called them (torch._softmax, torch.ops.aten...).
SOFTMAX += _operators("_softmax", "_log_softmax")
SDPA += _operators("_safe_softmax", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
                   "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable")
MHA += _operators("_native_multi_head_attention")
"""Multi-head attention, PyTorch's and the course's: what the exercises that build attention forbid."""


def package(*functions):
    """Rules for the course's own functions: ``[("module.qualname", function), ...]``."""
    return [(f"{f.__module__}.{f.__qualname__}", f) for f in functions]


def enable(on=True):
    """Arm (or disarm) the tripwire in this process. Armed by default; the classroom grader arms it again
    before a submission runs."""
    global _enabled
    _enabled = bool(on)


@contextlib.contextmanager
def disarmed():
    """Run a block with the tripwire off, then restore it: for a check run on the package's own broken
    implementations (lesson 08's line-up), whose calls of PyTorch's softmax are part of the code under
    examination, not an answer that skips the exercise.

    >>> with disarmed():
    ...     enabled()
    False
    """
    global _enabled
    was, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = was


def enabled():
    """Whether the tripwire is armed in this process."""
    return _enabled


def _builtin_key(fn):
    """(name, owner) of a C function; every Tensor method shares the owner ``torch.Tensor``."""
    owner = getattr(fn, "__self__", None)
    return getattr(fn, "__name__", None), torch.Tensor if isinstance(owner, torch.Tensor) else owner


class _Operators(TorchDispatchMode):
    """Records the first forbidden aten operator that runs (below autograd: every route to it passes here)."""

    def __init__(self, watch):
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.watch.hit is None:
            self.watch.hit = self.watch.ops.get(func.overloadpacket._qualified_op_name)
        return func(*args, **(kwargs or {}))


_OP_CALLS = {OpOverloadPacket.__call__.__code__, OpOverload.__call__.__code__}


def _op_name(op):
    packet = op if isinstance(op, OpOverloadPacket) else getattr(op, "overloadpacket", None)
    return getattr(packet, "_qualified_op_name", None)


class Watch:
    """While active, remembers in ``hit`` the label of the first forbidden function or operator called.

    Python functions are known by their code object, C functions by name and owner (``sys.setprofile``);
    aten operators (``torch.ops.aten.*``) both when called from Python and when they run (a
    ``TorchDispatchMode``), so an alias such as ``torch._softmax`` reaches the same rule.
    """

    def __init__(self, forbidden):
        self.codes, self.builtins, self.ops, self.hit, self._mode = {}, {}, {}, None, None
        for label, fn in forbidden:
            code = getattr(fn, "__code__", None)
            if isinstance(fn, (OpOverloadPacket, OpOverload)):
                self.ops[_op_name(fn)] = label
            elif code is not None:
                self.codes[code] = label
            elif isinstance(fn, type(torch.Tensor.softmax)):                 # a method descriptor
                self.builtins[(fn.__name__, torch.Tensor)] = label
            else:
                self.builtins[_builtin_key(fn)] = label
        self.names = {name for name, _ in self.builtins}

    def _profile(self, frame, event, arg):
        if self.hit is not None:
            return
        if event == "call":
            self.hit = self.codes.get(frame.f_code)
            if self.hit is None and self.ops and frame.f_code in _OP_CALLS:
                self.hit = self.ops.get(_op_name(frame.f_locals.get("self")))
        elif event == "c_call" and getattr(arg, "__name__", None) in self.names:
            try:
                self.hit = self.builtins.get(_builtin_key(arg))
            except TypeError:                                            # an unhashable owner: not ours
                pass

    def __enter__(self):
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        if self.ops:
            self._mode = _Operators(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        return False


class _Idle(contextlib.nullcontext):
    hit = None


def watch(rules):
    """A context manager whose ``hit`` names the first call of a function in ``rules``
    (``[(label, callable)]``, a check's ``forbidden``), when the tripwire is armed; idle otherwise."""
    if not _enabled or not rules:
        return _Idle()
    return Watch(rules)
