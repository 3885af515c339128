"""Lesson 17's length-generalisation app: the offset-copy task, the five position schemes, training and scoring."""
import doctest

import pytest
import torch
from torch import nn

from attn_course.apps import positions
from attn_course.apps.positions import KINDS, PositionModel, copy_accuracy, offset_copy_batch, train_position_model


def test_docstring_examples_run():
    assert doctest.testmod(positions).failed == 0


def test_offset_copy_targets_are_the_tokens_offset_places_back():
    ids, targets = offset_copy_batch(4, 10, vocab_size=7, offset=3, generator=torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (4, 10) and ids.dtype == torch.long
    assert (targets[:, :3] == -100).all() and torch.equal(targets[:, 3:], ids[:, :7])
    assert ids.min() >= 0 and ids.max() < 7


@pytest.mark.parametrize("length, offset", [(3, 3), (2, 3)])
def test_offset_copy_needs_a_sequence_longer_than_the_offset(length, offset):
    with pytest.raises(ValueError, match="length > offset"):
        offset_copy_batch(2, length, offset=offset)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_causal_and_only_the_position_scheme_differs(kind):
    torch.manual_seed(0)
    model = PositionModel(kind, max_len=32).eval()
    ids = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 16                                      # only positions 7..11
    with torch.no_grad():
        logits, weights = model(ids, need_weights=True)
        later = model(changed)
    assert logits.shape == (2, 12, 16) and len(weights) == 2 and weights[0].shape == (2, 2, 12, 12)
    torch.testing.assert_close(logits[:, :7], later[:, :7])
    assert not torch.allclose(logits[:, 7:], later[:, 7:])
    names = {n for n, _ in model.named_parameters()}
    assert ("positions.position_embeddings.weight" in names) == (kind == "learned")


def test_without_positions_one_causal_layer_sees_the_past_as_a_set():
    """'none', one layer: the last output depends on which tokens came before, not on their order."""
    torch.manual_seed(0)
    ids, shuffled = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[3, 1, 2, 4]])
    model = PositionModel("none", num_layers=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, -1], model(shuffled)[:, -1])
    for kind in KINDS[1:]:
        other = PositionModel(kind, num_layers=1).eval()
        with torch.no_grad():
            assert not torch.allclose(other(ids)[:, -1], other(shuffled)[:, -1]), kind


def test_unknown_kind_is_refused_with_the_list():
    with pytest.raises(ValueError, match="rope"):
        PositionModel("rotary")


class Oracle(nn.Module):
    """Logits that put all mass on the token ``offset`` places back: accuracy 1 by construction."""

    def __init__(self, offset=3, vocab_size=16):
        super().__init__()
        self.offset, self.lm_head = offset, nn.Linear(1, vocab_size)

    def forward(self, ids):
        shifted = torch.roll(ids, self.offset, dims=1)
        return nn.functional.one_hot(shifted, self.lm_head.out_features).float()


def test_copy_accuracy_of_an_oracle_and_of_a_constant():
    assert copy_accuracy(Oracle(), 20) == 1.0
    constant = Oracle()
    constant.forward = lambda ids: torch.zeros(*ids.shape, 16)                       # always token 0
    assert 0.02 < copy_accuracy(constant, 40) < 0.12                                 # about 1/16


def test_training_learns_the_task_at_the_training_length():
    torch.manual_seed(0)
    model = PositionModel("learned", max_len=32)
    before = copy_accuracy(model, 16)
    losses = train_position_model(model, steps=150, progress=False)
    assert len(losses) == 150 and losses[-1] < 0.5 * losses[0]
    assert copy_accuracy(model, 16) > max(0.5, before + 0.3)
