"""Extractive summarisation with a hierarchical attention network (lesson 14).

An article is a list of sentences, a sentence a list of words. The model reads it in two levels, as in
Yang et al. (2016), *Hierarchical Attention Networks for Document Classification*, eqs. 5-10:

    word level:      h_it = tanh(W [x_i,t-1; x_it; x_i,t+1])             (B, N, T, 3E) -> (B, N, T, 2H)
                     (x = embeddings; the paper uses a word BiGRU here, this is lighter)
                     a_it = softmax_t(tanh(W_w h_it + b_w) . u_w)         over the T words of sentence i
                     s_i  = sum_t a_it h_it                               (B, N, T, 2H) -> (B, N, 2H)
    sentence level:  h_i  = BiGRU(s_i + position_i)                       (B, N, 2H) -> (B, N, 2H)
                     b_i  = softmax_i(tanh(W_s h_i + b_s) . u_s)          over the N sentences
                     d    = sum_i b_i h_i                                 (B, N, 2H) -> (B, 2H)

For classification Yang et al. feed the document vector d to a classifier. Here the sentence weights
b_i *are* the output: the summary is the sentence with the largest weight, like a pointer network
(Vinyals et al. 2015) pointing at one sentence. Training maximises log b_i of the oracle sentence:
the sentence with the highest ROUGE against the article's title and subtitle.

Shape legend: B articles, N sentences per article (padded), T words per sentence (padded), E embedding
size, H GRU size per direction, V vocabulary. **key_padding_mask: True = padding**, as in
``torch.nn.MultiheadAttention``.
"""
import collections
import math
import random

import torch
from torch import nn
from torch.nn import functional as F

from .. import data as course_data
from ..data import news
from ..pooling import attention_pool
from ..training import fit, replayable, shuffled_batches

MAX_SENTENCES, MAX_WORDS = 20, 32


# ---------------------------------------------------------------- ROUGE (Lin 2004)

def _ngrams(tokens, n):
    return collections.Counter(zip(*(tokens[i:] for i in range(n))))        # n-gram -> count


def _overlap(candidate_counts, reference_counts):
    return sum(min(c, reference_counts[g]) for g, c in candidate_counts.items() if g in reference_counts)


def _f1(overlap, n_candidate, n_reference):
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def rouge_n_f1(candidate, reference, n=1):
    """ROUGE-N F1 between two token lists (Lin 2004, section 2): clipped n-gram overlap.

    overlap = sum over n-grams g of min(count_candidate(g), count_reference(g));
    precision = overlap / #candidate n-grams, recall = overlap / #reference n-grams, F1 their harmonic mean.

    Args:
        candidate, reference: lists of str tokens (use ``news.words`` to tokenize).
        n: the n-gram length, >= 1.

    Returns:
        float in [0, 1]; 0.0 when either side has no n-gram.

    Raises:
        ValueError: n < 1.

    >>> round(rouge_n_f1("the cat sat on the mat".split(), "the cat is on the mat".split()), 4)
    0.8333
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    cand, ref = _ngrams(list(candidate), n), _ngrams(list(reference), n)
    return _f1(_overlap(cand, ref), sum(cand.values()), sum(ref.values()))


def rouge_1_f1(candidate, reference):
    """ROUGE-1 F1 of two token lists: ``rouge_n_f1(candidate, reference, n=1)``."""
    return rouge_n_f1(candidate, reference, 1)


def rouge_l_f1(candidate, reference):
    """ROUGE-L F1 (Lin 2004, section 3): from the longest common subsequence of the two token lists.

    >>> round(rouge_l_f1("police killed the gunman".split(), "the gunman police killed".split()), 2)
    0.5
    """
    cand, ref = list(candidate), list(reference)
    if not cand or not ref:
        return 0.0
    prev = [0] * (len(ref) + 1)
    for c in cand:                                     # dynamic programme, one row at a time
        row = [0]
        for j, r in enumerate(ref):
            row.append(prev[j] + 1 if c == r else max(prev[j + 1], row[j]))
        prev = row
    return _f1(prev[-1], len(cand), len(ref))


def rouge(candidate_text, reference_text):
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of two texts, tokenized with ``news.words``: a dict r1, r2, rl."""
    cand, ref = news.words(candidate_text), news.words(reference_text)
    return {"r1": rouge_n_f1(cand, ref, 1), "r2": rouge_n_f1(cand, ref, 2), "rl": rouge_l_f1(cand, ref)}


def reference_text(article):
    """What a summary is scored against: the title, and the subtitle where it is a real standfirst.

    (``article["standfirst"]``; see ``attn_course.data.news.articles`` for when a subtitle is left out.)
    """
    return f"{article['title']} {article['standfirst']}".strip()


