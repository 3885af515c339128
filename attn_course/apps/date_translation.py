"""Lesson 18's application: dates as people write them -> ISO dates, with the encoder-decoder Transformer.

The data (``attn_course.data.dates``): "<fr_FR> jeudi 3 juin 1 9 9 9" -> "1 9 9 9 - 0 6 - 0 3", 28 formats of
seven locales. The ISO order (year, month, day) differs from the source's in 24 of them, so a model that
reads the right source token for each output token has alignments that cross.

The model is ``attn_course.encoder_decoder.TransformerTranslator``, trained with the recipe of Vaswani et
al. (2017, section 5): Adam with beta_2 = 0.98, the warm-up schedule (eq. 3), dropout and label smoothing
(section 5.4). This module holds what the lesson repeats: encoding the pairs, the training loop, decoding
a list of pairs, exact match per format, and reading an alignment off the cross-attention.

Shapes: B batch, S source length, T target length (10 characters + ``<eos>``), N layers, H heads, V vocabulary.
"""
import torch
from torch.nn import functional as F

from ..data import Vocab, pad_batch
from ..data import dates as date_data
from ..encoder_decoder import greedy_decode, noam_schedule, shift_right
from ..training import fit, replayable

BOS, EOS = "<bos>", "<eos>"
# Target positions of the digits in "YYYY-MM-DD" and the field each one writes (the dashes are not aligned).
DIGIT_FIELDS = ((0, "year"), (1, "year"), (2, "year"), (3, "year"), (5, "month"), (6, "month"), (8, "day"),
                (9, "day"))


def build_vocabs(pairs):
    """Source and target ``Vocab``s of ``DatePair``s: ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3, then tokens."""
    return (Vocab([[BOS, EOS]] + [p.src for p in pairs]), Vocab([[BOS, EOS]] + [p.tgt for p in pairs]))


def encode(pairs, src_vocab, tgt_vocab):
    """Pad ``DatePair``s into a dict of ``src`` (B, S) int64 (padding 0) and ``tgt_out`` (B, 11) = the ten
    characters and ``<eos>``; the decoder's input is ``shift_right(tgt_out, bos_id)``."""
    eos = tgt_vocab.stoi[EOS]
    src, _ = pad_batch([src_vocab.encode(p.src) for p in pairs])
    tgt_out, _ = pad_batch([tgt_vocab.encode(p.tgt) + [eos] for p in pairs])
    return {"src": src, "tgt_out": tgt_out}


@replayable
def train(model, data, steps, batch_size=128, peak_lr=1e-3, warmup_steps=200, label_smoothing=0.1, seed=0,
          shift=shift_right, progress=True, desc="training"):
    """Train a ``TransformerTranslator`` with teacher forcing; returns the loss of every step (a list).

    Adam (beta = 0.9, 0.98, eps = 1e-9) with the warm-up schedule of Vaswani et al. (2017, eq. 3) scaled so
    that its peak, at ``warmup_steps``, is ``peak_lr``; cross-entropy with ``label_smoothing`` (section 5.4),
    padding ignored. ``shift(tgt_out, bos_id)`` builds the decoder's input (``shift_right``; the lesson's bug
    hunt passes another). ``steps`` batches of ``batch_size`` pairs drawn with replacement from a seeded CPU
    generator, so a run is repeatable.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    factor = noam_schedule(model.d_model, warmup_steps)
    scale = peak_lr / factor(warmup_steps - 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: scale * factor(step))
    device = next(model.parameters()).device

    def batch_loss(idx):
        src, tgt_out = data["src"][idx].to(device), data["tgt_out"][idx].to(device)
        S = int((src != 0).sum(-1).max())                                       # drop all-padding columns
        logits = model(src[:, :S], shift(tgt_out, model.bos_id))                # (b, T, V)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0,
                               label_smoothing=label_smoothing)

    batches = [torch.randint(0, len(data["src"]), (batch_size,), generator=g) for _ in range(steps)]
    return fit(model, batches, batch_loss, opt, scheduler=scheduler, desc=desc, progress=progress).step_loss


def strip(ids, vocab):
    """One decoded row of ids -> its tokens, cut at ``<eos>`` (or padding)."""
    tokens = []
    for token in vocab.decode([int(i) for i in ids]):
        if token in (EOS, "<pad>"):
            break
        tokens.append(token)
    return tokens


def translate(model, pairs, src_vocab, tgt_vocab, batch_size=500):
    """Greedy translations (``encoder_decoder.greedy_decode``, KV cache) of ``DatePair``s: a list of token lists."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(pairs), batch_size):
        src = encode(pairs[i:i + batch_size], src_vocab, tgt_vocab)["src"].to(device)
        ids, _ = greedy_decode(model, src, max_len=12)
        out += [strip(row, tgt_vocab) for row in ids.cpu()]
    return out


