"""Single-channel noise suppression (GME's ANS) for the FLUENCY send path, before the Opus encoder.

GME documents only that FLUENCY rooms run ANS and the other room types do not (its sound-quality
guide); the method is OpenGME's own, chosen to be cheap, streaming and low in musical noise:

* **STFT**: each call's frame and the one before it form one ``2 * frame`` block, windowed with a
  sqrt-Hann (periodic) window for analysis and again for synthesis; at 50 % overlap the squared
  window sums to exactly 1, so a gain of 1 reconstructs the input exactly (to int16 rounding). One
  FFT per frame; the added delay is one frame (20 ms), the least a 50 %-overlap block can have.
* **Noise floor**: the speech-presence-probability tracker of Gerkmann & Hendriks (2012): each
  bin's noise power is updated with the periodogram weighted by how unlikely speech is there, so it
  follows slowly rising noise during speech and drops at once when it was overestimated; a smoothed
  presence probability stuck near 1 is capped so the floor can never freeze.
* **Gain**: Wiener gain on the decision-directed a-priori SNR (Ephraim & Malah 1984), floored at
  -20 dB: the smoothed SNR keeps residual noise steady instead of twinkling, and the floor leaves a
  quiet, natural background rather than gated silence.

Time constants are given for a reference hop and rescaled to the actual hop, so 10 ms or 20 ms
frames at 16 or 48 kHz behave alike.
"""
from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""Mono int16 PCM, shape ``(samples,)``."""
Bins = npt.NDArray[np.float64]
"""One value per STFT bin (``frame_samples + 1`` of them)."""

DEFAULT_FRAME_MS: Final = 20
MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 48000
MIN_FRAME_MS: Final = 2.5
MAX_FRAME_MS: Final = 60.0

GAIN_FLOOR_DB: Final = -20.0
"""Deepest attenuation: deeper gating makes residual noise pump and speech tails sound cut."""
_GAIN_FLOOR: Final = 10.0 ** (GAIN_FLOOR_DB / 20.0)
_MIN_PRIOR_SNR: Final = 10.0 ** (-25.0 / 10.0)
"""Lower bound of the a-priori SNR, so the decision-directed recursion never sticks at zero."""

# Speech-presence model (Gerkmann & Hendriks): fixed a-priori SNR under "speech present" of 15 dB
# and equal priors, so P(speech | |Y|^2) depends on the a-posteriori SNR alone.
_SPEECH_PRIOR_SNR: Final = 10.0 ** (15.0 / 10.0)
_SPP_FACTOR: Final = 1.0 + _SPEECH_PRIOR_SNR
_SPP_EXPONENT: Final = _SPEECH_PRIOR_SNR / (1.0 + _SPEECH_PRIOR_SNR)
_SPP_STUCK: Final = 0.99

# Smoothing factors as published, with the hop they were published for.
_REFERENCE_HOP_S: Final = 0.016
_NOISE_SMOOTHING: Final = 0.8
_SPP_SMOOTHING: Final = 0.9
_DD_REFERENCE_HOP_S: Final = 0.008
_DD_SMOOTHING: Final = 0.98

_MIN_POWER: Final = 1e-3
"""Noise-power floor (int16 units squared): keeps ratios finite on digital silence."""


def _per_hop(factor: float, reference_hop_s: float, hop_s: float) -> float:
    """A first-order smoothing factor with the same time constant at a different hop."""
    return math.pow(factor, hop_s / reference_hop_s)


def _is_int(value: object) -> bool:
    """An int but not a bool: ``True`` as a sample rate or frame size is a caller bug, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)