def sentences(article, max_sentences=MAX_SENTENCES):
    """The article's first ``max_sentences`` sentences: what the model and the baselines choose from."""
    return list(article["sentences"][:max_sentences])


def oracle_scores(article, max_sentences=MAX_SENTENCES):
    """Per sentence, (ROUGE-1 F1 + ROUGE-2 F1) / 2 against ``reference_text``: a list of N floats."""
    ref = news.words(reference_text(article))
    ref_1, ref_2 = _ngrams(ref, 1), _ngrams(ref, 2)
    out = []
    for cand in article["words"][:max_sentences]:
        r1 = _f1(_overlap(_ngrams(cand, 1), ref_1), len(cand), len(ref))
        r2 = _f1(_overlap(_ngrams(cand, 2), ref_2), len(cand) - 1, len(ref) - 1)
        out.append((r1 + r2) / 2)
    return out


def oracle_index(article, max_sentences=MAX_SENTENCES):
    """The training label: the index of the sentence with the best ``oracle_scores`` (first on ties)."""
    scores = oracle_scores(article, max_sentences)
    return max(range(len(scores)), key=scores.__getitem__)


# ---------------------------------------------------------------- tensors

def build_vocab(articles, min_count=2):
    """A ``data.Vocab`` of the words seen at least ``min_count`` times in ``articles`` (most frequent first)."""
    counts = collections.Counter(w for a in articles for s in a["words"][:MAX_SENTENCES] for w in s)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return course_data.Vocab([kept])


def encode(articles, vocab, max_sentences=MAX_SENTENCES, max_words=MAX_WORDS):
    """Articles -> padded word ids and their padding mask.

    Returns:
        ids: (B, N, T) int64, N = max_sentences, T = max_words, ``vocab.pad_id`` where there is no word;
        key_padding_mask: (B, N, T) bool, **True = padding** (a padding sentence is all True).
    """
    pad, empty = vocab.pad_id, [vocab.pad_id] * max_words
    rows = []
    for article in articles:
        sents = [vocab.encode(w[:max_words]) for w in article["words"][:max_sentences]]
        sents = [ids + [pad] * (max_words - len(ids)) for ids in sents]           # pad each sentence to T
        rows.append(sents + [empty] * (max_sentences - len(sents)))               # pad the article to N
    ids = torch.tensor(rows, dtype=torch.long).reshape(len(articles), max_sentences, max_words)  # (B, N, T)
    return ids, ids == vocab.pad_id                                      # (B, N, T) each


# ---------------------------------------------------------------- the model

def word_attention(word_scores, h_words, key_padding_mask):
    """Word-level attention of a hierarchical network: one softmax **per sentence**, over its T words.

    word_weights[b, i] = softmax over t of word_scores[b, i, t] (padding words excluded);
    sentence_vectors[b, i] = sum_t word_weights[b, i, t] h_words[b, i, t]  (Yang et al. 2016, eqs. 6-7).
    The words of each real sentence get weights that sum to 1; a padding sentence (all its words
    padding) gets all-zero weights and a zero vector.

    Args:
        word_scores: (B, N, T) float, one score per word.
        h_words: (B, N, T, D) float, the word vectors.
        key_padding_mask: (B, N, T) bool, **True = padding** word.

    Returns:
        (sentence_vectors, word_weights): (B, N, D) and (B, N, T).

    Raises:
        ValueError: the shapes do not line up.
    """
    B, N, T = word_scores.shape
    _, word_weights = attention_pool(word_scores.reshape(B * N, T), h_words.reshape(B * N, T, -1),
                                     key_padding_mask.reshape(B * N, T))          # one softmax per sentence
    word_weights = word_weights.view(B, N, T)                                      # (B*N, T) -> (B, N, T)
    sentence_vectors = (word_weights.unsqueeze(-2) @ h_words).squeeze(-2)          # (B, N, 1, T) @ (B, N, T, D) -> (B, N, D)
    return sentence_vectors, word_weights


class AdditiveScore(nn.Module):
    """Yang et al.'s score against a learned context vector u: score_s = tanh(W h_s + b) . u (eqs. 5-6, 8-9).

    The score of ``attn_course.pooling.AdditiveAttention`` without a query (the bias b stands in for
    ``W_q q``; u plays v), with u drawn from N(0, 1 / attn_dim).

    Args:
        key_dim: the size of each h_s; attn_dim: A, the width of the hidden layer W.
    """

    def __init__(self, key_dim, attn_dim):
        super().__init__()
        self.proj = nn.Linear(key_dim, attn_dim)
        self.context_vector = nn.Parameter(torch.randn(attn_dim) / math.sqrt(attn_dim))

    def forward(self, hidden):
        """hidden (..., S, key_dim) -> attn_scores (..., S)."""
        return torch.tanh(self.proj(hidden)) @ self.context_vector                 # (..., S, A) @ (A,) -> (..., S)


