"""Abstractive headlines with a pointer-generator: attention that can copy a word of the article.

See, Liu & Manning (2017), "Get To The Point: Summarization with Pointer-Generator Networks", section
2.2. A bidirectional GRU encodes the lead of an article, ``h_i``; a GRU decoder reads the previous
headline word, ``x_t``, into its state ``s_t`` and attends over the source (additive attention,
Bahdanau et al. 2015, eq. 1 of the paper without ``b_attn``):

    e_ti = v . tanh(W_h h_i + W_s s_t);  a_t = softmax_i(e_t);  h*_t = sum_i a_ti h_i          (eqs. 1-3)
    P_vocab = softmax(V' (V [s_t; h*_t] + b) + b')                                               (eq. 4)
    p_gen = sigmoid(w_h* . h*_t + w_s . s_t + w_x . x_t + b_ptr)                                  (eq. 8)
    P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: w_i = w} a_ti                                   (eq. 9)

The attention weights are both the context's weights and a distribution over the source words to
copy. A word outside the vocabulary (a name, a number) gets a temporary id V, V+1, ... in its article
(the *extended vocabulary*), so the decoder can write it by pointing at it. ``copy=False`` gives the
same network without the pointer (p_gen = 1): a plain attention seq2seq that can only write ``<unk>``
for such a word.

Shapes: B batch, S source length, L target length, E embedding size, H encoder GRU size per
direction (encoder states are 2H), Hd the decoder state's size, A the attention width, V the
vocabulary, n the largest number of out-of-vocabulary words of an article in the batch (``max_oov``).
``key_padding_mask`` is (B, S) bool, **True = padding**, as in ``torch.nn.MultiheadAttention``.
"""
import collections
import random

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..attention import masked_softmax, weighted_sum
from ..data import Vocab, news, pad_batch
from ..pooling import AdditiveAttention
from ..training import fit, replayable, shuffled_batches

BOS, EOS = "<bos>", "<eos>"
SRC_LEN, TGT_LEN = 50, 16      # lead words read; title words written (99 % of the titles have <= 16 words)
EPS = 1e-12                    # log(P + EPS): a word of probability 0 gets -27.6, not -inf


# ---------------------------------------------------------------- data: the extended vocabulary

def pairs_from_articles(articles, src_len=SRC_LEN, tgt_len=TGT_LEN):
    """(source, target) word lists: the first ``src_len`` words of the article's sentences and the
    first ``tgt_len`` words of its title, lower-case alphanumeric (``news.words``, the tokens ROUGE counts)."""
    return [([w for s in a["words"] for w in s][:src_len], news.words(a["title"])[:tgt_len]) for a in articles]


def build_vocab(pairs, max_words=6000):
    """A ``data.Vocab`` shared by source and target: ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3,
    then the ``max_words`` most frequent words of the pairs (ties in alphabetical order), so V = max_words + 4."""
    counts = collections.Counter(w for src, tgt in pairs for w in src + tgt)
    kept = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    return Vocab([[BOS, EOS] + kept])


