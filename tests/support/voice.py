"""Voice-message test files: Ogg files made by FFmpeg's own encoders through PyAV (as ``ffmpeg -i
speech.wav -c:a CODEC out.ogg`` would), so the parser is tested on files it did not write."""
from __future__ import annotations

from pathlib import Path

import av


def transcode(src: Path, dst: Path, codec: str, rate: int, layout: str, seconds: float | None = None) -> Path:
    """Re-encode ``src`` (its first ``seconds``) into an Ogg file with FFmpeg's ``codec`` at
    ``rate`` Hz, ``layout``."""
    with av.open(str(src)) as inp, av.open(str(dst), mode="w", format="ogg") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        for frame in inp.decode(audio=0):
            if seconds is not None and frame.time is not None and frame.time >= seconds:
                break
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return dst