class HierarchicalSummarizer(nn.Module):
    """A small hierarchical attention network whose sentence weights pick the summary sentence.

    Word level: embeddings, a window of 3 words mixed by one linear layer and tanh (a light stand-in
    for the paper's word GRU), additive word attention within each sentence. Sentence level: a learned
    position embedding (news puts the point first; the model may learn that), a bidirectional GRU
    and additive sentence attention over the article's sentences.

    Args:
        vocab_size: V. embed_dim: E. hidden: H, the GRU size per direction (word vectors have 2H).
        attn_dim: size of the attention projections. max_sentences: N, the number of sentence positions.

    ``forward(ids (B, N, T), key_padding_mask (B, N, T))`` returns a dict with ``sentence_scores``
    (B, N; -inf on padding sentences), ``sentence_weights`` (B, N), ``word_weights`` (B, N, T) and
    ``document`` (B, 2H). ``word_pool`` (default ``word_attention``) is an attribute, so another
    implementation can be swapped in. Reference: Yang et al. (2016), section 2.
    """

    def __init__(self, vocab_size, embed_dim=32, hidden=16, attn_dim=16, max_sentences=MAX_SENTENCES):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.word_proj = nn.Linear(3 * embed_dim, 2 * hidden)                   # a word and its two neighbours
        self.word_score = AdditiveScore(2 * hidden, attn_dim)
        self.word_pool = word_attention
        self.position = nn.Embedding(max_sentences, 2 * hidden)                  # lead bias is learnable
        self.sentence_gru = nn.GRU(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.sentence_score = AdditiveScore(2 * hidden, attn_dim)

    def forward(self, ids, key_padding_mask):
        B, N, T = ids.shape
        x = self.embedding(ids)                                                  # (B, N, T) -> (B, N, T, E)
        padded = F.pad(x, (0, 0, 1, 1))                                          # (B, N, T + 2, E): zeros at both ends
        window = torch.cat([padded[:, :, :-2], x, padded[:, :, 2:]], dim=-1)     # (B, N, T, 3E): previous, word, next
        real = ~key_padding_mask                                                 # (B, N, T): compute real words only
        h_words = window.new_zeros(B, N, T, self.word_proj.out_features)         # (B, N, T, 2H), 0 on padding
        h_words[real] = torch.tanh(self.word_proj(window[real]))                 # (M, 3E) -> (M, 2H), M real words
        s, word_weights = self.word_pool(self.word_score(h_words), h_words, key_padding_mask)  # (B, N, 2H), (B, N, T)
        sentence_padding = key_padding_mask.all(-1)                              # (B, N): no word at all
        h_sent, _ = self.sentence_gru(s + self.position.weight[:N])              # (B, N, 2H) + (N, 2H) -> (B, N, 2H)
        scores = self.sentence_score(h_sent)                                     # (B, N)
        document, sentence_weights = attention_pool(scores, h_sent, sentence_padding)   # (B, 2H), (B, N)
        return {"sentence_scores": scores.masked_fill(sentence_padding, float("-inf")),   # (B, N)
                "sentence_weights": sentence_weights, "word_weights": word_weights, "document": document}


# ---------------------------------------------------------------- training and evaluation

@replayable
def train(model, ids, key_padding_mask, labels, epochs=4, batch_size=32, lr=5e-3, seed=0, progress=True):
    """Train with cross-entropy on the sentence scores (= -log sentence_weights[label]); AdamW on batches
    shuffled each epoch, gradients clipped to norm 1.

    Args:
        ids, key_padding_mask: (A, N, T) from ``encode``; labels: (A,) int64 oracle sentence indices.
        progress: show a tqdm progress bar (``tqdm.auto``).

    Returns:
        the list of mean training losses, one per epoch.
    """
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def batch_loss(batch):
        out = model(ids[batch].to(device), key_padding_mask[batch].to(device))  # sentence_scores (b, N)
        return F.cross_entropy(out["sentence_scores"], labels[batch].to(device))

    return fit(model, shuffled_batches(len(ids), batch_size, seed), batch_loss, opt, epochs, clip_grad_norm=1.0,
               progress=progress).epoch_loss


@torch.no_grad()
def predict(model, ids, key_padding_mask, batch_size=256):
    """Sentence weights (A, N) and word weights (A, N, T) of a trained model, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    sw, ww = [], []
    for start in range(0, len(ids), batch_size):
        out = model(ids[start:start + batch_size].to(device), key_padding_mask[start:start + batch_size].to(device))
        sw.append(out["sentence_weights"].cpu())
        ww.append(out["word_weights"].cpu())
    return torch.cat(sw), torch.cat(ww)


def pick_lead(article, k=1):
    """Lead-k: the first k sentences (indices)."""
    return list(range(min(k, len(sentences(article)))))


def pick_random(article, rng, k=1):
    """k distinct random sentences from ``rng`` (a ``random.Random``), in document order."""
    n = len(sentences(article))
    return sorted(rng.sample(range(n), min(k, n)))


def pick_top(weights, article, k=1):
    """The k sentences with the largest weights (ties: the earlier one), returned in document order."""
    n = len(sentences(article))
    w = torch.as_tensor(weights)[:n]
    return sorted(torch.argsort(-w, stable=True)[:k].tolist())


def score_picks(articles, picks):
    """Mean ROUGE-1/2/L F1 (in %) of the picked sentences, joined in document order, against the references."""
    totals = collections.Counter()
    for article, chosen in zip(articles, picks):
        summary = " ".join(sentences(article)[i] for i in chosen)
        totals.update(rouge(summary, reference_text(article)))
    return {key: 100 * totals[key] / len(articles) for key in ("r1", "r2", "rl")}


def article_scores(articles, picks, key="r1"):
    """Per article, the ROUGE F1 (in %) of the picked sentences against its reference: a list of floats.

    ``key`` is ``"r1"``, ``"r2"`` or ``"rl"``; the mean of the list is ``score_picks(...)[key]``.
    """
    if key not in ("r1", "r2", "rl"):
        raise ValueError(f"key must be 'r1', 'r2' or 'rl'; got {key!r}")
    return [100 * rouge(" ".join(sentences(a)[i] for i in chosen), reference_text(a))[key]
            for a, chosen in zip(articles, picks)]


def paired_bootstrap(scores_a, scores_b, resamples=10_000, level=0.95, seed=0):
    """Paired bootstrap of the mean difference ``a - b`` of two systems scored on the same items.

    The items (articles) are resampled with replacement ``resamples`` times, the same draw for both
    systems, so that what varies is which articles are in the test set, not the pairing (Koehn 2004;
    Berg-Kirkpatrick, Burkett & Klein 2012). The interval is the percentile interval of the resampled
    mean differences.

    Args:
        scores_a, scores_b: sequences of floats of the same length n >= 2, one score per item.
        resamples: int >= 100; level: the interval's coverage, in (0, 1); seed: the generator's seed.

    Returns:
        dict: ``diff`` (the observed mean of a - b), ``low`` and ``high`` (the interval), ``p_not_better``
        (the share of resamples whose mean difference is <= 0), ``n``.

    Raises:
        ValueError: different lengths, fewer than 2 items, resamples < 100, or level outside (0, 1).

    >>> r = paired_bootstrap([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0], resamples=200)
    >>> r["diff"], r["low"], r["high"]
    (1.0, 1.0, 1.0)
    """
    a, b = torch.as_tensor(scores_a, dtype=torch.float64), torch.as_tensor(scores_b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError(f"expected two score lists of the same length >= 2; got {tuple(a.shape)} and {tuple(b.shape)}")
    if resamples < 100 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 100 and level in (0, 1); got {resamples} and {level}")
    diff = a - b                                                                     # (n,)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(diff), (resamples, len(diff)), generator=g)           # (R, n) the same rows for a and b
    means = diff[idx].mean(-1)                                                       # (R,)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"diff": diff.mean().item(), "low": low, "high": high,
            "p_not_better": (means <= 0).double().mean().item(), "n": len(diff)}


def baseline_table(articles, weights=None, seed=0):
    """ROUGE F1 (%) of Lead-1, Lead-3, random-1, oracle-1 and, given sentence weights (A, N), the model's top-1 and top-3."""
    rng = random.Random(seed)
    rows = {"Lead-1": [pick_lead(a, 1) for a in articles],
            "Lead-3": [pick_lead(a, 3) for a in articles],
            "random-1": [pick_random(a, rng, 1) for a in articles],
            "oracle-1 (upper bound)": [[oracle_index(a)] for a in articles]}
    if weights is not None:
        rows["model top-1"] = [pick_top(w, a, 1) for w, a in zip(weights, articles)]
        rows["model top-3"] = [pick_top(w, a, 3) for w, a in zip(weights, articles)]
    return {name: score_picks(articles, picks) for name, picks in rows.items()}


def format_table(table):
    """The table of ``baseline_table`` as aligned text."""
    lines = [f"{'summary':24s} {'ROUGE-1':>8s} {'ROUGE-2':>8s} {'ROUGE-L':>8s}"]
    lines += [f"{name:24s} {s['r1']:8.2f} {s['r2']:8.2f} {s['rl']:8.2f}" for name, s in table.items()]
    return "\n".join(lines)
