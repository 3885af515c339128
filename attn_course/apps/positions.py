"""Length generalisation (lesson 17): one small causal transformer, five ways to tell it where a token is.

The task, **offset copy**: a sequence of random tokens; at every position t >= k the model must output
the token at t - k (k = ``offset``, 3 by default). The answer depends on *where* a token is relative to
the current one and not at all on *what* the tokens are, so the task isolates positional information.
Models train on sequences of one length (16) and are tested on longer ones (32, 64, 128): a position
scheme that encodes relative offsets can carry over; one that learned absolute positions 0..15 meets
positions it has never seen.

The five kinds of ``PositionModel`` (the same blocks, the same width, the same training):

- ``"none"``: no positional information besides the causal mask;
- ``"sinusoidal"``: Vaswani et al. 2017, section 3.5, added to the embeddings;
- ``"learned"``: one trained vector per position (BERT, GPT-2), added to the embeddings;
- ``"rope"``: queries and keys rotated by position in every head (Su et al. 2021; ``rotary.Rotary``);
- ``"alibi"``: a per-head distance penalty on the scores (Press et al. 2022; ``rotary.ALiBi``).

Shape legend: B batch, L sequence length, E d_model, V vocabulary.
"""
import torch
from torch import nn
from torch.nn import functional as F

from ..rotary import ALiBi, Rotary
from ..training import fit, replayable
from ..transformer import LearnedPositionalEncoding, SinusoidalPositionalEncoding, TransformerBlock

KINDS = ("none", "sinusoidal", "learned", "rope", "alibi")
IGNORE = -100
"""The target of the first ``offset`` positions, which have no token ``offset`` places back
(``F.cross_entropy``'s default ``ignore_index``)."""


def offset_copy_batch(batch_size, length, vocab_size=16, offset=3, generator=None):
    """A batch of the offset-copy task: ``(ids (B, L) int64, targets (B, L) int64)``.

    ``ids`` are uniform over 0..V-1; ``targets[:, t] = ids[:, t - offset]`` for t >= offset and
    ``IGNORE`` (-100) before.

    Raises:
        ValueError: ``length`` not greater than ``offset``, or a non-positive size.

    >>> ids, targets = offset_copy_batch(1, 5, offset=2, generator=torch.Generator().manual_seed(0))
    >>> bool((targets[0, 2:] == ids[0, :3]).all()), targets[0, :2].tolist()
    (True, [-100, -100])
    """
    if min(batch_size, vocab_size, offset) <= 0 or length <= offset:
        raise ValueError(f"need batch_size, vocab_size, offset > 0 and length > offset; got batch_size={batch_size}, "
                         f"length={length}, vocab_size={vocab_size}, offset={offset}")
    ids = torch.randint(0, vocab_size, (batch_size, length), generator=generator)
    targets = torch.full_like(ids, IGNORE)
    targets[:, offset:] = ids[:, :-offset]                                     # (B, L - offset)
    return ids, targets


class PositionModel(nn.Module):
    """A small decoder-only transformer whose only difference across ``kind`` is how it knows positions.

    ``embedding -> [added positions] -> num_layers pre-LN TransformerBlocks (causal; [RoPE or ALiBi in
    every head]) -> LayerNorm -> logits``.

    Args:
        kind: one of ``KINDS``: "none", "sinusoidal", "learned", "rope", "alibi".
        vocab_size: V. d_model: E. num_heads: H. num_layers: blocks. max_len: the longest sequence
            accepted (the learned table has this many rows; rows never seen in training stay random).

    Forward args:
        ids: (B, L) int64, L <= max_len.

    Returns:
        logits (B, L, V): position t predicts from ``ids[:, :t + 1]`` only.

    Raises:
        ValueError: an unknown ``kind``.

    >>> PositionModel("rope")(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, kind, vocab_size=16, d_model=32, num_heads=2, num_layers=2, max_len=128):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        self.kind, self.max_len = kind, max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        added = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEncoding}.get(kind)
        self.positions = added(max_len, d_model) if added else nn.Identity()
        in_heads = {"rope": Rotary(), "alibi": ALiBi(num_heads)}.get(kind)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, 4 * d_model, norm_first=True,
                                                     positional=in_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, ids, need_weights=False):
        x = self.positions(self.embedding(ids))                                # (B, L) -> (B, L, E)
        all_weights = []
        for block in self.blocks:
            x, attn_weights = block(x, is_causal=True, need_weights=True)      # (B, L, E), (B, H, L, L)
            all_weights.append(attn_weights)
        logits = self.lm_head(self.norm(x))                                    # (B, L, E) -> (B, L, V)
        return (logits, all_weights) if need_weights else logits


@replayable
def train_position_model(model, steps=400, batch_size=64, length=16, offset=3, lr=3e-3, seed=0, progress=True):
    """AdamW on fresh offset-copy batches of one ``length``; returns the training loss per step.

    Batches are drawn from ``torch.Generator().manual_seed(seed)`` and moved to the model's device.
    """
    device = next(model.parameters()).device
    vocab_size = model.lm_head.out_features
    g = torch.Generator().manual_seed(seed)
    batches = [offset_copy_batch(batch_size, length, vocab_size, offset, g) for _ in range(steps)]

    def batch_loss(batch):
        ids, targets = batch
        logits = model(ids.to(device))                                         # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE)

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return fit(model, batches, batch_loss, opt, desc=f"{model.kind}", progress=progress).step_loss


@torch.no_grad()
def copy_accuracy(model, length, offset=3, num_sequences=256, seed=1):
    """The share of positions t >= ``offset`` where the model's most likely token is ``ids[t - offset]``,
    on ``num_sequences`` fresh sequences of ``length`` (their own seeded generator)."""
    model.eval()
    device = next(model.parameters()).device
    vocab_size = model.lm_head.out_features
    ids, targets = offset_copy_batch(num_sequences, length, vocab_size, offset, torch.Generator().manual_seed(seed))
    predicted = model(ids.to(device)).argmax(-1).cpu()                        # (B, L)
    return (predicted[:, offset:] == targets[:, offset:]).float().mean().item()
