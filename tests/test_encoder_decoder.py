"""The encoder-decoder Transformer against torch.nn.Transformer with copied weights, the KV-cached decoding
step against the full decoder, beam search against exhaustive search, and the warm-up schedule."""
import itertools
import math

import pytest
import torch
from torch import nn

from attn_course.attention import causal_mask, padding_mask
from attn_course.encoder_decoder import (
    DecoderBlock,
    Transformer,
    TransformerTranslator,
    beam_search,
    beam_search_step,
    greedy_decode,
    noam_schedule,
    shift_right,
)

from helpers import DEVICES, F32, F64, draw, tol


def _to(kwargs, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def decoder_masks(kind, B, L, S, dtype):
    """(our kwargs, torch's kwargs) for the decoder's masks: both take True = ignore."""
    tgt_pad = padding_mask([L] + [max(1, L - 1 - b) for b in range(1, B)], L)         # (B, L)
    src_pad = padding_mask([S] + [max(1, S - 2 * b) for b in range(1, B)], S)         # (B, S)
    future = ~causal_mask(L)                                                          # (L, L), True = ignore
    if kind == "causal":
        return {"tgt_is_causal": True}, {"tgt_mask": future, "tgt_is_causal": True}
    if kind == "causal+padding":
        kw = {"tgt_mask": future, "tgt_key_padding_mask": tgt_pad, "memory_key_padding_mask": src_pad}
        return kw, dict(kw)
    if kind == "memory_mask":
        memory_mask = torch.rand(L, S, generator=torch.Generator().manual_seed(5)) < 0.3
        memory_mask[:, 0] = False                                                     # every row keeps a key
        kw = {"tgt_mask": future, "memory_mask": memory_mask}
        return kw, dict(kw)
    additive = torch.zeros(L, L, dtype=dtype).masked_fill(future, float("-inf"))
    return {"tgt_mask": additive}, {"tgt_mask": additive}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["causal", "causal+padding", "memory_mask", "float"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("B, L, S, E, H, F_, dtype, activation",
                         [(2, 5, 7, 8, 2, 16, F32, "relu"), (3, 6, 4, 12, 3, 20, F64, "gelu")],
                         ids=["f32-relu-S>L", "f64-gelu-S<L"])
def test_decoder_block_equals_torch_decoder_layer(B, L, S, E, H, F_, dtype, activation, norm_first, mask, device):
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(E, H, F_, dropout=0.1, activation=activation, batch_first=True,
                                       norm_first=norm_first).to(device, dtype).eval()
    block = DecoderBlock.from_torch(layer).eval()
    assert block.norm_first == norm_first and block.activation == activation
    g = torch.Generator().manual_seed(2)
    x, memory = draw(g, B, L, E, dtype=dtype, device=device), draw(g, B, S, E, dtype=dtype, device=device)
    ours_kw, torch_kw = (_to(kw, device) for kw in decoder_masks(mask, B, L, S, dtype))
    with torch.no_grad():
        expected = layer(x, memory, **torch_kw)
        got = block(x, memory, **ours_kw)
    torch.testing.assert_close(got, expected, **tol(dtype, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_transformer_equals_torch_transformer(dtype, norm_first, device):
    torch.manual_seed(0)
    B, S, L, E, H = 3, 7, 5, 16, 4
    reference = nn.Transformer(E, H, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=24, dropout=0.1,
                               batch_first=True, norm_first=norm_first).to(device, dtype).eval()
    ours = Transformer.from_torch(reference).eval()
    assert len(ours.encoder_layers) == 2 and len(ours.decoder_layers) == 3
    g = torch.Generator().manual_seed(3)
    src, tgt = draw(g, B, S, E, dtype=dtype, device=device), draw(g, B, L, E, dtype=dtype, device=device)
    src_pad = padding_mask([7, 4, 6], S).to(device)                                  # (B, S), True = padding
    tgt_pad = padding_mask([5, 5, 3], L).to(device)
    future = (~causal_mask(L)).to(device)                                             # (L, L), True = ignore
    kwargs = dict(tgt_mask=future, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                  memory_key_padding_mask=src_pad)
    with torch.no_grad():
        expected = reference(src, tgt, **kwargs)
        got = ours(src, tgt, **kwargs)
        memory_ours = ours.encode(src, src_key_padding_mask=src_pad)
        memory_torch = reference.encoder(src, src_key_padding_mask=src_pad)
    real = ~tgt_pad                                                                   # padded rows: no query to compare
    torch.testing.assert_close(got[real], expected[real], **tol(dtype, device))
    # PyTorch's encoder may return zeros at padded positions (its nested-tensor fast path); compare the rest
    torch.testing.assert_close(memory_ours[~src_pad], memory_torch[~src_pad], **tol(dtype, device))


def test_transformer_gradients_equal_torch_in_training_mode_without_dropout():
    torch.manual_seed(0)
    reference = nn.Transformer(8, 2, 1, 2, 16, dropout=0.0, batch_first=True)
    ours = Transformer.from_torch(reference)
    g = torch.Generator().manual_seed(4)
    src, tgt = draw(g, 2, 6, 8), draw(g, 2, 4, 8)
    out_t = reference(src, tgt, tgt_mask=~causal_mask(4), tgt_is_causal=True)
    out_o = ours(src, tgt, tgt_is_causal=True)
    torch.testing.assert_close(out_o, out_t)
    (out_t * tgt).sum().backward()
    (out_o * tgt).sum().backward()
    torch.testing.assert_close(ours.decoder_layers[1].multihead_attn.k_proj.weight.grad,
                               reference.decoder.layers[1].multihead_attn.in_proj_weight.grad[8:16])
    torch.testing.assert_close(ours.encoder_layers[0].linear1.weight.grad, reference.encoder.layers[0].linear1.weight.grad)


def test_decoder_self_attention_is_causal_and_cross_attention_is_not():
    torch.manual_seed(0)
    model = Transformer(8, 2, 1, 2, 16, dropout=0.0).eval()
    g = torch.Generator().manual_seed(5)
    src, tgt = draw(g, 1, 6, 8), draw(g, 1, 5, 8)
    with torch.no_grad():
        out = model(src, tgt, tgt_is_causal=True)
        later_tgt = tgt.clone()
        later_tgt[:, 3:] += 1.0
        later_src = src.clone()
        later_src[:, 5:] += 1.0                                                       # the last source token only
        out_tgt, out_src = model(src, later_tgt, tgt_is_causal=True), model(later_src, tgt, tgt_is_causal=True)
    torch.testing.assert_close(out_tgt[:, :3], out[:, :3])                           # the target's future is hidden
    assert (out_src[:, 0] - out[:, 0]).abs().max() > 1e-3                             # position 0 reads the whole source


def test_from_torch_refuses_other_activations_and_sequence_first():
    with pytest.raises(ValueError, match="relu or gelu"):
        DecoderBlock.from_torch(nn.TransformerDecoderLayer(8, 2, 16, batch_first=True, activation=torch.tanh))
    with pytest.raises(ValueError, match="batch_first=True"):
        Transformer.from_torch(nn.Transformer(8, 2, 1, 1, 16))


# ----------------------------------------------------------------- the translator and its decoding
def small_translator(seed=0, norm_first=False, **kwargs):
    torch.manual_seed(seed)
    return TransformerTranslator(11, 9, d_model=16, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                                 d_ff=32, dropout=0.0, max_len=12, norm_first=norm_first, **kwargs).eval()


def test_translator_ties_the_output_layer_to_the_target_embedding_and_scales_by_sqrt_d_model():
    model = small_translator()
    assert model.generator.weight is model.tgt_embedding.weight
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in small_translator(tie_embeddings=False).parameters())
    src = torch.tensor([[4, 5, 6, 0]])
    embedded = model._embed(src, model.src_embedding)
    expected = model.src_embedding(src) * 4.0 + model.positions.pe[:, :4]
    torch.testing.assert_close(embedded, expected)
    assert model.src_embedding.weight[0].abs().sum() == 0                             # padding embeds to zero


def test_translator_masks_source_padding():
    model = small_translator()
    tgt_in = torch.tensor([[2, 4, 5]])
    with torch.no_grad():
        short = model(torch.tensor([[4, 5, 6]]), tgt_in)
        padded = model(torch.tensor([[4, 5, 6, 0, 0]]), tgt_in)
        logits, weights = model(torch.tensor([[4, 5, 6, 0, 0]]), tgt_in, need_weights=True)
    torch.testing.assert_close(padded, short)
    assert [w.shape for w in weights["cross"]] == [torch.Size([1, 4, 3, 5])] * 2
    assert weights["cross"][0][..., 3:].abs().max() == 0
    torch.testing.assert_close(logits, padded)


def test_shift_right():
    tgt_out = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    torch.testing.assert_close(shift_right(tgt_out, bos_id=2), torch.tensor([[2, 5, 6, 7], [2, 8, 3, 0]]))
    with pytest.raises(ValueError, match=r"\(B, L\) integer"):
        shift_right(torch.zeros(2, 3), bos_id=2)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_cached_steps_equal_the_teacher_forced_decoder(norm_first):
    model = small_translator(norm_first=norm_first)
    src = torch.tensor([[4, 5, 6, 7, 0], [8, 9, 10, 0, 0]])
    tgt_in = torch.tensor([[2, 4, 5, 6, 7, 8], [2, 8, 7, 6, 0, 0]])
    src_pad = src == 0
    with torch.no_grad():
        full = model(src, tgt_in).log_softmax(-1)                                    # (B, L, V)
        memory = model.encode(src)
        cache = model.start_cache(2, 8)
        steps = [model.step(tgt_in[:, t:t + 1], memory, src_pad, cache)[0] for t in range(4)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, :4], atol=1e-5, rtol=1e-5)


def test_greedy_decode_equals_step_by_step_argmax_without_cache():
    model = small_translator(seed=1)
    src = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]])
    ids, weights = greedy_decode(model, src, max_len=6)
    for b in range(2):
        y = [model.bos_id]
        for _ in range(ids.shape[1]):
            with torch.no_grad():
                nxt = int(model(src[b:b + 1], torch.tensor([y]))[0, -1].argmax())
            y.append(nxt)
            if nxt == model.eos_id:
                break
        assert ids[b, :len(y) - 1].tolist() == y[1:]
    assert weights.shape == (2, 2, 4, ids.shape[1], 4)
    assert weights[1, ..., 2:].abs().max() == 0                                       # padding gets no weight


