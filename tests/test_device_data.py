"""Device selection, seeding, and the offline text pipeline: tokens -> ids -> padded batch."""
import random

import pytest
import torch

from attn_course import data, device
from attn_course.data import Vocab, pad_batch, tokenize
from attn_course.device import get_device, randn, seed_everything

from helpers import CUDA, DEVICES


# ----------------------------------------------------------------- get_device
@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu "])
def test_env_cpu(monkeypatch, value):
    monkeypatch.setenv("ATTN_COURSE_DEVICE", value)
    assert get_device() == torch.device("cpu")


def test_env_auto(monkeypatch):
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "auto")
    assert get_device() == torch.device("cuda" if CUDA else "cpu")


def test_env_unset_means_auto(monkeypatch):
    monkeypatch.delenv("ATTN_COURSE_DEVICE", raising=False)
    assert get_device() == torch.device("cuda" if CUDA else "cpu")


def test_auto_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "auto")
    assert get_device() == torch.device("cpu")


def test_auto_with_cuda_is_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "auto")
    assert get_device() == torch.device("cuda")
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "cuda")
    assert get_device() == torch.device("cuda")


def test_env_cuda_without_cuda_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="ATTN_COURSE_DEVICE=cuda.*is_available"):
        get_device()


@pytest.mark.skipif(not CUDA, reason="CUDA is not available")
def test_env_cuda_with_cuda(monkeypatch):
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "cuda")
    assert get_device().type == "cuda"
    assert torch.zeros(1, device=get_device()).is_cuda


@pytest.mark.parametrize("value", ["gpu", "tpu", "cuda:0", "mps"])
def test_env_bad_value_raises_with_value(monkeypatch, value):
    monkeypatch.setenv("ATTN_COURSE_DEVICE", value)
    with pytest.raises(ValueError) as info:
        get_device()
    msg = str(info.value)
    assert repr(value) in msg and "ATTN_COURSE_DEVICE" in msg
    assert all(choice in msg for choice in ("cpu", "cuda", "auto"))


def test_argument_overrides_env(monkeypatch):
    monkeypatch.setenv("ATTN_COURSE_DEVICE", "gpu")  # ignored: the argument wins
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'npu'"):
        get_device("npu")


