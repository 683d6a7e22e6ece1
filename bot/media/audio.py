"""Audio with PyAV (its wheel ships libopus and libmp3lame; no system ffmpeg): probe, measure, transcode.

These functions are CPU-bound and synchronous: call them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av

STT_FORMATS = ("wav", "mp3", "flac", "m4a", "ogg", "webm", "aac")
_MIME_TO_STT = {
    "audio/ogg": "ogg", "audio/opus": "ogg", "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mp4": "m4a",
    "audio/x-m4a": "m4a", "audio/m4a": "m4a", "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav",
    "audio/flac": "flac", "audio/x-flac": "flac", "audio/webm": "webm", "audio/aac": "aac",
}
_EXT_TO_STT = {"ogg": "ogg", "oga": "ogg", "opus": "ogg", "mp3": "mp3", "m4a": "m4a", "mp4": "m4a", "wav": "wav",
               "flac": "flac", "webm": "webm", "aac": "aac"}
# What the container of each STT format looks like to FFmpeg, to check the bytes are what the name says.
_CONTAINERS = {"ogg": "ogg", "mp3": "mp3", "m4a": "mov", "wav": "wav", "flac": "flac", "webm": "matroska", "aac": "aac"}


class AudioError(ValueError):
    """Audio that cannot be used; the message is meant for the user."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    container: str
    codec: str
    duration: float
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    mime: str
    extension: str
    duration: float


def probe(data: bytes) -> AudioInfo:
    """Container, codec and duration (measured by decoding: Ogg/Opus often has no header duration)."""
    import av  # here, not at the top: FFmpeg's libraries cost ~17 MB of memory that a text-only bot never needs

    with _open(data) as container:
        stream = container.streams.audio[0]
        samples = 0
        try:
            for frame in container.decode(stream):
                samples += frame.samples
        except av.error.FFmpegError as exc:
            raise AudioError("the audio could not be decoded: it looks corrupt or truncated") from exc
        if samples == 0:
            raise AudioError("the audio holds no sound that could be decoded")
        return AudioInfo(container.format.name, stream.codec_context.name, samples / stream.rate,
                         stream.rate, stream.codec_context.channels)


def to_ogg_opus(data: bytes, *, bitrate: int = 32_000) -> EncodedAudio:
    """A voice note: Opus in Ogg, 48 kHz mono (what Telegram and Discord play as a voice message)."""
    out, duration = _transcode(data, "ogg", "libopus", 48_000, bitrate)
    return EncodedAudio(out, "audio/ogg", "ogg", duration)


def to_mp3(data: bytes, *, bitrate: int = 64_000) -> EncodedAudio:
    """MP3, 44.1 kHz mono, for channels without voice notes."""
    out, duration = _transcode(data, "mp3", "libmp3lame", 44_100, bitrate)
    return EncodedAudio(out, "audio/mpeg", "mp3", duration)


def to_wav(data: bytes, *, sample_rate: int = 16_000) -> EncodedAudio:
    """PCM WAV, mono; what any speech-to-text model takes."""
    out, duration = _transcode(data, "wav", "pcm_s16le", sample_rate, None)
    return EncodedAudio(out, "audio/wav", "wav", duration)


def pcm_to_wav(pcm: bytes, *, sample_rate: int = 24_000) -> bytes:
    """Raw s16le mono PCM (OpenRouter TTS ``pcm``) wrapped in a WAV header so it can be decoded."""
    if not pcm:
        raise AudioError("the speech service returned no audio")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return out.getvalue()


def stt_format(mime: str | None, filename: str | None) -> str | None:
    """The transcription endpoint's ``format`` for a file: from its MIME type, else its extension."""
    if mime:
        fmt = _MIME_TO_STT.get(mime.split(";", 1)[0].strip().lower())
        if fmt:
            return fmt
    if filename:
        return _EXT_TO_STT.get(PurePath(filename).suffix.lower().lstrip("."))
    return None


def prepare_for_stt(data: bytes, mime: str | None, filename: str | None) -> tuple[bytes, str, AudioInfo]:
    """Bytes and format the STT endpoint takes: passed through when already acceptable, else converted to WAV."""
    info = probe(data)
    fmt = stt_format(mime, filename)
    if fmt and info.container.split(",")[0] == _CONTAINERS[fmt]:
        return data, fmt, info
    return to_wav(data).data, "wav", info


def _open(data: bytes) -> av.container.InputContainer:
    import av

    if not data:
        raise AudioError("the audio file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError("the file could not be read as audio: it looks corrupt or is not audio") from exc
    if not container.streams.audio:
        container.close()
        raise AudioError("the file holds no audio")
    return container


def _transcode(data: bytes, fmt: str, codec: str, rate: int, bitrate: int | None) -> tuple[bytes, float]:
    """Decode anything PyAV reads, resample to mono ``rate``, encode with ``codec``; returns (bytes, seconds)."""
    import av

    out = io.BytesIO()
    samples = 0
    with _open(data) as source, av.open(out, "w", format=fmt) as sink:
        stream = sink.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if bitrate:
            stream.bit_rate = bitrate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate,
                                      frame_size=stream.codec_context.frame_size or None)
        try:
            frames = list(source.decode(source.streams.audio[0]))
        except av.error.FFmpegError as exc:
            raise AudioError("the audio could not be decoded: it looks corrupt or truncated") from exc
        for frame in [*frames, None]:  # None flushes the resampler, so the tail is not lost
            for converted in resampler.resample(frame):
                samples += converted.samples
                for packet in stream.encode(converted):
                    sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    if samples == 0:
        raise AudioError("the audio holds no sound that could be decoded")
    return out.getvalue(), samples / rate
