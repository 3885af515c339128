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


def split_voices(test_fraction=0.25, seed=0):
    """Indices of the words, split by **voice**: no voice of the test set is heard in training.

    The voices are shuffled with ``random.Random(seed)``; the first ``round(88 * test_fraction)`` are
    the test voices. Returns ``(train_indices, test_indices)``, two sorted lists of ints.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    names = voices()
    random.Random(seed).shuffle(names)
    test_voices = set(names[:round(len(names) * test_fraction)])
    voice = load()["voice"]
    test = [i for i, v in enumerate(voice) if v in test_voices]
    train = [i for i, v in enumerate(voice) if v not in test_voices]
    return train, test


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
