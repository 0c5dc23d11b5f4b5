"""The bodies ModelsLab's face_gen answers with, built from a job row.

The same body answers ``face_gen`` (when the job finished within the wait), ``fetch``,
and is posted to the webhook, so a client handles one shape wherever it comes from:
``{"status": "success"|"processing"|"error", "id", "output", "proxy_links", "meta", ...}``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from catalog.errors import ApiError
from catalog.sql.models import FacegenJob

PROCESSING_TIP = "The job is queued or running; fetch the result at fetch_result."


def as_modelslab(error: ApiError) -> ApiError:
    """``error`` with a body that also reads as ModelsLab's: ``status: "error"`` and
    ``message`` beside facecat's ``error`` and ``detail``."""
    error.extra.update(status="error", message=error.detail)
    return error


def modelslab_error(http_status: int, code: str, detail: str, **extra: Any) -> ApiError:
    """A new ApiError in both shapes (``as_modelslab``)."""
    return as_modelslab(ApiError(http_status, code, detail, **extra))


def output_urls(job: FacegenJob, count: int | None = None) -> list[str]:
    """The public URLs of the job's outputs (or of the ``count`` it will have)."""
    base = job.request["base_url"]
    total = len(job.outputs) if count is None else count
    return [f"{base}facegen/{job.id}/{index}.jpg" for index in range(total)]


def fetch_url(job: FacegenJob) -> str:
    """Where the job's result can be fetched (``POST``, as ModelsLab's fetch)."""
    return f"{job.request['base_url']}api/v6/image_editing/fetch/{job.id}"


def job_body(
    job: FacegenJob, *, eta: float | None = None, read: Callable[[str], bytes] | None = None
) -> dict[str, Any]:
    """The ModelsLab body for ``job``; ``read`` fetches output bytes when the job asked
    for base64 outputs (``base64: true``), which then replace the URLs in ``output``."""
    common: dict[str, Any] = {"id": job.id, "meta": job.meta}
    if job.track_id is not None:
        common["track_id"] = job.track_id
    if job.status == "success":
        urls = output_urls(job)
        output: list[str] = urls
        if job.request.get("base64") and read is not None:
            output = [
                "data:image/jpeg;base64," + base64.b64encode(read(key)).decode("ascii")
                for key in job.outputs
            ]
        return {
            "status": "success",
            "generationTime": round(job.seconds or 0.0, 2),
            "output": output,
            "proxy_links": urls,
            "nsfw_content_detected": False,
            **common,
        }
    if job.status in ("queued", "processing"):
        return {
            "status": "processing",
            "tip": PROCESSING_TIP,
            "eta": round(eta or 0.0, 1),
            "message": f"The job is {job.status}.",
            "fetch_result": fetch_url(job),
            "output": [],
            "future_links": output_urls(job, job.request["samples"]),
            **common,
        }
    if job.status == "expired":
        return {
            "status": "error",
            "message": "This job's outputs expired and were removed.",
            **common,
        }
    return {"status": "error", "message": job.error or "The job failed.", "output": [], **common}
