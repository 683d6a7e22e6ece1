"""``python -m bench`` (``make bench``): the in-process tables, then Chorus, hermes-agent and nanobot side by side.

The peers are installed first (that needs the package registry); the side-by-side run then happens inside a
network namespace of its own where only loopback exists (``unshare -n``, when this user may create one), so
nothing either product does can leave 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

from bench import discord_path, engines, image_memory, instances, peer, postgres, telegram_path, turn_overhead


def loopback_only(argv: list[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh network namespace with only ``lo`` up, when that is possible here."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return argv
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return argv
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def main() -> int:
    asyncio.run(turn_overhead.main())
    asyncio.run(image_memory.main())
    asyncio.run(telegram_path.main())
    asyncio.run(discord_path.main())
    asyncio.run(postgres.main([]))
    asyncio.run(engines.main([]))
    asyncio.run(instances.main())
    print()
    argv = [sys.executable, "-m", "bench.side_by_side", *sys.argv[1:]]
    for name, venv in peer.PEERS.items():
        problem = venv.ensure_installed()
        if problem:
            print(f"{name} is not available: {problem}")
            argv += ["--peer-problem", f"{name}={problem}"]
    wrapped = loopback_only(argv)
    print("side by side" + (" (network namespace: loopback only)" if wrapped is not argv else
                            " (no network namespace could be made here: both products are configured for loopback only)"),
          flush=True)
    return subprocess.run(wrapped).returncode


if __name__ == "__main__":
    sys.exit(main())
