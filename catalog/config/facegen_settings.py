"""The settings of look-alike jobs (``/api/v6/image_editing/face_gen``)."""

from __future__ import annotations

from catalog.config.setting import (
    Setting,
    boolean,
    choice,
    float_range,
    int_range,
    optional_str,
)

FACEGEN_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "FACEGEN_QUEUE_URL",
        None,
        "Where look-alike jobs queue (huey): unset, a SQLite file in the instance folder "
        "(the embedded default: `facecat facegen worker` runs them); redis://host:port/db "
        "in production, shared by every web process and worker.",
        optional_str,
        "facegen",
    ),
    Setting(
        "FACEGEN_QUEUE_NAME",
        "facecat-facegen",
        "The queue's name: deployments (or test runs) sharing one Redis need their own.",
        optional_str,
        "facegen",
    ),
    Setting(
        "FACEGEN_MIN_CLASS",
        "basic",
        "The least user class that may submit look-alike jobs; anon lets keyless callers "
        "in (each sample is charged to the caller's generation budget either way).",
        choice("anon", "basic", "professional", "enterprise"),
        "facegen",
    ),
    Setting(
        "FACEGEN_WAIT_SECONDS",
        10.0,
        "How long a face_gen request waits for its job before answering `processing` with "
        "an eta and the fetch URL. The web process only waits: the worker runs the job.",
        float_range(0.0, 60.0),
        "facegen",
    ),
    Setting(
        "FACEGEN_TTL_SECONDS",
        86400,
        "How long look-alike outputs are kept; the worker removes them afterwards and "
        "their URLs answer 410.",
        int_range(60, 30 * 86400),
        "facegen",
    ),
    Setting(
        "FACEGEN_URL_FETCH",
        False,
        "Whether face_image may be an http(s) URL that facecat fetches. Off by default: "
        "fetching lets callers make this server send requests. When on, loopback, "
        "private, link-local and other non-public addresses are refused (after DNS, on "
        "every redirect), with a size cap and a timeout.",
        boolean,
        "facegen",
    ),
    Setting(
        "FACEGEN_FETCH_ALLOWED_NETWORKS",
        None,
        "Comma-separated CIDR networks that URL fetches and webhooks may reach although "
        "they are not public (e.g. an internal image host); unset: none.",
        optional_str,
        "facegen",
    ),
    Setting(
        "FACEGEN_FETCH_TIMEOUT_SECONDS",
        10.0,
        "Total time allowed to fetch a face_image URL (connect, redirects and body).",
        float_range(0.5, 120.0),
        "facegen",
    ),
    Setting(
        "FACEGEN_MAX_PHOTO_BYTES",
        8 * 1024 * 1024,
        "Largest photo accepted, uploaded as base64 or fetched from a URL.",
        int_range(1024, 64 * 1024 * 1024),
        "facegen",
    ),
    Setting(
        "FACEGEN_WEBHOOK_ATTEMPTS",
        5,
        "Deliveries tried per webhook (backoff 10 s, 30 s, 90 s, ...); the last failure "
        "is recorded on the job.",
        int_range(1, 20),
        "facegen",
    ),
)
