"""Make the spoken-digits data set of lesson 13: `attn_course/data/files/spoken_digits.npz`.

Run once by maintainers (the result is committed, so learners need no audio tools):

    apt-get install -y espeak-ng sox flite
    .venv/bin/python tools/make_spoken_digits.py

What it does. Each of the words "zero" .. "nine" is spoken by many synthetic voices, at two
speaking rates and pitches per voice and word, drawn with a fixed seed:

- espeak-ng (formant synthesis), 6 English accents x 14 voice variants = 84 voices:
  accents en-us, en-gb, en-gb-scotland, en-gb-x-rp, en-029 (Caribbean), en-gb-x-gbclan (Lancaster);
  variants m1-m7, f1-f4, klatt, croak, whisper; rate `-s` in {120, 150, 180, 210} words per minute,
  pitch `-p` in {25, 40, 55, 70} (0-99 scale).
- flite (Festival-lite), 4 voices: kal (diphone), awb, rms, slt (clustergen voices built from the
  CMU ARCTIC recordings of three real speakers); duration stretch in {0.85, 1.0, 1.2}.

88 voices x 10 digits x 2 renditions = 1760 words. sox resamples each to 8 kHz mono 16 bit, trims
the silence at both ends (threshold 1 % of full scale) and normalises the peak to -3 dBFS. The
waveform then gets white noise at -60 dBFS (seeded), as a quiet microphone would add, and becomes
32 log-mel frames: 25 ms Hann window, 10 ms hop, 256-point FFT, 32 mel bands from 60 to 3800 Hz,
power in dB (10 log10). Values are stored as uint8 in 0.5 dB steps from -60 dB (0.25 dB rounding).
600 frames of the noise alone are stored too: the loader pads words with them to make the
silence around a spoken word.

Licences. espeak-ng and its voice variant files: GPL-3.0-or-later (https://github.com/espeak-ng/espeak-ng).
flite and its voices: the BSD-style licence of Carnegie Mellon University and the University of
Edinburgh (http://cmuflite.org); the awb, rms and slt voices are built from the CMU ARCTIC
databases, distributed under the same free licence. sox: GPL-2.0-or-later / LGPL. The stored
features are the output of these programs on ten English words.
"""
import io
import random
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "klatt", "croak", "whisper"]
ESPEAK_RATES, ESPEAK_PITCHES = [120, 150, 180, 210], [25, 40, 55, 70]
FLITE_VOICES, FLITE_STRETCH = ["kal", "awb", "rms", "slt"], [0.85, 1.0, 1.2]
RENDITIONS = 2

SAMPLE_RATE, N_FFT, WIN, HOP, N_MELS, FMIN, FMAX = 8000, 256, 200, 80, 32, 60.0, 3800.0
NOISE_DBFS, DB_MIN, DB_STEP = -60.0, -60.0, 0.5
OUT = Path(__file__).resolve().parents[1] / "attn_course" / "data" / "files" / "spoken_digits.npz"
SOX_TRIM = ["-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-t", "wav", "-",
            "silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse", "norm", "-3"]


def mel_filterbank():
    """(N_MELS, N_FFT // 2 + 1) triangular filters on the HTK mel scale."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(FMIN), mel(FMAX), N_MELS + 2))
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))


FILTERS = mel_filterbank()
WINDOW = np.hanning(WIN + 2)[1:-1]


def log_mel(x):
    """(n,) float waveform in [-1, 1] -> (T, N_MELS) power in dB, T = 1 + (n - WIN) // HOP."""
    T = 1 + (len(x) - WIN) // HOP
    frames = np.stack([x[t * HOP:t * HOP + WIN] * WINDOW for t in range(T)])     # (T, WIN)
    power = np.abs(np.fft.rfft(frames, n=N_FFT)) ** 2                              # (T, N_FFT/2 + 1)
    return 10.0 * np.log10(power @ FILTERS.T + 1e-10)                              # (T, N_MELS)


def quantise(db):
    return np.clip(np.round((db - DB_MIN) / DB_STEP), 0, 255).astype(np.uint8)


def synthesise(job):
    """One word -> (n,) float waveform at 8 kHz, trimmed and normalised."""
    engine, voice, word, rate, pitch = job
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "espeak-ng":
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), word],
                           check=True)
        else:
            subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={rate}", "-t", word,
                            "-o", str(raw)], check=True)
        wav = subprocess.run(["sox", str(raw), *SOX_TRIM], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0


def main():
    rng = random.Random(0)
    jobs, meta = [], []
    voices = [("espeak-ng", f"{a}+{v}") for a in ACCENTS for v in VARIANTS] + [("flite", v) for v in FLITE_VOICES]
    for engine, voice in voices:
        for digit, word in enumerate(WORDS):
            for _ in range(RENDITIONS):
                if engine == "espeak-ng":
                    rate, pitch = rng.choice(ESPEAK_RATES), rng.choice(ESPEAK_PITCHES)
                else:
                    rate, pitch = rng.choice(FLITE_STRETCH), -1
                jobs.append((engine, voice, word, rate, pitch))
                meta.append((digit, voice, rate, pitch))
    with ThreadPoolExecutor(2) as pool:
        waves = list(pool.map(synthesise, jobs))
    noise_rng = np.random.default_rng(0)
    sigma = 10 ** (NOISE_DBFS / 20)
    feats = [quantise(log_mel(x + sigma * noise_rng.standard_normal(len(x)))) for x in waves]
    noise = quantise(log_mel(sigma * noise_rng.standard_normal(WIN + HOP * 599)))           # (600, N_MELS)
    lengths = np.array([len(f) for f in feats], dtype=np.int32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, frames=np.concatenate(feats), lengths=lengths, noise=noise,
        digit=np.array([m[0] for m in meta], dtype=np.int8),
        voice=np.array([m[1] for m in meta]), rate=np.array([m[2] for m in meta], dtype=np.float32),
        pitch=np.array([m[3] for m in meta], dtype=np.int16),
        db_min=np.float32(DB_MIN), db_step=np.float32(DB_STEP))
    db = np.concatenate(feats).astype(np.float64) * DB_STEP + DB_MIN
    print(f"{len(feats)} words from {len(voices)} voices -> {OUT.name}, {OUT.stat().st_size / 1e6:.2f} MB")
    print(f"frames per word: min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()}; "
          f"dB range {db.min():.1f} .. {db.max():.1f}; saturated {(np.concatenate(feats) == 255).mean():.4f}")


if __name__ == "__main__":
    main()
