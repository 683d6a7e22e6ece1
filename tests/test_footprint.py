"""What a running ``chorus run`` keeps in memory: a text-only bot never loads the libraries of media it never saw.

FFmpeg (through PyAV) costs ~17 MB and Pillow ~2 MB of resident memory; they are loaded on the first voice note
or image, so a bot that only chats stays small (the bench's peak-memory rows rest on this).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import new_home
from tests.fakes.media import make_audio
from tests.fakes.openrouter import FakeOpenRouter, Text
from tests.fakes.telegram import FakeTelegram
from tests.telegram_service import running

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
HEAVY = {"FFmpeg": "libavcodec", "Pillow": "PIL/_imaging"}  # their compiled parts, as the memory map names them


def mapped(pid: int) -> set[str]:
    """Which of the heavy libraries the process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name, marker in HEAVY.items() if marker in maps}


async def test_a_text_turn_loads_no_media_library_and_a_voice_note_loads_ffmpeg(tmp_path):
    home = new_home(tmp_path)
    async with FakeTelegram() as tg, FakeOpenRouter() as ai, running(home, tg, ai, dmPolicy="open") as service:
        ai.queue(Text("Hello there."))
        tg.message(7001, "hi")
        (sent,) = await tg.wait_sent(7001)
        assert sent.text == "Hello there."
        assert mapped(service.pid) == set()

        ai.transcripts.append("and now by voice")
        ai.queue(Text("Heard you."))
        tg.voice(7001, make_audio("ogg_opus", 1.0), duration=1)
        _, answer = await tg.wait_sent(7001, 2)
        assert answer.text == "Heard you."
        assert mapped(service.pid) == {"FFmpeg"}
