"""What Discord needs to draw a voice message: its length and a waveform, measured from the audio itself.

CPU-bound and synchronous: call with ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import io
from array import array
from dataclasses import dataclass

MAX_SAMPLES = 256  # Discord's waveform: at most 256 one-byte amplitudes
STEP_SECONDS = 0.1  # one amplitude per 100 ms, as Discord's own clients record


@dataclass(frozen=True, slots=True)
class VoiceShape:
    duration: float
    waveform: str  # base64 of the amplitudes


def voice_shape(data: bytes) -> VoiceShape:
    """Decode the audio; the duration is what was decoded, the waveform the peak of each slice scaled to 0..255."""
    import av  # on first use, as in bot.media.audio: a bot that never sends voice never loads FFmpeg

    pcm = array("h")
    rate = 8_000  # plenty for a drawing of loudness
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with av.open(io.BytesIO(data)) as container:
        for frame in [*container.decode(container.streams.audio[0]), None]:
            for out in resampler.resample(frame):
                pcm.frombytes(bytes(out.planes[0])[: out.samples * 2])
    duration = len(pcm) / rate
    count = max(1, min(MAX_SAMPLES, round(duration / STEP_SECONDS)))
    size = max(1, len(pcm) // count)
    peaks = [max((abs(v) for v in pcm[i * size:(i + 1) * size]), default=0) for i in range(count)]
    top = max(peaks) or 1
    levels = bytes(round(p / top * 255) for p in peaks)
    return VoiceShape(round(duration, 2), base64.b64encode(levels).decode())
