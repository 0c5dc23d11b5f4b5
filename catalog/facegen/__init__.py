"""Look-alikes of an uploaded face, ModelsLab face_gen style: the jobs around the model.

``ingest.facegen`` holds the model side (alignment, inversion, mixing, the prompt
vocabulary). This room holds what makes it a service: the queue (``queue``, huey), the
job runner, webhook delivery and expiry (``tasks``), fetching a caller's URL safely
(``fetch``), and the response bodies (``responses``). ``catalog.web.facegen`` is the HTTP
side; the web process only validates, enqueues and waits a bounded time.
"""

from __future__ import annotations

UPLOADS_PREFIX = "facegen/uploads/"
OUTPUTS_PREFIX = "facegen/outputs/"


def upload_key(job_id: str) -> str:
    """Where a job's photo waits for the worker (deleted when the job ends)."""
    return f"{UPLOADS_PREFIX}{job_id}"


def output_key(job_id: str, index: int) -> str:
    """Where a job's ``index``-th output is kept until it expires."""
    return f"{OUTPUTS_PREFIX}{job_id}/{index}.jpg"