def exact_match(hyps, pairs):
    """``(accuracy, {format: accuracy})``: the fraction of ``hyps`` equal to their pair's target, overall and
    per format label."""
    hits, by_format = [h == p.tgt for h, p in zip(hyps, pairs)], {}
    for hit, p in zip(hits, pairs):
        by_format.setdefault(p.fmt, []).append(hit)
    return sum(hits) / len(hits), {f: sum(v) / len(v) for f, v in sorted(by_format.items())}


@torch.no_grad()
def cross_attention(model, pairs, src_vocab, tgt_vocab):
    """Teacher-forced cross-attention of every decoder layer on the reference targets: (B, N, H, 11, S)."""
    device = next(model.parameters()).device
    model.eval()
    data = encode(pairs, src_vocab, tgt_vocab)
    src, tgt_out = data["src"].to(device), data["tgt_out"].to(device)
    _, weights = model(src, shift_right(tgt_out, model.bos_id), need_weights=True)
    return torch.stack(weights["cross"], 1).cpu()                               # N x (B, H, T, S) -> (B, N, H, T, S)


def alignment(weights):
    """The source position each digit of the ISO date attends to most: (..., T, S) -> (..., 8) int64, in the
    order of ``DIGIT_FIELDS`` (year, month, day)."""
    rows = torch.tensor([t for t, _ in DIGIT_FIELDS])
    return weights[..., rows, :].argmax(-1)


def crosses(peaks):
    """True where an alignment (..., 8) is not monotone: some digit's peak lies left of the previous digit's."""
    return (peaks[..., 1:] < peaks[..., :-1]).any(-1)


def in_field(peaks, pairs):
    """Per pair, the fraction of the 8 digits whose peak lies inside the source span of their own field:
    peaks (B, ..., 8) -> (B, ...) float. ``pairs`` gives the spans (``DatePair.spans``)."""
    inside = torch.zeros(peaks.shape, dtype=torch.bool)
    for b, p in enumerate(pairs):
        for j, (_, field) in enumerate(DIGIT_FIELDS):
            start, end = p.spans[field]
            inside[b, ..., j] = (peaks[b, ..., j] >= start) & (peaks[b, ..., j] < end)
    return inside.float().mean(-1)


def source_tokens(text, src_vocab):
    """A typed date, ``"<fr_FR> jeudi 3 juin 1999"``, -> its source tokens (the tag, then ``dates.tokenize``).

    Raises:
        ValueError: no known locale tag first, or a token the model has never seen.
    """
    tag, _, rest = text.strip().partition(" ")
    if tag.strip("<>") not in date_data.LOCALES:
        raise ValueError(f"start with a locale tag, one of {', '.join('<' + loc + '>' for loc in date_data.LOCALES)}; "
                         f"got {tag!r}")
    tokens = [f"<{tag.strip('<>')}>"] + date_data.tokenize(rest)
    unknown = [t for t in tokens if t not in src_vocab.stoi]
    if unknown:
        raise ValueError(f"the model has never seen {', '.join(repr(t) for t in unknown)}: write the date in the "
                         f"locale's own words")
    return tokens
