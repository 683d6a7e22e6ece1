"""The peers, each in its own venv under ``bench/`` (git-ignored; never a Chorus dependency).

Installed only when ``make bench`` runs (it needs the package registry; the side by side itself runs offline).
Whatever a peer would otherwise try to install on its own at run time is pinned and installed with it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PeerVenv:
    """One peer's venv: where it lives, what goes into it, and which distribution's version names it."""

    venv: Path
    packages: tuple[str, ...]  # the first is the peer itself, pinned with ``==``
    dist: str

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def wanted(self) -> str:
        return self.packages[0].split("==")[1]

    def version(self) -> str | None:
        """The installed version, or ``None``."""
        python = self.bin / "python"
        if not python.exists():
            return None
        out = subprocess.run([str(python), "-c", f"from importlib.metadata import version; print(version({self.dist!r}))"],
                             capture_output=True, text=True)
        return out.stdout.strip() or None

    def ensure_installed(self) -> str | None:
        """Install the peer if it is missing; returns why it could not be, or ``None`` when it is there."""
        if self.version() == self.wanted:
            return None
        shown = self.venv.relative_to(Path.cwd()) if self.venv.is_relative_to(Path.cwd()) else self.venv
        print(f"installing a peer ({', '.join(self.packages)}) into {shown} ...", flush=True)
        try:
            if not (self.bin / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            done = subprocess.run([str(self.bin / "python"), "-m", "pip", "install", "--quiet", *self.packages],
                                  capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"could not install {self.dist}: {exc}"
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
            return f"pip install of {self.dist} failed: " + " | ".join(lines[-3:])
        return None


# hermes would install its TTS package on its first message.
HERMES = PeerVenv(HERE / ".peer-venv", ("hermes-agent[messaging]==0.19.0", "edge-tts==7.2.7"), "hermes-agent")
# nanobot installs a channel's dependencies when the channel first starts (its Telegram manifest lists these).
NANOBOT = PeerVenv(HERE / ".nanobot-venv", ("nanobot-ai==0.3.5", "python-telegram-bot[socks,webhooks]==22.8",
                                            "socksio==1.0.0", "python-socks[asyncio]==2.8.2"), "nanobot-ai")
PEERS = {"hermes": HERMES, "nanobot": NANOBOT}
