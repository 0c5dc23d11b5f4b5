"""The settings of the web service: storage and database, the API, keys and limits."""

from __future__ import annotations

from catalog.config.setting import (
    Setting,
    choice,
    float_range,
    host_list,
    int_range,
    limit_string,
    url_with_schemes,
)

SERVICE_SETTINGS: tuple[Setting, ...] = (
    # --- storage and database -------------------------------------------------------
    Setting(
        "DATABASE_URL",
        None,
        "SQLAlchemy URL. Default: SQLite file facecat.db in the instance folder. "
        "Production: postgresql://user:pass@host:5432/facecat.",
        url_with_schemes("sqlite", "postgresql"),
        "storage",
    ),
    Setting(
        "DATABASE_TIMEOUT_SECONDS",
        5.0,
        "PostgreSQL: a web request's statement that runs, or waits for a silent server, "
        "this long fails and the request answers 503 (statement_timeout on the server and "
        "a client-side bound for a server that hangs). Ingest and the CLI are freed after "
        "60 s of silence.",
        float_range(0.5, 300.0),
        "storage",
    ),
    Setting(
        "STORAGE_URL",
        None,
        "Where images go. Default: the folder objects/ in the instance folder. "
        "file:///absolute/path for another folder; s3://ACCESS:SECRET@host:9000/bucket "
        "for MinIO/S3 (add ?secure=true for TLS, ?region=... if needed).",
        url_with_schemes("file", "s3"),
        "storage",
    ),
    Setting(
        "PUBLIC_BASE_URL",
        None,
        "Base URL under which image keys are publicly readable (a public bucket or a "
        "CDN), e.g. https://cdn.example.com/faces. Default: facecat serves images itself "
        "under /img/.",
        url_with_schemes("http", "https"),
        "storage",
    ),
    # --- API and limits -------------------------------------------------------------
    Setting(
        "RATELIMIT_STORAGE_URL",
        "memory://",
        "Rate-limit counters: memory:// (one "
        "process) or redis://host:6379/0 (shared between processes).",
        url_with_schemes("memory", "redis", "rediss"),
        "limits",
    ),
    Setting(
        "RATELIMIT_STORAGE_TIMEOUT",
        0.5,
        "Seconds a Redis connect or reply may take before a rate-limit check gives up and "
        "counts per process instead (a Redis round trip takes well under a millisecond; "
        "without a timeout a hung Redis hangs every limited request). A timeout given in "
        "the redis:// URL wins.",
        float_range(0.01, 30.0),
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_STRATEGY",
        "moving-window",
        "Counting strategy of the generation limits: moving-window (exact bursts: one "
        "entry per generation), fixed-window (one counter; up to twice a limit across a "
        "window edge) or sliding-window-counter. Lookup and image limits always use "
        "fixed-window, the cheapest per request.",
        choice("moving-window", "fixed-window", "sliding-window-counter"),
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_ANON",
        "1/minute;60/day",
        "Face generations (/api/v1/generate and on-demand fills) per client address "
        "without a key: burst;sustained in the limits library's notation.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_BASIC",
        "5/minute;120/day",
        "Face generations per basic key.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_PROFESSIONAL",
        "30/minute;1000/day",
        "Face generations per professional key.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_ENTERPRISE",
        "120/minute;6000/day",
        "Face generations per enterprise key.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_ONDEMAND_FILLS",
        "30/minute;2000/day",
        "Faces made on demand for lookups (/face/*, /api/v1/faces/random, /avatar/*) with no "
        "stored match, for the whole server, whoever asks: a face made for a lookup joins "
        "the catalog for everyone. Past it an unmet lookup answers 503 with Retry-After.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_LOOKUPS",
        "600/minute",
        "Catalog lookups (/face/*, /thumb/view, /api/v1/faces/*) per key or client address. "
        "Each limit costs one Redis round trip per request, so one generous limit is best.",
        limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_IMAGES",
        "1200/minute",
        "Image fetches (/img/*, /avatar/*) per key or client address.",
        limit_string,
        "limits",
    ),
    Setting(
        "TRUSTED_HOSTS",
        None,
        "Host names this server answers for, comma-separated (e.g. faces.example.com; a "
        "leading dot allows subdomains). A request for another Host is a 400, so a "
        "client cannot make facecat build image URLs and redirects on a host of its "
        "choosing. Unset: any host (development).",
        host_list,
        "limits",
    ),
    Setting(
        "TRUSTED_PROXY_COUNT",
        0,
        "Reverse proxies in front of facecat whose X-Forwarded-For is trusted (0: use the "
        "socket's address, so clients cannot pick their own rate-limit identity).",
        int_range(0, 10),
        "limits",
    ),
    Setting(
        "KEY_CACHE_SECONDS",
        5.0,
        "How long a worker reuses a looked-up API key before reading it again; a revoked "
        "key keeps working at most this long in other processes. 0 disables the cache.",
        float_range(0.0, 300.0),
        "limits",
    ),
    Setting(
        "AVATAR_MAX_AGE",
        86400,
        "Cache-Control max-age (seconds) of /avatar responses. An identifier's face never "
        "changes (it is derived from the identifier), so this only bounds how long clients "
        "keep a copy without revalidating.",
        int_range(0, 31536000),
        "api",
    ),
    Setting(
        "AVATAR_MEMORY_BYTES",
        32 * 1024 * 1024,
        "Bytes of resized avatars each web process keeps in memory (LRU) in front of the "
        "renders in storage; 0 disables the memory cache.",
        int_range(0, 4 * 1024**3),
        "api",
    ),
    Setting(
        "AVATAR_STORE_BYTES",
        512 * 1024 * 1024,
        "Cap on the avatar renders kept in storage under avatars/ (about 200 KB each). "
        "The ingest worker removes the oldest beyond it on every run (and `facecat "
        "avatars collect` on demand); a removed avatar is rendered again, identically.",
        int_range(1024 * 1024),
        "api",
    ),
    Setting(
        "MAX_RANDOM_COUNT",
        100,
        "Largest count accepted by /api/v1/faces/random.",
        int_range(1, 1000),
        "api",
    ),
    Setting(
        "CELL_CACHE_SECONDS",
        1.0,
        "How long a web process reuses the per-(gender, age) face counts for random picks "
        "before reading them again; 0 reads them on every request. Faces added since are "
        "picked once it expires; a filter with no cached match is always re-checked.",
        float_range(0.0, 60.0),
        "api",
    ),
    Setting(
        "DRAW_AHEAD",
        8,
        "Random faces a web process fetches per database round trip for a filter asking "
        "for one face; the rest serve the next requests for that filter within "
        "CELL_CACHE_SECONDS. 1 fetches one face per request.",
        int_range(1, 256),
        "api",
    ),
    Setting(
        "SERVED_FLUSH_SECONDS",
        1.0,
        "Seconds a web process buffers last_served/times_served before writing them in one "
        "batch; 0 writes on every request. A crash loses at most this much counting.",
        float_range(0.0, 60.0),
        "api",
    ),
)
