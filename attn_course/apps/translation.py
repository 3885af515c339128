"""Machine translation with additive attention: English -> French number words.

An RNN encoder-decoder in the shape of Bahdanau, Cho & Bengio (2015): a bidirectional GRU encoder
gives one state per source word; at every target step the decoder scores its previous state against
every encoder state, ``e_tj = v . tanh(W_q s_{t-1} + W_k h_j)`` (additive attention, appendix A.1.2),
takes a softmax over the source positions, ``alpha_tj``, and feeds the weighted sum
``c_t = sum_j alpha_tj h_j`` into the GRU with the previous word. ``attention=False`` gives the same
model with a fixed context, the encoder's final states (Cho et al. 2014): the fixed-length
bottleneck that attention removes.

Shapes: B batch, S source length, L target length, E embedding size, H hidden size, V vocabulary.
``key_padding_mask`` is (B, S) bool, **True = padding**, as in ``torch.nn.MultiheadAttention``.
"""
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data import Vocab, pad_batch
from ..pooling import AdditiveAttention, attention_pool
from ..scoring import additive_scores
from ..training import fit, replayable

BOS, EOS = "<bos>", "<eos>"


def build_vocab(token_lists):
    """A ``attn_course.data.Vocab`` with ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3, then the words."""
    return Vocab([[BOS, EOS]] + [list(t) for t in token_lists])


def encode_pairs(pairs, src_vocab, tgt_vocab):
    """Pad a list of ``(n, english tokens, french tokens)`` into tensors.

    Returns:
        dict of ``src`` (B, S) int64, ``key_padding_mask`` (B, S) bool (True = padding),
        ``tgt_in`` (B, L) int64 = ``<bos> y_1 .. y_T``, ``tgt_out`` (B, L) = ``y_1 .. y_T <eos>``
        (padding id 0 in both), ``numbers`` (B,) int64.
    """
    bos, eos = tgt_vocab.stoi[BOS], tgt_vocab.stoi[EOS]
    src, key_padding_mask = pad_batch([src_vocab.encode(en) for _, en, _ in pairs])
    tgt_in, _ = pad_batch([[bos] + tgt_vocab.encode(fr) for _, _, fr in pairs])
    tgt_out, _ = pad_batch([tgt_vocab.encode(fr) + [eos] for _, _, fr in pairs])
    return {"src": src, "key_padding_mask": key_padding_mask, "tgt_in": tgt_in, "tgt_out": tgt_out,
            "numbers": torch.tensor([n for n, _, _ in pairs])}


def additive_attention(query, key, value, w_query, w_key, v, key_padding_mask=None):
    """One decoder step of additive (Bahdanau) attention: score, masked softmax, weighted sum.

    ``attn_scores_j = v . tanh(W_q query + W_k key_j)``; ``attn_weights = softmax(attn_scores)`` over
    the S source positions, padding excluded; ``context = sum_j attn_weights_j value_j``.

    Args:
        query: (B, Dq) float, the decoder state s_{t-1}.
        key: (B, S, Dk) float, the encoder states h_j.
        value: (B, S, Dv) float, usually the same encoder states.
        w_query: (A, Dq), w_key: (A, Dk), v: (A,) float, A the width of the scoring layer (``attn_dim``),
            laid out as ``nn.Linear.weight`` (``query @ w_query.T``).
        key_padding_mask: None or (B, S) bool, **True = padding** (gets weight exactly 0).

    Returns:
        (context (B, Dv), attn_weights (B, S)); each row of attn_weights sums to 1 over the
        non-padding positions (a row that is all padding gives zeros, not NaN).

    Raises:
        ValueError: shapes that do not fit together.

    References: Bahdanau, Cho & Bengio (2015), eqs. 5-6 and appendix A.1.2. The functional form of
    ``attn_course.pooling.AdditiveAttention``: ``scoring.additive_scores`` with one query, then
    ``pooling.attention_pool``.

    >>> context, w = additive_attention(torch.zeros(1, 2), torch.zeros(1, 3, 2), torch.eye(3)[None],
    ...                                 torch.ones(4, 2), torch.ones(4, 2), torch.ones(4))
    >>> w
    tensor([[0.3333, 0.3333, 0.3333]])
    """
    if query.dim() != 2 or key.dim() != 3 or value.dim() != 3 or key.shape[:2] != value.shape[:2] \
            or key.shape[0] != query.shape[0]:
        raise ValueError(f"expected query (B, Dq), key (B, S, Dk), value (B, S, Dv); got query "
                         f"{tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}")
    attn_scores = additive_scores(query.unsqueeze(1), key, w_query, w_key, v).squeeze(1)  # (B, 1, Dq) -> (B, 1, S) -> (B, S)
    return attention_pool(attn_scores, value, key_padding_mask)                           # (B, Dv), (B, S)


