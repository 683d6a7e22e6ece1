"""Scheduled jobs: reminders and recurring prompts made by the ``cron`` tool, durable in SQLite, each fired
as an agent turn in the chat, topic or thread where it was made."""
