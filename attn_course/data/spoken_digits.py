"""Spoken digits: the words "zero" .. "nine" said by 88 synthetic voices, as log-mel frames.

Source. ``tools/make_spoken_digits.py`` synthesised every word with Debian's ``espeak-ng``
(84 voices: accents en-us, en-gb, en-gb-scotland, en-gb-x-rp, en-029, en-gb-x-gbclan, each with the
voice variants m1-m7, f1-f4, klatt, croak, whisper; 2 renditions per word at rates 120-210 words
per minute and pitches 25-70) and ``flite`` (voices kal, awb, rms, slt; duration stretch 0.85-1.2),
resampled to 8 kHz and trimmed with ``sox``, added white noise at -60 dBFS and took 32 log-mel
bands (25 ms window, 10 ms hop, 60-3800 Hz, dB). The file ``attn_course/data/files/spoken_digits.npz``
(1.8 MB) ships with the package: 1760 words plus 600 frames of the noise alone.

Licences. espeak-ng and its voice variants: GPL-3.0-or-later. flite and its voices (kal; awb, rms
and slt from the CMU ARCTIC databases): the BSD-style licence of Carnegie Mellon University. sox:
GPL-2.0-or-later. The stored features are these programs' output on ten English words.

A **voice** is one accent+variant of espeak-ng (``"en-us+m3"``) or one flite voice (``"slt"``).
``split_voices`` holds out whole voices, so test accuracy measures recognition of voices never
heard in training. ``clips`` puts each word between stretches of silence (frames of the recorded
noise) of random lengths, seeded: clips of different lengths, mostly silence at both ends.

>>> from attn_course.data import spoken_digits
>>> train, test = spoken_digits.split_voices()
>>> batch = spoken_digits.clips(test[:2])
>>> batch.frames[0].shape[-1], batch.labels.shape
(32, torch.Size([2]))
"""
import functools
import random
from dataclasses import dataclass

import numpy as np
import torch

from ._packaged import package_file

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N_MELS, HOP_MS = 32, 10
FILE = "data/files/spoken_digits.npz"


@functools.lru_cache(maxsize=1)
def load():
    """Every word of the data set, decoded once (cached).

    Returns:
        dict with ``words``: list of 1760 float32 tensors (T_i, 32), log-mel power in dB, T_i = 13..87
        frames of 10 ms; ``digit`` (1760,) int64 labels 0-9; ``voice``: list of 1760 voice names;
        ``rate`` (1760,) float (words per minute for espeak-ng, duration stretch for flite);
        ``pitch`` (1760,) int (-1 for flite); ``noise``: (600, 32) float32 dB frames of the noise alone.

    Raises:
        FileNotFoundError: the package was installed without its data file.
    """
    path = package_file("attn_course", FILE)
    with np.load(path) as f:
        db = f["frames"].astype(np.float32) * float(f["db_step"]) + float(f["db_min"])   # uint8 -> dB
        noise = f["noise"].astype(np.float32) * float(f["db_step"]) + float(f["db_min"])
        starts = np.concatenate([[0], np.cumsum(f["lengths"])[:-1]])
        words = [torch.from_numpy(db[s:s + n]) for s, n in zip(starts, f["lengths"])]
        return {"words": words, "digit": torch.from_numpy(f["digit"].astype(np.int64)),
                "voice": [str(v) for v in f["voice"]], "rate": torch.from_numpy(f["rate"]),
                "pitch": torch.from_numpy(f["pitch"].astype(np.int64)), "noise": torch.from_numpy(noise)}


def voices():
    """The 88 voice names, in the order of the file."""
    return list(dict.fromkeys(load()["voice"]))


