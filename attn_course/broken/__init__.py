"""Implementations that look right, run, and are wrong: material for the bug hunts.

Each function keeps the signature and the docstring of the reference it copies, word for word, and
differs from it by a small change that a real tutorial or a real code base has shipped. The names
do not say what is wrong: finding that out is the exercise. The answers live with the solutions.
"""
from .v2 import attention_weights_v2, pad_batch_v2, scaled_dot_scores_v2

__all__ = ["attention_weights_v2", "pad_batch_v2", "scaled_dot_scores_v2"]