def encode_pairs(pairs, vocab):
    """Pad ``(source words, target words)`` pairs into tensors with an extended vocabulary per article.

    A source word outside ``vocab`` gets the id V + k, k its rank among the article's distinct
    out-of-vocabulary words in order of first appearance (See et al. 2017, section 2.2). The encoder
    reads ``src`` (those words as ``<unk>``); the copy distribution scatters onto ``src_ext``. A target
    word outside ``vocab`` takes its source id V + k where the article has it, else ``<unk>``.

    Args:
        pairs: list of B ``(source, target)`` lists of str; every source non-empty; a target may be
            empty (for decoding only).
        vocab: a ``data.Vocab`` from ``build_vocab`` (with ``<bos>`` and ``<eos>``).

    Returns:
        dict of ``src`` (B, S) int64 in [0, V), ``src_ext`` (B, S) int64 in [0, V + n),
        ``key_padding_mask`` (B, S) bool (True = padding), ``tgt_in`` (B, L) = ``<bos> y_1 .. y_T`` and
        ``tgt_out`` (B, L) = ``y_1 .. y_T <eos>`` in extended ids (padding 0 in both), ``oovs`` (a list
        of B lists of str: the words of ids V, V+1, ...) and ``max_oov`` n (int).

    Raises:
        ValueError: a source with no word, or a vocabulary without ``<bos>``/``<eos>``.

    >>> vocab = Vocab([[BOS, EOS, "the", "wins"]])
    >>> batch = encode_pairs([(["zverev", "wins", "in", "sofia"], ["zverev", "wins", "title"])], vocab)
    >>> batch["src"].tolist(), batch["src_ext"].tolist(), batch["tgt_out"].tolist(), batch["oovs"]
    ([[1, 5, 1, 1]], [[6, 5, 7, 8]], [[6, 5, 1, 3]], [['zverev', 'in', 'sofia']])
    """
    if BOS not in vocab.stoi or EOS not in vocab.stoi:
        raise ValueError(f"the vocabulary needs {BOS} and {EOS} (build_vocab adds them); got {vocab.itos[:6]} ...")
    V, unk, bos, eos = len(vocab), vocab.unk_id, vocab.stoi[BOS], vocab.stoi[EOS]
    src, src_ext, tgt_in, tgt_out, oovs = [], [], [], [], []
    for b, (source, target) in enumerate(pairs):
        if len(source) == 0:
            raise ValueError(f"pair {b} has an empty source; every article needs at least one word")
        article_oovs = list(dict.fromkeys(w for w in source if w not in vocab.stoi))   # first appearance order
        ext = {w: V + k for k, w in enumerate(article_oovs)}
        src.append(vocab.encode(source))
        src_ext.append([vocab.stoi.get(w, ext.get(w)) for w in source])
        tgt = [vocab.stoi.get(w, ext.get(w, unk)) for w in target]
        tgt_in.append([bos] + tgt)
        tgt_out.append(tgt + [eos])
        oovs.append(article_oovs)
    src, key_padding_mask = pad_batch(src)
    return {"src": src, "src_ext": pad_batch(src_ext)[0], "key_padding_mask": key_padding_mask,
            "tgt_in": pad_batch(tgt_in)[0], "tgt_out": pad_batch(tgt_out)[0], "oovs": oovs,
            "max_oov": max(len(o) for o in oovs)}


def decode_ids(ids, vocab, oovs):
    """Extended ids of one headline -> its words, cut at ``<eos>`` or padding; id V + k is ``oovs[k]``."""
    words, V = [], len(vocab)
    for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
        if i in (vocab.pad_id, vocab.stoi[EOS]):
            break
        words.append(oovs[i - V] if i >= V else vocab.itos[i])
    return words


# ---------------------------------------------------------------- the model