# ----------------------------------------------------------------- seeding and randn
def test_seed_everything_makes_torch_randn_reproducible():
    seed_everything(123)
    a, r1 = torch.randn(4, 5), random.random()
    seed_everything(123)
    b, r2 = torch.randn(4, 5), random.random()
    seed_everything(124)
    c = torch.randn(4, 5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert r1 == r2
    assert not torch.equal(a, c)


def test_seed_everything_returns_a_seeded_cpu_generator():
    g = seed_everything(7)
    assert isinstance(g, torch.Generator) and g.device.type == "cpu"
    expected = torch.randn(3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(torch.randn(3, generator=g), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [-1, -100, 1.5, "0"])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(seed)


@pytest.mark.parametrize("device_name", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_randn_draws_on_cpu_then_moves(device_name, dtype):
    x = randn(3, 4, generator=torch.Generator().manual_seed(5), device=device_name, dtype=dtype)
    expected = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=dtype)
    assert x.device.type == device_name and x.dtype == dtype and x.shape == (3, 4)
    torch.testing.assert_close(x.cpu(), expected, rtol=0, atol=0)


def test_randn_default_device_is_cpu():
    x = randn(2, generator=torch.Generator().manual_seed(0))
    assert x.device.type == "cpu" and x.dtype == torch.float32


def test_device_module_constants():
    assert device.DEVICE_ENV == "ATTN_COURSE_DEVICE"


# ----------------------------------------------------------------- tokenize
@pytest.mark.parametrize("text, tokens", [
    ("Call me Ishmael.", ["call", "me", "ishmael", "."]),
    ("The cat sat on the mat.", ["the", "cat", "sat", "on", "the", "mat", "."]),
    ("It was the best of times, it was the worst of times.",
     ["it", "was", "the", "best", "of", "times", ",", "it", "was", "the", "worst", "of", "times", "."]),
    ("Alice's sister", ["alice's", "sister"]),
    ("All happy families are alike; each", ["all", "happy", "families", "are", "alike", ";", "each"]),
    ("Moby-Dick (1851)", ["moby", "-", "dick", "(", "1851", ")"]),
    ("", []),
    ("  \n\t ", []),
])
def test_tokenize_worked_examples(text, tokens):
    assert tokenize(text) == tokens


@pytest.mark.parametrize("bad", [None, 3, ["Call", "me"], b"bytes"])
def test_tokenize_rejects_non_strings(bad):
    with pytest.raises(ValueError, match=type(bad).__name__):
        tokenize(bad)


def test_sentences_are_real_and_sourced():
    texts = data.sentences()
    assert len(texts) == len(data.SENTENCES) >= 5
    assert "Call me Ishmael." in texts
    for text, source in data.SENTENCES:
        assert tokenize(text) and source


# ----------------------------------------------------------------- Vocab
def test_vocab_ids_by_first_appearance():
    vocab = Vocab([["the", "cat", "sat"], ["the", "mat"]])
    assert vocab.itos == ["<pad>", "<unk>", "the", "cat", "sat", "mat"]
    assert len(vocab) == 6
    assert vocab.encode(["the", "mat", "cat"]) == [2, 5, 3]
    assert (vocab.pad_id, vocab.unk_id) == (0, 1)


def test_vocab_unknown_is_one():
    vocab = Vocab([["the", "cat"]])
    assert vocab.encode(["the", "dog", "cat", "bird"]) == [2, 1, 3, 1]
    assert vocab.decode([1]) == ["<unk>"]


def test_vocab_round_trip_on_real_sentences():
    token_lists = [tokenize(s) for s in data.sentences()]
    vocab = Vocab(token_lists)
    for tokens in token_lists:
        ids = vocab.encode(tokens)
        assert all(i >= 2 for i in ids)
        assert vocab.decode(ids) == tokens
        assert vocab.decode(torch.tensor(ids)) == tokens


def test_pad_batch_of_encoded_sentences_decodes_back():
    token_lists = [tokenize("Call me Ishmael."), tokenize("The cat sat on the mat.")]
    vocab = Vocab(token_lists)
    ids, key_padding_mask = pad_batch([vocab.encode(t) for t in token_lists], vocab.pad_id)
    assert ids.shape == (2, 7)
    assert vocab.decode(ids[0]) == ["call", "me", "ishmael", ".", "<pad>", "<pad>", "<pad>"]
    assert vocab.decode(ids[1][~key_padding_mask[1]]) == token_lists[1]


# ----------------------------------------------------------------- pad_batch
def test_pad_batch_worked_example():
    ids, key_padding_mask = pad_batch([[4, 5, 6], [7], [8, 9]])
    assert ids.dtype == torch.int64 and key_padding_mask.dtype == torch.bool
    assert torch.equal(ids, torch.tensor([[4, 5, 6], [7, 0, 0], [8, 9, 0]]))
    assert torch.equal(key_padding_mask, torch.tensor([[False, False, False],
                                                       [False, True, True],
                                                       [False, False, True]]))


def test_pad_batch_pad_id_and_empty_sequence():
    ids, key_padding_mask = pad_batch([[5], [], [6, 7]], pad_id=99)
    assert torch.equal(ids, torch.tensor([[5, 99], [99, 99], [6, 7]]))
    assert torch.equal(key_padding_mask, torch.tensor([[False, True], [True, True], [False, False]]))


def test_pad_batch_one_sequence_has_no_padding():
    ids, key_padding_mask = pad_batch([[3, 1, 2]])
    assert torch.equal(ids, torch.tensor([[3, 1, 2]]))
    assert not key_padding_mask.any()


def test_pad_batch_empty_list_raises():
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([])
