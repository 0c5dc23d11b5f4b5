"""The catalog's tables and every query on them: engine and sessions (``db``), rows (``models``),
random selection (``selection``, over the per-cell counters in ``cells``), locks, and the SQL
side of ingest's ports (``admission``, ``ondemand``, ``flight``, ``yields``). Imports neither
``catalog.web`` nor ``catalog.access``.
"""