class NoiseSuppressor:
    """Streaming noise suppressor for one mono stream: int16 frames in, int16 frames out.

    ``process`` takes one frame (or several whole frames at once; the result is identical) and
    returns as many samples, delayed by ``latency_samples``. State carries across calls; ``reset``
    starts a new stream (e.g. after the mic is reopened).
    """

    def __init__(self, sample_rate: int = 16000, frame_samples: int | None = None) -> None:
        if not _is_int(sample_rate) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample rate {sample_rate!r} Hz not supported "
                             f"(an int in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})")
        if frame_samples is None:
            frame_samples = sample_rate * DEFAULT_FRAME_MS // 1000
        if not _is_int(frame_samples):
            raise ValueError(f"frame_samples must be an int, got {frame_samples!r}")
        frame_ms = 1000.0 * frame_samples / sample_rate
        if not MIN_FRAME_MS <= frame_ms <= MAX_FRAME_MS:
            raise ValueError(f"frame of {frame_samples} samples is {frame_ms:g} ms at {sample_rate} Hz; "
                             f"must be {MIN_FRAME_MS:g}..{MAX_FRAME_MS:g} ms")
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        block = 2 * frame_samples
        self._window = np.sin(np.pi * np.arange(block) / block)
        hop_s = frame_samples / sample_rate
        self._noise_smoothing = _per_hop(_NOISE_SMOOTHING, _REFERENCE_HOP_S, hop_s)
        self._spp_smoothing = _per_hop(_SPP_SMOOTHING, _REFERENCE_HOP_S, hop_s)
        self._dd_smoothing = _per_hop(_DD_SMOOTHING, _DD_REFERENCE_HOP_S, hop_s)
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Delay the suppressor adds: output sample ``n`` is input sample ``n - latency_samples``."""
        return self.frame_samples

    def reset(self) -> None:
        """Forget the stream: empty overlap buffers and re-learn the noise floor from the next frame."""
        bins = self.frame_samples + 1
        self._input_tail = np.zeros(self.frame_samples)
        self._output_tail = np.zeros(self.frame_samples)
        self._noise_power: Bins | None = None
        self._speech_presence = np.zeros(bins)
        self._prev_speech_power = np.zeros(bins)

    def process(self, pcm: Pcm) -> Pcm:
        """Suppress noise in one or more whole frames; returns int16 of the same shape."""
        self._check(pcm)
        half = self.frame_samples
        # ``hops`` is the previous frame then the new ones; block i is hops i and i + 1 side by side.
        hops = np.concatenate((self._input_tail, pcm)).reshape(-1, half)
        blocks = np.concatenate((hops[:-1], hops[1:]), axis=1)
        blocks *= self._window
        spectra = np.fft.rfft(blocks, axis=1)
        power = spectra.real ** 2 + spectra.imag ** 2
        for i in range(len(spectra)):
            spectra[i] *= self._gain(power[i])
        out_blocks = np.fft.irfft(spectra, axis=1)
        out_blocks *= self._window
        out = out_blocks[:, :half].copy()
        out[0] += self._output_tail
        out[1:] += out_blocks[:-1, half:]
        self._input_tail = hops[-1].copy()
        self._output_tail = out_blocks[-1, half:].copy()
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)
        return out.astype(np.int16).reshape(pcm.shape)

    def _check(self, pcm: object) -> None:
        if not isinstance(pcm, np.ndarray):
            raise ValueError(f"expected a numpy int16 array, got {type(pcm).__name__}")
        if pcm.dtype != np.int16:
            raise ValueError(f"expected int16 PCM, got dtype {pcm.dtype}")
        if pcm.ndim != 1:
            raise ValueError(f"expected mono PCM of shape (samples,), got shape {pcm.shape}")
        if pcm.size == 0 or pcm.size % self.frame_samples:
            raise ValueError(f"expected a whole number of {self.frame_samples}-sample frames, "
                             f"got {pcm.size} samples")

    def _gain(self, power: Bins) -> Bins:
        """Per-bin gain for one frame's periodogram; updates the noise floor and SNR state."""
        noise = self._noise_power
        if noise is None:
            noise = np.maximum(power, _MIN_POWER)
        presence = 1.0 / (1.0 + _SPP_FACTOR * np.exp(-_SPP_EXPONENT * power / noise))
        self._speech_presence *= self._spp_smoothing
        self._speech_presence += (1.0 - self._spp_smoothing) * presence
        np.minimum(presence, _SPP_STUCK, out=presence, where=self._speech_presence > _SPP_STUCK)
        noise_periodogram = presence * noise + (1.0 - presence) * power
        noise = self._noise_smoothing * noise + (1.0 - self._noise_smoothing) * noise_periodogram
        np.maximum(noise, _MIN_POWER, out=noise)
        self._noise_power = noise

        posterior_snr = power / noise
        prior_snr = (self._dd_smoothing * self._prev_speech_power / noise
                     + (1.0 - self._dd_smoothing) * np.maximum(posterior_snr - 1.0, 0.0))
        np.maximum(prior_snr, _MIN_PRIOR_SNR, out=prior_snr)
        gain: Bins = np.maximum(prior_snr / (1.0 + prior_snr), _GAIN_FLOOR)
        self._prev_speech_power = gain * gain * power
        return gain
