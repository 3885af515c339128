"""Checks of lesson 12 (image captioning): the soft-attention step."""

import torch

from .. import pooling, scoring
from ..apps import captioning
from ..apps.captioning import soft_attention
from .core import CheckFailure, call_learner, expect_rows_sum_to_one, expect_tensor, forbids
from .remote import type_name
from .tripwire import SDPA, package


@forbids(*package(captioning.soft_attention, scoring.additive_scores, pooling.attention_pool), *SDPA)
def check_soft_attention(fn, thorough=False, seed=120):
    """Check ``fn(query (B, Hd), features (B, S, C), w_query (A, Hd), w_key (A, C), v (A,))``.

    It must return ``(context (B, C), attn_weights (B, S))``.
    """
    cases = [("one image: Hd=4, S=6, C=3, A=5", 1, 4, 6, 3, 5, torch.float32)]
    if thorough:
        cases += [("batch of 3: Hd=8, S=10, C=4, A=6", 3, 8, 10, 4, 6, torch.float32),
                  ("float64, batch of 2: Hd=5, S=7, C=9, A=3", 2, 5, 7, 9, 3, torch.float64)]
    g = torch.Generator().manual_seed(seed)
    for case, B, Hd, S, C, A, dtype in cases:
        args = [torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
                for shape in ((B, Hd), (B, S, C), (A, Hd), (A, C), (A,))]
        args[4] = args[4] * 3                                                  # peaked enough to tell
        got = call_learner(fn, tuple(a.clone() for a in args), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (context, attn_weights); got {type_name(got)}")
        context, attn_weights = got
        ref_context, ref_weights = soft_attention(*args)
        if not isinstance(attn_weights, torch.Tensor) or attn_weights.shape != ref_weights.shape:
            expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, S)")
        sums = attn_weights.detach().sum(0)
        if B > 1 and torch.allclose(sums, torch.ones_like(sums), atol=1e-4) or B == 1 and torch.allclose(
                attn_weights.detach(), torch.ones_like(attn_weights)):
            raise CheckFailure("normalisation", f"{case}: each image's attn_weights must sum to 1 over its S "
                                                f"positions (dim=-1); yours sum to 1 over the batch (dim=0). "
                                                f"Apply softmax over dim=-1.")
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, S)",
                      hint=lambda a, e: "attn_scores = tanh(query @ w_query.T (one row per image, broadcast "
                                        "over S) + features @ w_key.T) @ v.")
        expect_tensor("context", context, ref_context, case, legend="(B, C)",
                      hint=lambda a, e: "context[b] = sum over s of attn_weights[b, s] * features[b, s].")


# ------------------------------------------------------------------------------- the greedy decoding loop

class _ScriptedStep:
    """A decoder step with a script: fed its own previous word, row b writes ``plan[b, t]`` at step t.

    The state is ``(t (B,) int64, memory (B, 3))``: a step counter and a payload that must travel
    untouched. Fed any other word than the one it wrote (or a stale state), a row writes something
    else, so a loop that does not feed back its argmax, or does not pass the state on, is seen.
    ``attn_weights`` of step t are a fixed random softmax per row and step.
    """

    def __init__(self, plan, S, generator):
        B, T = plan.shape
        self.plan = plan                                                           # (B, T) word ids
        self.weights = torch.softmax(3 * torch.randn(B, T + 2, S, generator=generator), -1)   # (B, T + 2, S)
        self.noise = 0.5 * torch.rand(B, T + 2, len(captioning.WORDS), generator=generator)

    def start(self):
        B = self.plan.shape[0]
        return torch.zeros(B, dtype=torch.long), torch.arange(3 * B, dtype=torch.float32).reshape(B, 3)

    def __call__(self, word, state):
        t, memory = state
        rows = torch.arange(len(word))
        step = t.clamp(max=self.plan.shape[1] - 1)
        previous = torch.where(t == 0, torch.full_like(t, captioning.BOS),
                               self.plan[rows, (step - 1).clamp(min=0)])               # what it wrote last
        on_script = (word == previous) & torch.equal(memory, self.start()[1])
        chosen = torch.where(on_script, self.plan[rows, step], (previous + 3 + t) % 10)   # off script: a digit
        logits = self.noise[rows, t.clamp(max=self.noise.shape[1] - 1)].clone()
        logits[rows, chosen] += 4.0                                                  # (B, V), argmax = chosen
        attn_weights = self.weights[rows, t.clamp(max=self.weights.shape[1] - 1)]     # (B, S)
        return logits, (t + 1, memory.clone()), attn_weights