class PointerGenerator(nn.Module):
    """Encoder-decoder with additive attention and a copy switch p_gen (See et al. 2017, eqs. 1-4, 8-9).

    Args:
        vocab_size: V (shared by source and target). embed_dim: E. hidden_size: H per encoder
            direction; the decoder state has Hd = 2H. attn_dim: A. copy: with False, p_gen = 1 and
            eq. 9 is P_vocab alone (the baseline without the pointer). unk_id: the id an extended id
            (>= V) is read as by the embedding. dropout_p: dropout on the embeddings and on
            ``V [s_t; h*_t] + b`` while training.

    Forward args:
        src (B, S) int64 in [0, V); src_ext (B, S) int64 in [0, V + n); key_padding_mask (B, S) bool,
        **True = padding**; tgt_in (B, L) int64 extended ids (teacher forcing); max_oov: n, default
        the largest ``src_ext - V + 1`` of the batch.

    Returns:
        log_probs (B, L, V + n) float: log(P(w) + 1e-12), P of eq. 9 over the extended vocabulary;
        attn_weights (B, L, S), exactly 0 on padding; p_gen (B, L) (ones with ``copy=False``).

    Raises:
        ValueError: src, src_ext and key_padding_mask of different shapes, or an id of src_ext
            at or beyond V + max_oov.

    >>> model = PointerGenerator(10, embed_dim=4, hidden_size=3, attn_dim=5)
    >>> src, src_ext = torch.tensor([[4, 1, 5]]), torch.tensor([[4, 10, 5]])   # the middle word is OOV 0
    >>> log_probs, attn_weights, p_gen = model(src, src_ext, src == 0, torch.tensor([[2, 10]]))
    >>> log_probs.shape, attn_weights.shape, p_gen.shape, round(log_probs.exp().sum(-1)[0, 0].item(), 4)
    (torch.Size([1, 2, 11]), torch.Size([1, 2, 3]), torch.Size([1, 2]), 1.0)

    References: See, Liu & Manning 2017, section 2.2, eqs. 1-4 and 8-9 (a GRU here, an LSTM there, and
    no coverage, section 2.3); Bahdanau, Cho & Bengio 2015 for the attention, ``pooling.AdditiveAttention``.
    """

    bos_id, eos_id = 2, 3          # build_vocab's ids

    def __init__(self, vocab_size, embed_dim=64, hidden_size=64, attn_dim=64, copy=True, unk_id=1, dropout_p=0.0):
        super().__init__()
        Hd = 2 * hidden_size
        self.vocab_size, self.copy, self.unk_id = vocab_size, copy, unk_id
        self.dropout = nn.Dropout(dropout_p)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)     # shared by encoder and decoder
        self.encoder = nn.GRU(embed_dim, hidden_size, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(2 * hidden_size, Hd)
        self.decoder = nn.GRU(embed_dim, Hd, batch_first=True)
        self.attention = AdditiveAttention(Hd, 2 * hidden_size, attn_dim)        # W_s, W_h, v of eq. 1
        self.out_hidden = nn.Linear(Hd + 2 * hidden_size, embed_dim)              # V, b of eq. 4
        self.out = nn.Linear(embed_dim, vocab_size)                               # V', b' of eq. 4
        self.gen_switch = nn.Linear(2 * hidden_size + Hd + embed_dim, 1) if copy else None  # w_h*, w_s, w_x, b_ptr

    def embed(self, ids):
        """Embeddings of ids in the extended vocabulary, an id >= V read as ``<unk>``: (B, T) -> (B, T, E)."""
        return self.dropout(self.embedding(ids.masked_fill(ids >= self.vocab_size, self.unk_id)))

    def encode(self, src, key_padding_mask):
        """``enc_states (B, S, 2H)``, their keys ``W_h h_i`` (B, S, A) and the first decoder state (1, B, Hd)."""
        lengths = (~key_padding_mask).sum(-1).cpu()                               # (B,)
        packed = pack_padded_sequence(self.dropout(self.embedding(src)), lengths, batch_first=True, enforce_sorted=False)
        out, last = self.encoder(packed)                                          # last: (2, B, H)
        enc_states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, 2H)
        state = torch.tanh(self.init_state(torch.cat([last[0], last[1]], dim=-1)))  # (B, 2H) -> (B, Hd)
        return enc_states, self.attention.w_key(enc_states), state.unsqueeze(0)  # (B, S, A), (1, B, Hd)

    def decode(self, y_in, state, enc_states, projected_key, key_padding_mask):
        """Eqs. 1-3 and 8 for the L words ``y_in`` (B, L) fed to the decoder, from ``state`` (1, B, Hd).

        Returns s (B, L, Hd) the decoder states, context (B, L, 2H) h*_t, attn_weights (B, L, S) a_t,
        p_gen (B, L) (ones without the pointer) and the last state (1, B, Hd).
        """
        x = self.embed(y_in)                                                      # (B, L) -> (B, L, E)
        s, state = self.decoder(x, state)                                         # (B, L, Hd), (1, B, Hd)
        attn_scores = self.attention.attn_scores(s, None, projected_key.unsqueeze(1))  # (B, L, S), eq. 1
        attn_weights = masked_softmax(attn_scores, ~key_padding_mask.unsqueeze(1))  # (B, L, S), 0 on padding, eq. 2
        context = weighted_sum(attn_weights, enc_states)                          # (B, L, S) @ (B, S, 2H) -> (B, L, 2H), eq. 3
        if self.gen_switch is None:
            return s, context, attn_weights, torch.ones_like(s[..., 0]), state
        p_gen = torch.sigmoid(self.gen_switch(torch.cat([context, s, x], -1)))   # (B, L, 2H + Hd + E) -> (B, L, 1), eq. 8
        return s, context, attn_weights, p_gen.squeeze(-1), state

    def vocab_logits(self, s, context):
        """Eq. 4 before the softmax, ``V' (V [s_t; h*_t] + b) + b'``: (..., Hd), (..., 2H) -> (..., V)."""
        return self.out(self.dropout(self.out_hidden(torch.cat([s, context], -1))))

    def forward(self, src, src_ext, key_padding_mask, tgt_in, max_oov=None):
        if not src.shape == src_ext.shape == key_padding_mask.shape:
            raise ValueError(f"src, src_ext and key_padding_mask must all be (B, S); got {tuple(src.shape)}, "
                             f"{tuple(src_ext.shape)}, {tuple(key_padding_mask.shape)}")
        n = max(0, int(src_ext.max()) - self.vocab_size + 1)
        if max_oov is None:
            max_oov = n
        elif n > max_oov:
            raise ValueError(f"src_ext holds the id {int(src_ext.max())}, beyond V + max_oov = "
                             f"{self.vocab_size} + {max_oov}; pass the batch's max_oov from encode_pairs")
        enc_states, projected_key, state = self.encode(src, key_padding_mask)
        s, context, attn_weights, p_gen, _ = self.decode(tgt_in, state, enc_states, projected_key, key_padding_mask)
        log_probs = final_log_probs(self.vocab_logits(s, context), attn_weights, p_gen, src_ext, max_oov)
        return log_probs, attn_weights, p_gen                                    # (B, L, V + n), (B, L, S), (B, L)