def split_voices(test_fraction=0.25, seed=0, validation_fraction=0.0):
    """Indices of the words, split by **voice**: no voice of the test set is heard in training.

    The voices are shuffled with ``random.Random(seed)``; the first ``round(88 * test_fraction)`` are
    the test voices. Returns ``(train_indices, test_indices)``, two sorted lists of ints.

    With ``validation_fraction`` > 0, the next ``round(88 * validation_fraction)`` voices of the same
    order are held out of training as well, and the call returns ``(train_indices, validation_indices,
    test_indices)``: three sets of voices with nothing in common. The test voices are those of the
    two-way split with the same ``test_fraction`` and ``seed``; the validation voices come out of training.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), ``validation_fraction`` outside [0, 1), or the two
            leaving no training voice.

    >>> train, validation, test = split_voices(validation_fraction=0.125)
    >>> test == split_voices()[1], len(train) + len(validation) + len(test)
    (True, 1760)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    names = voices()
    n_test, n_validation = round(len(names) * test_fraction), round(len(names) * validation_fraction)
    if not 0 <= validation_fraction < 1 or n_test + n_validation >= len(names):
        raise ValueError(f"validation_fraction must lie in [0, 1) and leave training voices: of {len(names)} voices "
                         f"test_fraction={test_fraction} takes {n_test} and validation_fraction="
                         f"{validation_fraction} takes {n_validation}")
    random.Random(seed).shuffle(names)
    held_out = {v: part for part, group in (("test", names[:n_test]), ("validation", names[n_test:n_test + n_validation]))
                for v in group}
    voice = load()["voice"]
    split = {part: [i for i, v in enumerate(voice) if held_out.get(v, "train") == part]
             for part in ("train", "validation", "test")}
    if validation_fraction == 0:
        return split["train"], split["test"]
    return split["train"], split["validation"], split["test"]


@dataclass
class Clips:
    """Words framed in silence. ``frames``: list of (T_i, 32) float32 dB tensors; ``labels`` (N,) int64;
    ``spans``: list of (start, end) frame indices of the word inside each clip; ``voice``: list of str;
    ``index``: the word indices they came from."""
    frames: list
    labels: torch.Tensor
    spans: list
    voice: list
    index: list

    def __len__(self):
        return len(self.frames)

    def voiced(self, threshold_db=15.0):
        """Per clip, a (T_i,) bool tensor: frames whose mean band power exceeds the noise by ``threshold_db``."""
        floor = load()["noise"].mean().item()
        return [f.mean(-1) > floor + threshold_db for f in self.frames]


def clips(indices, seed=0, min_silence=10, max_silence=40):
    """Put each word between ``min_silence``..``max_silence`` frames of silence at each end.

    The silence is a stretch of the stored noise frames, at a random place; the two lengths and the
    place are drawn from ``random.Random(seed)``, so the same call gives the same clips.

    Args:
        indices: word indices (from ``split_voices``).
        seed: int. min_silence, max_silence: frames (10 ms each) of silence before and after the word.

    Returns:
        ``Clips``; clip i has ``T_i = before + len(word) + after`` frames.

    Raises:
        ValueError: ``min_silence`` negative or above ``max_silence``, or ``max_silence`` > 300.
    """
    if not 0 <= min_silence <= max_silence <= 300:
        raise ValueError(f"need 0 <= min_silence <= max_silence <= 300; got {min_silence}, {max_silence}")
    data, rng = load(), random.Random(seed)
    noise = data["noise"]
    frames, spans = [], []
    for i in indices:
        word = data["words"][i]
        before, after = rng.randint(min_silence, max_silence), rng.randint(min_silence, max_silence)
        start = rng.randint(0, len(noise) - before - after)
        frames.append(torch.cat([noise[start:start + before], word, noise[start + before:start + before + after]]))
        spans.append((before, before + len(word)))
    return Clips(frames, data["digit"][list(indices)], spans, [data["voice"][i] for i in indices], list(indices))


@dataclass
class Utterances:
    """Connected digits: 2-4 words of one voice in one recording, with silence around and short pauses between.

    ``frames``: list of N float32 dB tensors (T_i, 32), frames of 10 ms; ``labels`` (N, max_digits) int64,
    the digits in the order said, padded with -1; ``lengths`` (N,) int64, the number of digits k_i;
    ``spans``: per utterance a list of k_i ``(start, end)`` frame indices, word j is ``frames[i][start:end]``;
    ``voice``: list of N str; ``index``: per utterance the k_i word indices (of ``load()["words"]``) said.
    """
    frames: list
    labels: torch.Tensor
    lengths: torch.Tensor
    spans: list
    voice: list
    index: list

    def __len__(self):
        return len(self.frames)


def utterances(indices, seed=0, n=1000, min_digits=2, max_digits=4, min_pause=5, max_pause=20, min_silence=10,
               max_silence=40):
    """Join words of one voice into utterances of ``min_digits``..``max_digits`` connected digits.

    Each utterance draws, from ``random.Random(seed)``: a voice (uniformly among the voices of
    ``indices``), its number of digits k, k different words of that voice among ``indices`` (so a
    digit may come twice, in two renditions), ``min_silence``..``max_silence`` frames of silence
    before the first word and after the last, ``min_pause``..``max_pause`` frames between two
    words, and for each stretch of silence a random place in the stored noise (as ``clips``). The
    same call gives the same utterances.

    Args:
        indices: word indices, e.g. one part of ``split_voices``: a test utterance then holds test voices only.
        seed: int. n: the number of utterances.
        min_digits, max_digits: the number of words per utterance, 1 <= min_digits <= max_digits; every
            voice of ``indices`` must have at least ``max_digits`` words there.
        min_pause, max_pause: frames (10 ms each) of silence between two words.
        min_silence, max_silence: frames of silence before the first word and after the last.

    Returns:
        ``Utterances``; utterance i has ``T_i = before + sum of the word lengths + pauses + after`` frames.

    Raises:
        ValueError: an empty ``indices``, ``n`` < 0, digit counts or silence lengths out of order or
            negative (or above 300 frames), or a voice with fewer than ``max_digits`` words in ``indices``.

    >>> train, test = split_voices()
    >>> batch = utterances(test, n=3)
    >>> batch.labels.shape, batch.lengths.tolist(), [len(s) for s in batch.spans]
    (torch.Size([3, 4]), [3, 2, 3], [3, 2, 3])
    """
    if not (isinstance(n, int) and n >= 0 and 1 <= min_digits <= max_digits and 0 <= min_pause <= max_pause <= 300
            and 0 <= min_silence <= max_silence <= 300):
        raise ValueError(f"need n >= 0, 1 <= min_digits <= max_digits, 0 <= min_pause <= max_pause <= 300 and "
                         f"0 <= min_silence <= max_silence <= 300; got n={n!r}, digits {min_digits}..{max_digits}, "
                         f"pause {min_pause}..{max_pause}, silence {min_silence}..{max_silence}")
    data, rng = load(), random.Random(seed)
    noise = data["noise"]
    by_voice = {}
    for i in indices:
        by_voice.setdefault(data["voice"][i], []).append(i)
    short = {v: len(words) for v, words in by_voice.items() if len(words) < max_digits}
    if not by_voice or short:
        raise ValueError(f"every voice of indices needs at least max_digits={max_digits} words; got "
                         f"{len(list(indices))} indices, voices with fewer words: {short}")
    names = sorted(by_voice)

    def silence(lo, hi):
        length = rng.randint(lo, hi)
        start = rng.randint(0, len(noise) - length)
        return noise[start:start + length]                                   # (length, 32)

    frames, spans, voice, index = [], [], [], []
    labels = torch.full((n, max_digits), -1, dtype=torch.long)
    for u in range(n):
        name = rng.choice(names)
        words = rng.sample(by_voice[name], rng.randint(min_digits, max_digits))
        pieces, span = [silence(min_silence, max_silence)], []
        for j, i in enumerate(words):
            if j > 0:
                pieces.append(silence(min_pause, max_pause))
            start = sum(len(p) for p in pieces)                              # frames before this word
            pieces.append(data["words"][i])
            span.append((start, start + len(data["words"][i])))
        pieces.append(silence(min_silence, max_silence))
        frames.append(torch.cat(pieces))                                     # (T_i, 32)
        labels[u, :len(words)] = data["digit"][words]
        spans.append(span)
        voice.append(name)
        index.append(words)
    lengths = (labels != -1).sum(1)                                          # (N,)
    return Utterances(frames, labels, lengths, spans, voice, index)