def test_beam_search_step_matches_a_sort_of_all_candidates():
    g = torch.Generator().manual_seed(6)
    log_probs = torch.randn(2, 3, 5, generator=g).log_softmax(-1)
    beam_scores = torch.randn(2, 3, generator=g)
    scores, beam_idx, token_idx = beam_search_step(log_probs, beam_scores, 4)
    for b in range(2):
        candidates = sorted(((beam_scores[b, k] + log_probs[b, k, v]).item(), k, v)
                            for k in range(3) for v in range(5))[::-1][:4]
        assert [(k, v) for _, k, v in candidates] == list(zip(beam_idx[b].tolist(), token_idx[b].tolist()))
        torch.testing.assert_close(scores[b], torch.tensor([s for s, _, _ in candidates]))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search_step(log_probs, beam_scores, 16)


def _exhaustive_best(model, src, max_len):
    """The most likely sequence ending in <eos> (or of max_len tokens), by scoring every one."""
    V = model.generator.out_features
    tokens = [v for v in range(V) if v not in (0, model.bos_id)]
    best = (-math.inf, None)
    with torch.no_grad():
        for n in range(1, max_len + 1):
            for seq in itertools.product(tokens, repeat=n):
                if model.eos_id in seq[:-1] or (n < max_len and seq[-1] != model.eos_id):
                    continue
                logp = model(src, torch.tensor([[model.bos_id, *seq[:-1]]])).log_softmax(-1)[0]
                score = logp[torch.arange(n), torch.tensor(seq)].sum().item()
                best = max(best, (score, list(seq)))
    return best


