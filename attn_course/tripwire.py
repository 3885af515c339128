"""The grading tripwire: an exercise answered by calling the implementation it asks for scores 0.

Each check in ``attn_course.checks`` names, in ``FORBIDDEN``, what its exercise asks the learner to
write: the package's reference (``attn_course.attention.softmax_with_temperature`` for the softmax
exercise) and PyTorch's own version where there is one (``torch.softmax``,
``torch.nn.functional.scaled_dot_product_attention``, ``torch.nn.MultiheadAttention``). While the
classroom grader runs a submission (``enable()``), ``checks._call`` runs the learner's function
under ``watch(frame)`` (``frame``: the check calling it), a ``sys.setprofile`` hook that records
the first call of a forbidden function, by its code object (Python functions, whatever name or
alias the learner used) or by its name and owner (PyTorch's C functions and ``Tensor`` methods).
The check then fails with kind ``reference``. Off by default, so lessons and unit tests behave as
before.

What it does not catch: code copied out of the reference (``exec(inspect.getsource(...))``), calls
made from another thread, and a submission that switches the tripwire off on purpose. It is a rule
made visible, not a security boundary.
"""
import contextlib
import sys

import torch
from torch import nn
from torch.nn import functional as F

from . import attention, data, hard, heads, scoring, self_cross, transformer

_enabled = False

_SOFTMAX = [("torch.softmax", torch.softmax), ("torch.Tensor.softmax", torch.Tensor.softmax),
            ("torch.nn.functional.softmax", F.softmax), ("torch.special.softmax", torch.special.softmax),
            ("torch.log_softmax", torch.log_softmax), ("torch.Tensor.log_softmax", torch.Tensor.log_softmax),
            ("torch.nn.functional.log_softmax", F.log_softmax), ("torch.nn.Softmax", nn.Softmax.forward)]