def final_log_probs(vocab_logits, attn_weights, p_gen, src_ext, max_oov):
    """Eq. 9 over the extended vocabulary: ``log(p_gen P_vocab(w) + (1 - p_gen) sum_{i: w_i = w} a_i + 1e-12)``.

    Args:
        vocab_logits: (B, L, V) float, P_vocab = softmax over V. attn_weights: (B, L, S) float, 0 on
            padding. p_gen: (B, L) float in [0, 1]. src_ext: (B, S) int64 extended ids in [0, V + max_oov).
        max_oov: n, the number of extra slots.

    Returns:
        (B, L, V + n) float. The attention weights are added onto the source words' ids with
        ``scatter_add``, so a word that occurs twice in the source gets the sum of its two weights; an
        extra slot that no source word holds gets log(1e-12), about -27.6, not -inf.

    >>> logits, a = torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.75]]])
    >>> final_log_probs(logits, a, torch.tensor([[0.5]]), torch.tensor([[1, 2]]), 1).exp()
    tensor([[[0.2500, 0.3750, 0.3750]]])
    """
    p_gen = p_gen.unsqueeze(-1)                                                   # (B, L) -> (B, L, 1)
    p_final = F.pad(p_gen * torch.softmax(vocab_logits, -1), (0, max_oov))        # (B, L, V) -> (B, L, V + n)
    index = src_ext.unsqueeze(1).expand_as(attn_weights)                          # (B, S) -> (B, L, S)
    p_final = p_final.scatter_add(-1, index, (1 - p_gen) * attn_weights)          # a repeated word adds up
    return torch.log(p_final + EPS)


def target_log_probs(vocab_logits, attn_weights, p_gen, src_ext, target):
    """Eq. 9 at one word per position: ``final_log_probs(...).gather(-1, target)`` without building
    the (B, L, V + n) distribution (the training loss needs only the target word's probability).

    Args:
        vocab_logits (..., V), attn_weights (..., S), p_gen (...): as ``final_log_probs`` with any
        leading dims (B, L), or (M,) for M selected positions; src_ext: (..., S) int64 extended ids,
        broadcastable to attn_weights (``src_ext.unsqueeze(1)`` for (B, L)); target: (...) int64 extended ids.

    Returns:
        (...) float, log(P(target) + 1e-12).
    """
    V = vocab_logits.shape[-1]
    in_vocab = target < V                                                         # (...)
    logit = vocab_logits.gather(-1, target.clamp(max=V - 1).unsqueeze(-1)).squeeze(-1)   # (..., V) -> (...)
    p_vocab = torch.exp(logit - torch.logsumexp(vocab_logits, -1)) * in_vocab    # (...); 0 for an id >= V
    p_copy = (attn_weights * (src_ext == target.unsqueeze(-1))).sum(-1)          # (..., S) -> (...)
    return torch.log(p_gen * p_vocab + (1 - p_gen) * p_copy + EPS)


