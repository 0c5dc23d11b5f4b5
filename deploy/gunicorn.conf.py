"""Gunicorn settings for the facecat web tier (``gunicorn -c deploy/gunicorn.conf.py``).

Processes, not threads, carry the load: catalog lookups are short and CPU-light, but an
on-demand generation runs torch for up to ``ONDEMAND_BUDGET_SECONDS``, and a process per
request in flight keeps one slow generation from holding up the lookups behind it. The
command line overrides anything here (``--workers 8``), which is how the compose file
and deploy/README.md scale a container.
"""

from __future__ import annotations

import multiprocessing

bind = "0.0.0.0:8000"
# 2 per core + 1 is gunicorn's rule of thumb; capped because each worker holds its own
# copy of the torch models once on-demand generation has run.
workers = min(2 * multiprocessing.cpu_count() + 1, 8)
threads = 2
worker_class = "gthread"
# Above the on-demand budget (4 s by default) with room for a slow database, yet short
# enough that a stuck worker is replaced quickly.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so memory growth (torch allocator, caches) stays bounded.
max_requests = 2000
max_requests_jitter = 200
# Engines are created lazily per worker after the fork (catalog.db.get_engine), so the
# app can be built in the master without sharing connections across processes.
preload_app = False
accesslog = "-"
errorlog = "-"
# The compose file puts nginx in front; trust its X-Forwarded-* headers so image URLs
# are built with the client's scheme and host.
forwarded_allow_ips = "*"
