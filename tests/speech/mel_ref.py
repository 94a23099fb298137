#!/usr/bin/env python3
"""Independent numpy reference for Whisper's log-mel front end (used by `src/speech/mel.rs` tests).

Written from the recipe, not from the Rust code: float64 throughout, `np.fft.rfft`,
`np.pad(mode="reflect")`, and librosa's Slaney mel filterbank re-derived in numpy.

Usage:
    mel_ref.py logmel IN OUT   IN: raw little-endian f32 samples (16 kHz mono, at most 30 s)
                               OUT: raw little-endian f64 log-mel, row-major [80, 3000]
    mel_ref.py filters OUT     OUT: raw little-endian f64 filterbank, row-major [80, 201]
"""
import sys

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
N_SAMPLES = 30 * SAMPLE_RATE


def hz_to_mel(f):
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters():
    """Triangles between consecutive mel-spaced edges, each scaled to unit area (norm='slaney')."""
    fft_freqs = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    w = np.zeros((N_MELS, fft_freqs.size))
    for i in range(N_MELS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rising = (fft_freqs - lo) / (mid - lo)
        falling = (hi - fft_freqs) / (hi - mid)
        w[i] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (hi - lo)
    return w


def log_mel(samples):
    x = np.zeros(N_SAMPLES)
    n = min(samples.size, N_SAMPLES)
    x[:n] = samples[:n]
    x = np.pad(x, N_FFT // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    n_frames = 1 + (x.size - N_FFT) // HOP
    frames = np.stack([x[t * HOP : t * HOP + N_FFT] for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # [3001, 201]
    power = power[:-1]
    mel = mel_filters() @ power.T  # [80, 3000]
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return (logm + 4.0) / 4.0


def main(argv):
    if len(argv) == 4 and argv[1] == "logmel":
        samples = np.fromfile(argv[2], dtype="<f4").astype(np.float64)
        log_mel(samples).astype("<f8").tofile(argv[3])
    elif len(argv) == 3 and argv[1] == "filters":
        mel_filters().astype("<f8").tofile(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
