"""The Discord adapter on discord.py: the client (``client``), messages in (``inbound``), replies out
(``outbound``, ``voice``), start-up checks (``setup``), and the channel that runs them (``channel``).

Nothing is imported here: ``bot doctor`` reads ``setup`` without loading discord.py (~30 MB)."""