# ---------------------------------------------------------------- training and decoding

def headline_loss(model, batch):
    """Mean negative log-likelihood of ``tgt_out`` under eq. 9, padding ignored (See et al., eqs. 6-7).

    Without the pointer (``model.copy`` False) a target id >= V is scored as ``<unk>``, the word such a
    model can write. ``batch`` is a dict of ``encode_pairs`` on the model's device. Equal to
    ``F.nll_loss`` of the model's ``log_probs`` (tests/test_headlines.py), computed with
    ``target_log_probs`` and only at the real target positions.
    """
    S = int((~batch["key_padding_mask"]).sum(-1).max())                         # drop all-padding columns
    L = int((batch["tgt_out"] != 0).sum(-1).max())
    src, src_ext, mask = batch["src"][:, :S], batch["src_ext"][:, :S], batch["key_padding_mask"][:, :S]
    tgt_out = batch["tgt_out"][:, :L]
    if not model.copy:
        tgt_out = tgt_out.masked_fill(tgt_out >= model.vocab_size, model.unk_id)
    enc_states, projected_key, state = model.encode(src, mask)
    s, context, attn_weights, p_gen, _ = model.decode(batch["tgt_in"][:, :L], state, enc_states, projected_key, mask)
    real = tgt_out != 0                                                           # (B, L): M real target words
    vocab_logits = model.vocab_logits(s[real], context[real])                     # (M, Hd), (M, 2H) -> (M, V)
    b = real.nonzero()[:, 0]                                                      # (M,) the article of each word
    log_p = target_log_probs(vocab_logits, attn_weights[real], p_gen[real], src_ext[b], tgt_out[real])  # (M,)
    return -log_p.mean()


