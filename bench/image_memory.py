"""Peak memory of ``chorus run`` answering one large image, and of the next start.

The real CLI in a child process, the fake OpenRouter on loopback; the image is a
4096×4096 BMP of random pixels (50.3 MB that no codec can shrink). Peak RSS comes from
the kernel (``RUSAGE_CHILDREN`` of a small parent), so it counts everything: bytes read,
decoded pixels, the stored row and the request body.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.conftest import Home, chorus_peak_rss
from tests.fakes.media import make_noise_bmp
from tests.fakes.openrouter import FakeOpenRouter, Text


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "CHORUS_CONFIG")}
        env.update(CHORUS_HOME=str(root / "chorus-home"), HOME=str(root), CI="true")
        home = Home(root / "chorus-home", env)
        image = root / "noise.bmp"
        image.write_bytes(make_noise_bmp(4096, 4096))
        async with FakeOpenRouter() as fake:
            home.write_config(fake, models={"providers": {"openrouter": {"apiKey": fake.api_key}}},
                              tools={"media": {"image": {"maxBytes": 100_000_000}}})
            fake.queue(Text("Static."), Text("Hello."))
            idle, idle_peak = await chorus_peak_rss(home, "run", stdin="")
            turn, turn_peak = await chorus_peak_rss(home, "run", stdin=f"/image {image}\n", timeout=300)
            again, again_peak = await chorus_peak_rss(home, "run", stdin="hello\n", timeout=300)
        assert "Static." in turn.out and "Hello." in again.out, (turn, again)
        db = (home.path / "chorus.db").stat().st_size
        print(f"image memory: one {image.stat().st_size / 1e6:.1f} MB image through `chorus run` (peak RSS)")
        print(f"  start, no turn          {idle_peak:6.0f} MB")
        print(f"  the image turn          {turn_peak:6.0f} MB")
        print(f"  next start + text turn  {again_peak:6.0f} MB")
        print(f"  database file           {db / 1e6:6.1f} MB")
