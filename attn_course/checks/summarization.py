"""Checks of lesson 14 (summarization): ROUGE-1 F1 and word attention within each sentence."""
import collections
import math
import numbers
import random

import torch

from ..apps import summarization
from .core import CheckFailure, call_learner, expect_tensor, forbids
from .remote import type_name
from .tripwire import package


def _rouge_hint(candidate, reference, got):
    overlap_unclipped = sum(1 for w in candidate if w in reference)
    if candidate and reference:
        p, r = overlap_unclipped / len(candidate), overlap_unclipped / len(reference)
        unclipped = 2 * p * r / (p + r) if p + r else 0.0
        clipped_p = sum((collections.Counter(candidate) & collections.Counter(reference)).values()) / len(candidate)
        clipped_r = clipped_p * len(candidate) / len(reference)
        if abs(got - unclipped) < 1e-9:
            return " Every repeat of a candidate word counted: clip each word's count at its count in the reference."
        if abs(got - clipped_p) < 1e-9:
            return " That is the precision (overlap / candidate length); ROUGE-1 F1 is 2PR / (P + R)."
        if abs(got - clipped_r) < 1e-9:
            return " That is the recall (overlap / reference length); ROUGE-1 F1 is 2PR / (P + R)."
    return ""


@forbids(*package(summarization.rouge_1_f1, summarization.rouge_n_f1))
def check_rouge_1_f1(fn, thorough=False, seed=140):
    """Check ``fn(candidate, reference) -> float``, ROUGE-1 F1 of two token lists, on worked examples.

    ``thorough`` adds empty sides, no overlap, identical lists, clipping on either side and 200 random
    pairs compared with ``summarization.rouge_1_f1``. Raises ``CheckFailure`` (type, error, values).
    """
    cases = list(_ROUGE_CASES)
    if thorough:
        cases += _ROUGE_THOROUGH
        rng = random.Random(seed)
        words = "the a police said vote pence trump court ban of in on".split()
        for _ in range(200):
            cand = [rng.choice(words) for _ in range(rng.randint(1, 12))]
            ref = [rng.choice(words) for _ in range(rng.randint(1, 12))]
            cases.append((cand, ref, summarization.rouge_1_f1(cand, ref), "random word lists"))
    for candidate, reference, expected, what in cases:
        case = f"candidate {candidate}, reference {reference} ({what})"
        got = call_learner(fn, (list(candidate), list(reference)), case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise CheckFailure("type", f"{case}: ROUGE-1 F1 must be a number (float); got {type_name(got)}"
                                       + (" (did you forget `return`?)" if got is None else ""))
        if not math.isfinite(got) or abs(got - expected) > 1e-6:
            raise CheckFailure("values", f"{case}: expected ROUGE-1 F1 {expected:.4f}; got {got:.4f}."
                                         + _rouge_hint(candidate, reference, got))


def _word_attention_cases(thorough, g):
    """(label, word_scores, h_words, key_padding_mask)."""
    def make(B, N, T, D, lengths, dtype=torch.float32, scale=1.0):
        scores = (torch.randn(B, N, T, generator=g, dtype=torch.float64) * scale).to(dtype)
        h_words = torch.randn(B, N, T, D, generator=g, dtype=torch.float64).to(dtype)
        mask = torch.ones(B, N, T, dtype=torch.bool)
        for b, row in enumerate(lengths):
            for i, n_words in enumerate(row):
                mask[b, i, :n_words] = False
        return scores, h_words, mask
    cases = [("2 articles x 3 sentences x 4 words, padding words", *make(2, 3, 4, 5, [[4, 2, 3], [1, 4, 2]]))]
    if thorough:
        cases += [("a padding sentence (all its words are padding)", *make(2, 3, 5, 4, [[5, 3, 0], [2, 0, 0]])),
                  ("float64, N=4, T=6", *make(3, 4, 6, 3, [[6, 1, 2, 3], [4, 4, 0, 0], [1, 1, 1, 1]], torch.float64)),
                  ("large scores (x 50)", *make(1, 3, 4, 2, [[4, 3, 2]], scale=50.0)),
                  ("no padding at all", *make(2, 2, 3, 4, [[3, 3], [3, 3]]))]
    return cases


@forbids(*package(summarization.word_attention))
def check_word_attention(fn, thorough=False, seed=141):
    """Check ``fn(word_scores (B, N, T), h_words (B, N, T, D), key_padding_mask (B, N, T))``.

    Expects ``(sentence_vectors (B, N, D), word_weights (B, N, T))`` equal to
    ``summarization.word_attention``: a softmax within each sentence, padding words at weight 0, a
    padding sentence all zeros. Raises ``CheckFailure`` (type, shape, dtype, finite, mask,
    normalisation, values, error).
    """
    g = torch.Generator().manual_seed(seed)
    for case, scores, h_words, mask in _word_attention_cases(thorough, g):
        got = call_learner(fn, (scores.clone(), h_words.clone(), mask.clone()), case)
        expected_vectors, expected_weights = summarization.word_attention(scores, h_words, mask)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (sentence_vectors, word_weights); got "
                                       f"{type_name(got)}" + (f" of length {len(got)}" if isinstance(got, tuple) else ""))
        vectors, weights = got
        for name, actual, expected, legend in (("word_weights", weights, expected_weights, "(B, N, T)"),
                                               ("sentence_vectors", vectors, expected_vectors, "(B, N, D)")):
            if (not isinstance(actual, torch.Tensor) or actual.shape != expected.shape
                    or actual.dtype != expected.dtype):
                expect_tensor(name, actual, expected, case, legend=legend)       # raises type, shape or dtype
        if not torch.isfinite(weights).all():
            raise CheckFailure("finite", f"{case}: word_weights contain NaN or inf. A sentence with no real word "
                                         f"makes a softmax over only -inf: give it zero weights.")
        if (weights[mask].abs() > 1e-6).any():
            b, i, t = (weights.abs() > 1e-6).logical_and(mask).nonzero()[0].tolist()
            raise CheckFailure("mask", f"{case}: padding word {t} of sentence {i} in article {b} has weight "
                                       f"{weights[b, i, t].item():.4f}; padding (key_padding_mask True) must get 0.")
        real_sentence = ~mask.all(-1)                                             # (B, N)
        sums = weights.sum(-1)                                                    # (B, N)
        bad = real_sentence & ((sums - 1).abs() > 1e-4)
        if bad.any():
            b, i = bad.nonzero()[0].tolist()
            article_sum = weights[b].sum().item()
            msg = (f"{case}: the word weights of each sentence must sum to 1 over its T words (a softmax within "
                   f"the sentence, dim=-1); sentence {i} of article {b} sums to {sums[b, i].item():.4f}.")
            if abs(article_sum - 1) < 1e-4:
                msg += (" The weights of the whole article sum to 1 instead: the softmax ran across all the "
                        "article's words, so sentences compete for one unit of weight.")
            raise CheckFailure("normalisation", msg)
        if (weights[~real_sentence].abs() > 1e-6).any():
            raise CheckFailure("mask", f"{case}: a padding sentence must get all-zero word weights.")
        expect_tensor("word_weights", weights, expected_weights, case, legend="(B, N, T)")
        expect_tensor("sentence_vectors", vectors, expected_vectors, case, legend="(B, N, D)")


_ROUGE_CASES = [
    ("the cat sat on the mat".split(), "the cat is on the mat".split(), 5 / 6,
     "5 of 6 words shared ('the' twice)"),
    ("the the the the".split(), "the cat".split(), 2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2),
     "'the' 4 times in the candidate but once in the reference: count it once (clipping)"),
]


_ROUGE_THOROUGH = [
    ([], "a b".split(), 0.0, "an empty candidate"),
    ("a b".split(), [], 0.0, "an empty reference"),
    ("x y z".split(), "a b c".split(), 0.0, "no word in common"),
    ("pence casts the tie breaking vote".split(), "pence casts the tie breaking vote".split(), 1.0, "identical"),
    ("police said police said".split(), "police said".split(), 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0),
     "repeated words on one side only"),
    ("a a b".split(), "a a a b b".split(), 2 * 1.0 * (3 / 5) / (1.0 + 3 / 5), "clipping on the reference side"),
]
