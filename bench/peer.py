"""The peer, hermes-agent, in its own venv under ``bench/.peer-venv`` (git-ignored; never a Chorus dependency).

Installed only when ``make bench`` runs. Its optional TTS package is installed with it, because on its first
message it would otherwise try to install that package itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".peer-venv"
BIN = VENV / "bin"
PACKAGES = ["hermes-agent[messaging]==0.19.0", "edge-tts==7.2.7"]


def version() -> str | None:
    """The installed hermes-agent version, or ``None``."""
    python = BIN / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('hermes-agent'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def ensure_installed() -> str | None:
    """Install the peer if it is missing; returns why it could not be, or ``None`` when it is there."""
    if version() == PACKAGES[0].split("==")[1]:
        return None
    print(f"installing the peer ({', '.join(PACKAGES)}) into {VENV.relative_to(Path.cwd()) if VENV.is_relative_to(Path.cwd()) else VENV} ...",
          flush=True)
    try:
        if not (BIN / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", *PACKAGES],
                              capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not install the peer: {exc}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
        return "pip install failed: " + " | ".join(lines[-3:])
    return None