_SDPA = [("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention)]
_MHA = [("torch.nn.MultiheadAttention", nn.MultiheadAttention.forward),
        ("torch.nn.functional.multi_head_attention_forward", F.multi_head_attention_forward),
        ("attn_course.MultiHeadAttention", attention.MultiHeadAttention.forward),
        ("attn_course.heads.multi_head_attention", heads.multi_head_attention)]


def _package(*functions):
    return [(f"{f.__module__}.{f.__qualname__}", f) for f in functions]


FORBIDDEN = {
    "check_pad_batch": _package(data.pad_batch),
    "check_embedding_lookup": [("torch.nn.functional.embedding", F.embedding),
                               ("torch.nn.Embedding", nn.Embedding.forward)],
    "check_scaled_dot_scores": _package(scoring.scaled_dot_scores, scoring.dot_scores, scoring.general_scores),
    "check_additive_scores": _package(scoring.additive_scores, scoring.concat_scores),
    "check_softmax_with_temperature": _package(attention.softmax_with_temperature, attention.masked_softmax)
                                      + _SOFTMAX,
    "check_attention": _package(attention.scaled_dot_product_attention, attention.attention_weights)
                       + _SDPA + _MHA,
    "check_attention_weights": _package(attention.attention_weights, attention.scaled_dot_product_attention)
                               + _SDPA + _MHA,
    "check_self_attention": _package(self_cross.self_attention, self_cross.cross_attention, self_cross._attend)
                            + _MHA,
    "check_cross_attention": _package(self_cross.cross_attention, self_cross.self_attention, self_cross._attend)
                             + _MHA,
    "check_token_embedding": _package(data.token_embedding),
    "check_scaled_dot_product_attention": _package(attention.scaled_dot_product_attention)
                                          + _SDPA + _MHA,
    "check_causal_mask": _package(attention.causal_mask),
    "check_split_heads": _package(heads.split_heads),
    "check_merge_heads": _package(heads.merge_heads),
    "check_multi_head_attention": list(_MHA),
    "check_hard_attention_argmax": _package(hard.hard_attention),
    "check_hard_attention": _package(hard.hard_attention),
    "check_gumbel_softmax_st": _package(hard.gumbel_softmax_st) + [("torch.nn.functional.gumbel_softmax",
                                                                    F.gumbel_softmax)],
    "check_masked_softmax": _package(attention.masked_softmax),
    "check_transformer_block": [("attn_course.transformer.TransformerBlock", transformer.TransformerBlock.forward),
                                ("torch.nn.TransformerEncoderLayer", nn.TransformerEncoderLayer.forward)],
    "check_positional_encoding": [("attn_course.transformer.SinusoidalPositionalEncoding",
                                   transformer.SinusoidalPositionalEncoding.forward)],
}
"""check function name -> [(label shown to the learner, forbidden callable)]."""


def application_rules():
    """``FORBIDDEN`` entries of the application lessons' checks (``attn_course.apps``), imported on demand:
    the application modules import the checks, which import this module."""
    from .apps import captioning, classification, generation, speech, summarization, translation, vision
    return {
        "check_additive_attention": _package(translation.additive_attention, scoring.additive_scores) + _SDPA,
        "check_seq2seq_forward": [("attn_course.apps.translation.Seq2Seq", translation.Seq2Seq.forward)],
        "check_attention_pooling": _package(classification.attention_pooling) + _SDPA + _MHA,
        "check_spatial_attention_pool": _package(vision.spatial_attention_pool) + _SDPA + _MHA,
        "check_attention_map": _package(vision.attention_map),
        "check_soft_attention": _package(captioning.soft_attention, scoring.additive_scores) + _SDPA,
        "check_attention_pool": _package(speech.attention_pool) + _SDPA + _MHA,
        "check_subsample_padding_mask": _package(speech.subsample_padding_mask),
        "check_rouge_1_f1": _package(summarization.rouge_1_f1, summarization.rouge_n_f1),
        "check_word_attention": _package(summarization.word_attention),
        "check_sample_next": _package(generation.sample_next),
        "check_lm_forward": [("attn_course.apps.generation.CharTransformer", generation.CharTransformer.forward)],
    }


def enable(on=True):
    """Arm (or disarm) the tripwire in this process; the classroom grader arms it before a submission runs.

    Arming adds the application lessons' rules (``application_rules``) to ``FORBIDDEN``."""
    global _enabled
    if on:
        FORBIDDEN.update(application_rules())
    _enabled = bool(on)


def enabled():
    """Whether the tripwire is armed in this process."""
    return _enabled


def _builtin_key(fn):
    """(name, owner) of a C function; every Tensor method shares the owner ``torch.Tensor``."""
    owner = getattr(fn, "__self__", None)
    return getattr(fn, "__name__", None), torch.Tensor if isinstance(owner, torch.Tensor) else owner


class Watch:
    """While active, remembers in ``hit`` the label of the first forbidden function called."""

    def __init__(self, forbidden):
        self.codes, self.builtins, self.hit = {}, {}, None
        for label, fn in forbidden:
            code = getattr(fn, "__code__", None)
            if code is not None:
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
        elif event == "c_call" and getattr(arg, "__name__", None) in self.names:
            try:
                self.hit = self.builtins.get(_builtin_key(arg))
            except TypeError:                                            # an unhashable owner: not ours
                pass

    def __enter__(self):
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)
        return False


class _Idle(contextlib.nullcontext):
    hit = None


def watch(frame):
    """A context manager whose ``hit`` names a forbidden call, if the tripwire is armed for the check
    that ``frame`` belongs to (the first of ``frame`` and its callers named in ``FORBIDDEN``)."""
    if not _enabled:
        return _Idle()
    for _ in range(4):
        if frame is None or frame.f_code.co_name in FORBIDDEN:
            break
        frame = frame.f_back
    forbidden = FORBIDDEN.get(frame.f_code.co_name) if frame is not None else None
    return Watch(forbidden) if forbidden else _Idle()
