"""The receive path end to end with the real Opus codec: two members' packets over a lossy,
jittery path -> one JitterBuffer each -> decode (FEC / PLC) -> Mixer, plus the speaking detector
fed from the header levels the senders computed."""
from __future__ import annotations

import random

import numpy as np

from opengme.codec.opus import OpusDecoder, OpusEncoder, profile_for
from opengme.core.jitter import JitterBuffer, PlayoutKind
from opengme.core.levels import SpeakingDetector, audio_level
from opengme.core.mixer import Mixer
from opengme.events import RoomType, UserUpdateEvent

PROFILE = profile_for(RoomType.FLUENCY)  # 16 kHz
N = PROFILE.frame_samples
FRAMES = 150  # 3 s
TONES = {1: 440.0, 2: 1250.0}  # tinyid -> the tone that member "says"


def tone(freq: float, k: int) -> np.ndarray:
    t = (np.arange(N) + k * N) / PROFILE.sample_rate
    wave: np.ndarray = np.rint(6000 * np.sin(2 * np.pi * freq * t))
    return wave.astype(np.int16)


def test_two_members_over_a_lossy_path_mix_into_both_tones() -> None:
    rng = random.Random(5)
    arrivals: list[tuple[float, int, int, bytes, int]] = []
    for tinyid, freq in TONES.items():
        encoder = OpusEncoder(PROFILE)
        for k in range(FRAMES):
            frame = tone(freq, k)
            packet = encoder.encode(frame)
            if rng.random() < 0.05:
                continue  # lost on the way
            arrival = k * 0.02 + 0.03 + rng.uniform(0, 0.03)
            arrivals.append((arrival, tinyid, k, packet, audio_level(frame)))
    arrivals.sort()

    buffers = {t: JitterBuffer(sample_rate=PROFILE.sample_rate) for t in TONES}
    decoders = {t: OpusDecoder(PROFILE) for t in TONES}
    mixer: Mixer[int] = Mixer(frame_samples=N)
    detector: SpeakingDetector[int] = SpeakingDetector()
    events: list[tuple[int, UserUpdateEvent]] = []
    out: list[np.ndarray] = []
    kinds: dict[PlayoutKind, int] = dict.fromkeys(PlayoutKind, 0)
    i, now = 0, 0.005
    while now < FRAMES * 0.02 + 0.5:
        while i < len(arrivals) and arrivals[i][0] <= now:
            arrival, tinyid, k, packet, level = arrivals[i]
            buffers[tinyid].push(k, k * N, packet, arrival, level)
            if (event := detector.on_packet(tinyid, level, arrival)) is not None:
                events.append((tinyid, event))
            i += 1
        frames: dict[int, np.ndarray] = {}
        for tinyid, jb in buffers.items():
            item = jb.pop(now)
            kinds[item.kind] += 1
            if item.kind is PlayoutKind.FRAME and item.payload is not None:
                frames[tinyid] = decoders[tinyid].decode(item.payload)
            elif item.kind is PlayoutKind.LOST:
                decoder = decoders[tinyid]
                frames[tinyid] = decoder.decode_fec(item.payload) if item.payload else decoder.conceal()
        out.append(mixer.mix(frames))
        events += [(t, UserUpdateEvent.NO_AUDIO) for t in detector.poll(now)]
        now += 0.02

    # Each member turned HAS_AUDIO once; 0.5 s after the end neither is NO_AUDIO yet (that takes > 2 s).
    assert sorted(events) == [(1, UserUpdateEvent.HAS_AUDIO), (2, UserUpdateEvent.HAS_AUDIO)]
    assert kinds[PlayoutKind.LOST] >= 5 and kinds[PlayoutKind.FRAME] >= 2 * FRAMES * 0.9
    # The mix of the steady middle second holds both tones at similar strength and little else.
    pcm = np.concatenate(out[40:90]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    freqs = np.fft.rfftfreq(pcm.size, 1 / PROFILE.sample_rate)
    peaks = {f: spectrum[np.abs(freqs - f) < 15].max() for f in TONES.values()}
    assert 0.5 < peaks[440.0] / peaks[1250.0] < 2.0
    elsewhere = spectrum[(np.abs(freqs - 440) > 100) & (np.abs(freqs - 1250) > 100)].max()
    assert elsewhere < 0.1 * min(peaks.values())
