"""The Telegram adapter: the Bot API client (``api``), updates in (``inbound``), replies out (``outbound``,
``format``), flood control (``flood``), and the channel that runs them (``channel``)."""