def _decode_slip(step, state, batch_size, max_len, slip):
    """The reference loop with one usual slip, to name it in a hint."""
    word = torch.full((batch_size,), captioning.BOS, dtype=torch.long)
    first_state = state
    running = torch.ones(batch_size, dtype=torch.bool)
    words, weights = [], []
    for _ in range(max_len):
        logits, next_state, attn_weights = step(word, first_state if slip == "state" else state)
        state = next_state
        chosen = logits.argmax(-1)
        if slip != "bos":
            word = chosen
        ended_now = running & (chosen == captioning.EOS)
        if slip == "eos":                                                           # the <eos> blanked too
            running = running & ~ended_now
        words.append(chosen if slip == "no_stop" else chosen.masked_fill(~running, captioning.PAD))
        weights.append(attn_weights if slip in ("weights", "no_stop") else attn_weights * running[:, None])
        if slip != "eos":
            running = running & ~ended_now
        if slip == "first_end" and not running.all():
            break
    pad = max_len - len(words)
    return (torch.nn.functional.pad(torch.stack(words, 1), (0, pad), value=captioning.PAD),
            torch.nn.functional.pad(torch.stack(weights, 1), (0, 0, 0, pad)))


_DECODE_SLIPS = {
    "no_stop": "after a caption's <eos>, write PAD (-1) in its remaining places and weights 0: keep a (B,) "
               "bool 'running' and use word.masked_fill(~running, PAD)",
    "eos": "the <eos> itself is part of the caption: write the word first, then mark its row as ended "
           "(running = running & (word != EOS))",
    "bos": "feed back the word just chosen (its argmax) as the next step's input; only the first step gets <bos>",
    "state": "pass the state each step returns into the next step, not the first state every time",
    "first_end": "stop only when EVERY caption has ended (not running.any()); stopping when the first one ends cuts "
                 "the others short",
    "weights": "the attn_weights of the places after a caption's <eos> must be 0 (multiply by running[:, None])",
}


def _decode_cases(thorough, g):
    E = captioning.EOS
    plan = torch.tensor([[3, 1, 4, E, 5, 9, 2],        # ends at word 4, then goes on writing digits
                         [2, 7, E, 1, 8, 2, 8],        # ends at word 3
                         [E, 6, 6, 6, 6, 6, 6],        # ends at once: an empty caption
                         [9, 9, 8, 8, 7, 7, 6]])       # never ends within max_len = 6
    yield "B=4 captions of 3, 2, 0 and 6+ words, max_len=6, S=5", plan, 6, 5
    if thorough:
        yield "B=3, every caption ends before max_len=8 (loop may stop early), S=7", \
            torch.tensor([[1, E, 0, 0, 0, 0, 0, 0, 0], [4, 4, 4, E, 1, 1, 1, 1, 1], [0, 5, E, 2, 2, 2, 2, 2, 2]]), 8, 7
        yield "B=1, max_len=1: one word, S=3", torch.tensor([[7, E, 1]]), 1, 3
        plan = torch.randint(0, 10, (16, 7), generator=g)
        plan[torch.arange(16), torch.randint(0, 7, (16,), generator=g)] = E
        yield "B=16 random captions, max_len=6, S=9", plan, 6, 9


@forbids(("attn_course.apps.captioning.greedy_decode", captioning.greedy_decode),
         ("attn_course.apps.captioning.CaptionDecoder.generate", captioning.CaptionDecoder.generate))
def check_greedy_decode(fn, thorough=False, seed=121):
    """Check ``fn(step, state, batch_size, max_len) -> (words (B, max_len) int64, attn_weights (B, max_len, S))``.

    ``step(word (B,), state) -> (logits (B, V), next state, attn_weights (B, S))`` is a scripted decoder
    (``_ScriptedStep``) that writes its plan only when fed its own previous word and the state it returned.
    Failures: ``type``, ``shape``, ``dtype``; ``values`` with a hint naming the usual slip (no stop at
    ``<eos>``, the ``<eos>`` blanked, ``<bos>`` fed at every step, the first state reused, stopping when the
    first caption ends, weights kept after ``<eos>``) when exactly one matches.
    """
    g = torch.Generator().manual_seed(seed)
    for case, plan, max_len, S in _decode_cases(thorough, g):
        step = _ScriptedStep(plan, S, g)
        expected = captioning.greedy_decode(step, step.start(), len(plan), max_len)
        got = call_learner(fn, (step, step.start(), len(plan), max_len), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (words, attn_weights); got {type_name(got)}")
        slips = {slip: _decode_slip(step, step.start(), len(plan), max_len, slip) for slip in _DECODE_SLIPS}

        def hint(which):
            def named(actual, reference):
                matches = [_DECODE_SLIPS[slip] for slip, answer in slips.items()
                           if actual.shape == answer[which].shape and torch.allclose(
                               actual.detach().cpu().to(answer[which].dtype), answer[which], atol=1e-6)
                           and not torch.equal(answer[which], reference.cpu())
                           and (which == 0 or torch.equal(answer[0], expected[0]))]   # weights: words were right
                if len(matches) == 1:
                    return matches[0][0].upper() + matches[0][1:] + "."
                return ("Start from <bos>; at each step call step(word, state), take the argmax, feed it back, "
                        "and after a caption's <eos> write PAD and weights 0.")
            return named
        expect_tensor("words", got[0], expected[0], case, "(B, max_len)", hint=hint(0))
        expect_tensor("attn_weights", got[1], expected[1], case, "(B, max_len, S)", hint=hint(1))