def test_beam_search_with_a_wide_beam_finds_the_most_likely_sequence():
    torch.manual_seed(2)
    model = TransformerTranslator(6, 6, d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                                  d_ff=16, dropout=0.0, max_len=8).eval()
    src = torch.tensor([[4, 5, 1]])
    best_score, best_ids = _exhaustive_best(model, src, max_len=3)
    ids, scores = beam_search(model, src, beam_size=20, max_len=3)
    assert ids[0] == best_ids
    assert scores[0] == pytest.approx(best_score, abs=1e-4)
    greedy, _ = greedy_decode(model, src, max_len=3)
    one_beam, _ = beam_search(model, src, beam_size=1, max_len=3)
    assert one_beam[0] == [t for t in greedy[0].tolist() if t != 0]


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_beam_search_with_one_beam_is_greedy_decoding(seed):
    model = small_translator(seed=seed)
    src = torch.randint(4, 11, (6, 5), generator=torch.Generator().manual_seed(seed))
    greedy, _ = greedy_decode(model, src, max_len=8)
    beams, _ = beam_search(model, src, beam_size=1, max_len=8)
    assert beams == [[t for t in row if t != 0] for row in greedy.tolist()]


def test_beam_search_is_never_worse_than_greedy_in_log_probability():
    model = small_translator(seed=5)
    src = torch.randint(4, 11, (8, 5), generator=torch.Generator().manual_seed(5))
    greedy, _ = greedy_decode(model, src, max_len=8)
    beams, scores = beam_search(model, src, beam_size=4, max_len=8)
    with torch.no_grad():
        for b, row in enumerate(greedy.tolist()):
            ids = [t for t in row if t != 0]
            if ids[-1] != model.eos_id:
                continue                                                              # greedy never finished
            logp = model(src[b:b + 1], torch.tensor([[model.bos_id, *ids[:-1]]])).log_softmax(-1)[0]
            assert scores[b] >= logp[torch.arange(len(ids)), torch.tensor(ids)].sum().item() - 1e-4


def test_beam_search_batches_independently():
    model = small_translator(seed=3)
    src = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0], [10, 4, 4, 0]])
    together, _ = beam_search(model, src, beam_size=3, max_len=6)
    alone = [beam_search(model, src[b:b + 1, :int((src[b] != 0).sum())], beam_size=3, max_len=6)[0][0]
             for b in range(3)]
    assert together == alone


def test_noam_schedule_warms_up_linearly_then_decays_as_inverse_sqrt():
    f = noam_schedule(64, 100)
    rates = [f(s) for s in range(400)]
    assert max(range(400), key=rates.__getitem__) == 99                                # the peak at warmup_steps
    assert rates[99] == pytest.approx((64 * 100) ** -0.5)
    assert rates[49] == pytest.approx(rates[99] / 2)
    assert rates[399] == pytest.approx(rates[99] / 2)                                   # 4x the steps: half the rate