class Encoder(nn.Module):
    """Embedding + bidirectional GRU: ``src (B, S) -> enc_states (B, S, 2H), summary (B, 2H)``.

    ``summary`` joins the last forward state and the first backward state (padding skipped).
    """

    def __init__(self, vocab_size, embed_dim, hidden_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = nn.GRU(embed_dim, hidden_size, batch_first=True, bidirectional=True)

    def forward(self, src, key_padding_mask):
        lengths = (~key_padding_mask).sum(-1).cpu()                         # (B,)
        embedded = self.embedding(src)                                      # (B, S) -> (B, S, E)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        out, last = self.rnn(packed)                                        # last: (2, B, H)
        enc_states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, 2H)
        summary = torch.cat([last[0], last[1]], dim=-1)                     # (2, B, H) -> (B, 2H)
        return enc_states, summary


class Decoder(nn.Module):
    """GRU decoder; with ``attention`` its context is re-read from the encoder states at every step.

    Step t: ``c_t, alpha_t = attention(s_{t-1}, enc_states)`` (or ``c_t = summary`` without
    attention); ``s_t = GRU([emb(y_{t-1}); c_t], s_{t-1})``; ``logits_t = W_o [s_t; c_t; emb(y_{t-1})]``.
    """

    bos_id, eos_id, max_len = 2, 3, 20   # build_vocab's ids; the longest French here has 15 words

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, attention=True, attn_dim=64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.init_state = nn.Linear(enc_dim, hidden_size)
        self.attention = AdditiveAttention(hidden_size, enc_dim, attn_dim) if attention else None
        self.cell = nn.GRUCell(embed_dim + enc_dim, hidden_size)
        self.out = nn.Linear(hidden_size + enc_dim + embed_dim, vocab_size)

    def project_keys(self, enc_states):
        """``W_k h_j`` for every source position, (B, S, 2H) -> (B, S, A); None without attention."""
        return None if self.attention is None else self.attention.w_key(enc_states)

    def start(self, summary):
        """The first state s_0 = tanh(W summary): (B, 2H) -> (B, Hd)."""
        return torch.tanh(self.init_state(summary))

    def step(self, y_prev, state, enc_states, summary, key_padding_mask, projected_key=None):
        """One step: ``y_prev (B,)``, ``state (B, Hd)`` -> ``logits (B, V), state (B, Hd), attn_weights (B, S)``."""
        emb = self.embedding(y_prev)                                        # (B,) -> (B, E)
        if self.attention is not None:
            context, attn_weights = self.attention(state, enc_states, enc_states, key_padding_mask,
                                                   projected_key)          # (B, 2H), (B, S)
        else:
            context = summary                                               # the same vector at every step
            attn_weights = torch.zeros(enc_states.shape[:2], device=enc_states.device)
        state = self.cell(torch.cat([emb, context], dim=-1), state)         # (B, E + 2H) -> (B, Hd)
        logits = self.out(torch.cat([state, context, emb], dim=-1))         # -> (B, V)
        return logits, state, attn_weights

    def forward(self, tgt_in, enc_states, summary, key_padding_mask):
        """``logits (B, L, V)`` and ``attn_weights (B, L, S)`` of every step.

        With ``tgt_in (B, L)`` (``<bos> y_1 ..``): teacher forcing, step t reads the true word
        ``tgt_in[:, t]``. With ``tgt_in=None``: greedy decoding from ``<bos>`` (id ``self.bos_id``),
        step t reads the argmax of step t-1, until every sentence has produced ``<eos>`` or
        ``self.max_len`` steps.
        """
        B = enc_states.shape[0]
        state, logits, weights = self.start(summary), [], []
        k = self.project_keys(enc_states)                                   # W_k h_j once, not at every step
        y = torch.full((B,), self.bos_id, dtype=torch.long, device=enc_states.device) if tgt_in is None else tgt_in[:, 0]
        done = torch.zeros(B, dtype=torch.bool, device=enc_states.device)
        for t in range(self.max_len if tgt_in is None else tgt_in.shape[1]):
            step_logits, state, attn_weights = self.step(y, state, enc_states, summary, key_padding_mask, k)
            logits.append(step_logits)                                      # (B, V)
            weights.append(attn_weights)                                    # (B, S)
            if tgt_in is None:                                              # greedy: feed back the argmax
                y = step_logits.argmax(-1)
                done = done | (y == self.eos_id)
                if done.all():
                    break
            elif t + 1 < tgt_in.shape[1]:                                   # teacher forcing: the true word
                y = tgt_in[:, t + 1]
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)      # (B, L, V), (B, L, S)


