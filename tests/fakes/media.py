"""Real media made by the tests: PNG, MP4 and audio in several formats, and a decoder to check output."""

from __future__ import annotations

import io
import math
import os
import struct
import zlib

import av
import numpy as np


def make_png(width: int = 64, height: int = 36) -> bytes:
    """A valid RGB PNG with a gradient."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make_mp4(seconds: float = 1.0, fps: int = 10, width: int = 64, height: int = 36) -> bytes:
    """H.264 in MP4: a few frames of a moving gradient."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(max(1, int(seconds * fps))):
            img = np.full((height, width, 3), (i * 20) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


_AUDIO = {  # fmt: (container, codec, sample rate)
    "mp3": ("mp3", "libmp3lame", 44100),
    "wav": ("wav", "pcm_s16le", 16000),
    "ogg_opus": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", 16000),
    "m4a": ("mp4", "aac", 44100),
}


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    n = int(seconds * rate)
    return (np.sin(2 * math.pi * freq * np.arange(n) / rate) * 0.3 * 32767).astype(np.int16)


def make_audio(fmt: str, seconds: float = 1.0, freq: float = 440.0) -> bytes:
    """A sine tone as ``mp3``, ``wav``, ``ogg_opus``, ``flac``, ``m4a``, or raw ``pcm`` (s16le 24 kHz mono)."""
    if fmt == "pcm":
        return tone(seconds, 24000, freq).tobytes()
    container_fmt, codec, rate = _AUDIO[fmt]
    samples = tone(seconds, rate, freq)
    out = io.BytesIO()
    with av.open(out, "w", format=container_fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for start in range(0, len(samples), frame_size):
            piece = samples[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def decode_info(data: bytes) -> tuple[str, str, float, int, int]:
    """(container, codec, duration measured by decoding, sample rate, channels) of audio bytes."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return (container.format.name, stream.codec_context.name, samples / stream.rate,
                stream.rate, stream.codec_context.channels)


def make_photo(width: int, height: int, fmt: str = "JPEG") -> bytes:
    """A smooth colour picture (gradients, as a photo compresses) of the given size, made with Pillow."""
    from PIL import Image

    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = red.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    Image.merge("RGB", (red, green, blue)).save(out, fmt)
    return out.getvalue()


def make_noise_bmp(width: int, height: int) -> bytes:
    """An uncompressed 24-bit BMP of random pixels: ``width * height * 3`` bytes that no codec can shrink.
    Built by hand, so the test process never holds the pixels twice."""
    row = width * 3
    assert row % 4 == 0, "rows of a BMP are padded to 4 bytes; pick a width that needs none"
    size = row * height
    header = b"BM" + struct.pack("<IHHI", 54 + size, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, size, 2835, 2835, 0, 0)
    return header + info + os.urandom(size)


def make_png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` pixels but holds almost none (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_pdf(*pages: str) -> bytes:
    """A real PDF (one page per argument, each line of text drawn in Helvetica), as a user's file would be."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(len(pages)))}] /Count {len(pages)} >>"]
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        lines = " ".join(f"({line}) Tj 0 -20 Td" for line in text.split("\n"))
        stream = f"BT /F1 14 Tf 72 720 Td {lines} ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
