"""Who is calling and how much they may do: API keys (``keys``, and the
``facecat keys`` commands in ``key_commands``) and rate limits (``limits``,
with their shared counters in ``limit_storage``). Imports ``catalog.sql``, never ``catalog.web``.
"""