class Seq2Seq(nn.Module):
    """Encoder-decoder translator, with additive attention or (``attention=False``) without.

    Args:
        src_vocab_size, tgt_vocab_size: V of each language.
        embed_dim: E; hidden_size: H of each encoder direction (encoder states are 2H);
        decoder_size: the decoder state's size (default 2H); attention: bool; attn_dim: A.

    ``forward(src, key_padding_mask, tgt_in) -> (logits (B, L, V), attn_weights (B, L, S))``, teacher
    forced; ``tgt_in=None`` decodes greedily (``Decoder.forward``).
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim=64, hidden_size=32, decoder_size=None,
                 attention=True, attn_dim=64):
        super().__init__()
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_size)
        self.decoder = Decoder(tgt_vocab_size, embed_dim, decoder_size or 2 * hidden_size, 2 * hidden_size,
                               attention=attention, attn_dim=attn_dim)

    def forward(self, src, key_padding_mask, tgt_in=None):
        """Logits (B, L, V) and attention weights (B, L, S): teacher-forced, or greedy if tgt_in is None."""
        enc_states, summary = self.encoder(src, key_padding_mask)           # (B, S, 2H), (B, 2H)
        return self.decoder(tgt_in, enc_states, summary, key_padding_mask)


@torch.no_grad()
def greedy_decode(model, src, key_padding_mask):
    """Greedy decoding: at every step feed back the most likely word, until ``<eos>`` or ``max_len``.

    Args:
        model: a ``Seq2Seq``; src (B, S) int64; key_padding_mask (B, S) bool, True = padding.

    Returns:
        (ids (B, T) int64, attn_weights (B, T, S)) with T <= ``model.decoder.max_len``; after a
        sentence's ``<eos>`` its ids are 0 (padding) and its weights 0. ``<eos>`` itself is kept.
    """
    model.eval()
    logits, attn_weights = model(src, key_padding_mask)                     # tgt_in=None: greedy
    ids = logits.argmax(-1)                                                 # (B, T, V) -> (B, T)
    is_eos = (ids == model.decoder.eos_id).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0                            # strictly after the first <eos>
    return ids.masked_fill(after_eos, 0), attn_weights.masked_fill(after_eos[..., None], 0.0)


def strip(ids, vocab):
    """Token ids of one decoded sentence -> its words, cut at ``<eos>``."""
    words = []
    for token in vocab.decode(ids):
        if token in (EOS, "<pad>"):
            break
        words.append(token)
    return words


def translate_batch(model, pairs, src_vocab, tgt_vocab, batch_size=512, device="cpu"):
    """Greedy translations of ``(n, english, french)`` triples: a list of French word lists."""
    out = []
    for i in range(0, len(pairs), batch_size):
        batch = encode_pairs(pairs[i:i + batch_size], src_vocab, tgt_vocab)
        ids, _ = greedy_decode(model, batch["src"].to(device), batch["key_padding_mask"].to(device))
        out += [strip(row, tgt_vocab) for row in ids.cpu()]
    return out


def exact_match(model, pairs, src_vocab, tgt_vocab, device="cpu"):
    """Exact-match accuracy overall and per digit count: ``(accuracy, {digits: accuracy})``."""
    hyps = translate_batch(model, pairs, src_vocab, tgt_vocab, device=device)
    hits, by_digits = [h == fr for h, (_, _, fr) in zip(hyps, pairs)], {}
    for hit, (n, _, _) in zip(hits, pairs):
        by_digits.setdefault(len(str(n)), []).append(hit)
    return sum(hits) / len(hits), {d: sum(h) / len(h) for d, h in sorted(by_digits.items())}


@replayable
def train(model, batch_data, steps, batch_size=128, lr=3e-3, seed=0, progress=True, desc="training"):
    """Adam on random mini-batches with teacher forcing, gradients clipped to norm 1; returns the loss of
    every step (a list).

    ``batch_data`` is the dict of ``encode_pairs`` on the training pairs (on the model's device).
    The ``steps`` batches (each ``batch_size`` pairs drawn with replacement) come from a seeded CPU
    generator, so a run is repeatable.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(batch_data["src"])

    def batch_loss(idx):
        idx = idx.to(batch_data["src"].device)
        mask = batch_data["key_padding_mask"][idx]
        S = int((~mask).sum(-1).max())                                     # drop all-padding columns
        L = int((batch_data["tgt_out"][idx] != 0).sum(-1).max())
        logits, _ = model(batch_data["src"][idx, :S], mask[:, :S], batch_data["tgt_in"][idx, :L])   # (b, L, V)
        return F.cross_entropy(logits.flatten(0, 1), batch_data["tgt_out"][idx, :L].flatten(), ignore_index=0)

    batches = [torch.randint(0, n, (batch_size,), generator=g) for _ in range(steps)]
    return fit(model, batches, batch_loss, opt, clip_grad_norm=1.0, desc=desc, progress=progress).step_loss
