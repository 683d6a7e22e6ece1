"""``python -m bench`` (``make bench``): run every benchmark."""

from __future__ import annotations

import asyncio

from bench import discord_path, image_memory, telegram_path, turn_overhead

if __name__ == "__main__":
    asyncio.run(turn_overhead.main())
    asyncio.run(image_memory.main())
    asyncio.run(telegram_path.main())
    asyncio.run(discord_path.main())