def select(batch, idx):
    """The rows ``idx`` (b,) int64 of an ``encode_pairs`` dict (``oovs`` and ``max_oov`` kept for the whole batch)."""
    return {k: v[idx.to(v.device)] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@replayable
def train(model, batch_data, epochs=4, batch_size=64, lr=5e-3, seed=0, progress=True, desc="training"):
    """Adam with teacher forcing on batches shuffled every epoch, gradients clipped to norm 2; returns the
    loss of every step (a list of float).

    ``batch_data`` is the dict of ``encode_pairs`` on the training pairs (on the model's device). The
    batch orders come from ``training.shuffled_batches(seed)``, so a run is repeatable.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = shuffled_batches(len(batch_data["src"]), batch_size, seed)
    return fit(model, batches, lambda idx: headline_loss(model, select(batch_data, idx)), opt, epochs,
               clip_grad_norm=2.0, desc=desc, progress=progress).step_loss


@torch.no_grad()
def greedy_decode(model, batch, max_len=TGT_LEN + 1, block_ngram=0, ban_unk=False):
    """Greedy decoding with the copy distribution: feed back the most likely word of eq. 9, until ``<eos>``.

    Args:
        model: a ``PointerGenerator``; batch: a dict of ``encode_pairs`` on its device.
        max_len: the most words written (``<eos>`` included).
        block_ngram: with k > 0, a word that would repeat an n-gram of length k already written gets
            probability 0 (Paulus et al. 2018, section 2.5, with k = 3); 0 blocks nothing.
        ban_unk: give ``<unk>`` probability 0, so the model writes a word it knows or copies one.

    Returns:
        (ids (B, T) int64 extended ids, attn_weights (B, T, S), p_gen (B, T)), T <= max_len; after a
        headline's ``<eos>`` its ids are 0 (padding), its weights and p_gen 0. ``<eos>`` itself is kept.
    """
    model.eval()
    enc_states, projected_key, state = model.encode(batch["src"], batch["key_padding_mask"])
    B = len(batch["src"])
    y = torch.full((B, 1), model.bos_id, dtype=torch.long, device=batch["src"].device)
    done = torch.zeros(B, dtype=torch.bool, device=y.device)
    ids, weights, gens = [], [], []
    for _ in range(max_len):
        s, context, attn_weights, p_gen, state = model.decode(y, state, enc_states, projected_key,
                                                              batch["key_padding_mask"])
        log_probs = final_log_probs(model.vocab_logits(s, context), attn_weights, p_gen, batch["src_ext"],
                                    batch["max_oov"])[:, 0]                     # (B, 1, V + n) -> (B, V + n)
        if ban_unk:
            log_probs[:, model.unk_id] = float("-inf")
        if block_ngram > 0 and len(ids) >= block_ngram - 1:
            written = torch.stack(ids, 1).tolist() if ids else [[] for _ in range(B)]
            for b, row in enumerate(written):
                prefix = tuple(row[len(row) - block_ngram + 1:])
                banned = {row[i + block_ngram - 1] for i in range(len(row) - block_ngram + 1)
                          if tuple(row[i:i + block_ngram - 1]) == prefix}
                log_probs[b, list(banned)] = float("-inf")
        y = log_probs.argmax(-1).masked_fill(done, 0)                            # (B,); 0 after <eos>
        ids.append(y)
        weights.append(attn_weights[:, 0].masked_fill(done[:, None], 0.0))
        gens.append(p_gen[:, 0].masked_fill(done, 0.0))
        done = done | (y == model.eos_id)
        if done.all():
            break
        y = y.unsqueeze(1)                                                        # (B,) -> (B, 1)
    return torch.stack(ids, 1), torch.stack(weights, 1), torch.stack(gens, 1)    # (B, T), (B, T, S), (B, T)


def generate(model, pairs, vocab, batch_size=512, block_ngram=0, ban_unk=False, device="cpu"):
    """Greedy headlines for ``(source, target)`` pairs (the target is not read): a list of word lists."""
    out = []
    for i in range(0, len(pairs), batch_size):
        batch = encode_pairs([(src, []) for src, _ in pairs[i:i + batch_size]], vocab)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        ids, _, _ = greedy_decode(model, batch, block_ngram=block_ngram, ban_unk=ban_unk)
        out += [decode_ids(row, vocab, oovs) for row, oovs in zip(ids.cpu(), batch["oovs"])]
    return out


def attention_map(model, source, vocab, block_ngram=0, ban_unk=False, device="cpu"):
    """What the decoder read for each word it wrote, for one article's ``source`` words (a heatmap);
    the decoding options of ``greedy_decode``.

    Returns:
        dict of ``source`` (S words), ``output`` (the T words written, ``<eos>`` excluded),
        ``attn_weights`` (T, S) float (row t: a_t of eq. 2) and ``p_gen`` (T,) float, on the CPU.
    """
    batch = encode_pairs([(list(source), [])], vocab)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    ids, attn_weights, p_gen = greedy_decode(model, batch, block_ngram=block_ngram, ban_unk=ban_unk)
    output = decode_ids(ids[0].cpu(), vocab, batch["oovs"][0])
    T = len(output)
    return {"source": list(source), "output": output, "attn_weights": attn_weights[0, :T].cpu(),
            "p_gen": p_gen[0, :T].cpu()}


def copy_task(n, seed, known, names):
    """``n`` (source, target) pairs of a task made for the pointer: sources of 4-6 words, each drawn from
    ``names`` (meant to lie outside the vocabulary) with probability 0.8, else from ``known``; the target
    repeats the source. Seeded by ``random.Random(seed)``.

    >>> copy_task(1, 0, ["a"], ["zed"])
    [(['zed', 'zed', 'zed', 'a', 'zed'], ['zed', 'zed', 'zed', 'a', 'zed'])]
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(names) if rng.random() < 0.8 else rng.choice(known) for _ in range(rng.randint(4, 6))]
        pairs.append((words, list(words)))
    return pairs
