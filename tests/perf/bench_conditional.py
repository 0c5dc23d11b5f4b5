"""Coverage of the conditional generator, per (gender x age band) cell, measured honestly.

Run by hand from the repository root (pytest does not collect ``bench_*`` files)::

    .venv/bin/python tests/perf/bench_conditional.py --threads 2
    .venv/bin/python tests/perf/bench_conditional.py --weights runs/x/samples/g_ema_004000.pt \\
        --per-cell 64 --no-real --no-sheets --no-report   # a learning-curve point

For each of the 10 cells it generates ``--per-cell`` faces (seeds 0..N-1, the requested
age fixed at a point inside the band, see ``TARGET_AGES``) and reports:

* robust match: the share whose augmentation-robust verdict (``analysis.robust``: median
  over identity, flip, ±4 px shifts, 0.9/1.1 scale, JPEG q75) has gender confidence
  >= 0.8 in the requested gender and a median age inside the band. Real UTKFace faces of
  the same cell, downscaled to the same 64 px, go through the same test as a ceiling.
* diversity: mean pairwise L2 distance of face-api's 512-d pooled features among the
  generated faces of the cell, and the same among real faces of that cell (ratio ~1 means
  no collapse).
* near-duplicates: share of generated faces with another face of the same cell within
  Hamming distance 6 of its 64-bit perceptual hash (the ingest gate's hash).
* CPU faces/s at batch 64 (generation alone, and with the robust verdict), training
  time from the provenance file.

It writes docs/coverage.md and one contact sheet per cell under docs/coverage/ (the first
32 faces, unselected, upscaled to 128 px; a green/red corner mark shows whether the robust
verdict matched), plus an identity sweep (one seed across ages). No UTKFace image is ever
written: real faces are only read to compute figures.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from analysis.device import configure_threads  # noqa: E402
from analysis.estimators import load_estimator  # noqa: E402
from analysis.robust import robust_predict  # noqa: E402
from analysis.types import AgeGenderBatch  # noqa: E402
from ingest.bands import BANDS as CATALOG_BANDS  # noqa: E402
from ingest.bands import band_of  # noqa: E402
from ingest.generators import conditional as cond  # noqa: E402
from ingest.imaging import hamming, phash  # noqa: E402

logger = logging.getLogger(__name__)

GENDER_THRESHOLD = 0.8  # the ingest gate's GENDER_THRESHOLD default
DUPLICATE_DISTANCE = 6
# (label, low, high) per catalog band, the tuples the reports unpack.
BANDS = tuple((band.label, band.low, band.high) for band in CATALOG_BANDS)
# The age asked of the generator for each band: inside the band, away from its edges where
# the estimator's ±4-year error decides the verdict by coin toss. On-demand generation asks
# the same way (a filter's range is mapped to an age inside it).
TARGET_AGES = {"0-12": 6.0, "13-19": 16.0, "20-39": 30.0, "40-59": 50.0, "60+": 72.0}
HAND_WRITTEN = "<!-- Written by hand below this line; bench_conditional.py keeps it. -->"
SWEEP_AGES = (3.0, 10.0, 16.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0)
# Where the estimators' weights are (``make weights``); shared with calibrate_conditional.py.
models_dir_option = click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / "instance" / "models",
    show_default=True,
)


def weights_file_option(help_text: str):
    """``--weights``: a conditional weights file, the committed one by default."""
    return click.option(
        "--weights",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=cond.DEFAULT_WEIGHTS,
        show_default=True,
        help=help_text,
    )


# The conditional weights a perf tool measures: the committed file, or a candidate export
# (with its provenance JSON next to it), so a retrained network is measured without
# replacing the committed one.
weights_option = weights_file_option(
    "Weights to measure (a candidate export with its provenance JSON next to it)."
)


@dataclass
class CellResult:
    """The figures of one cell; ``None`` where a figure was not computed."""

    gender: str
    band: str
    target_age: float
    match: float
    gender_ok: float
    band_ok: float
    median_age: float
    diversity: float
    real_diversity: float | None
    real_match: float | None
    near_dup: float
    real_count: int


def features(estimator: object, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Pooled estimator features if the estimator exposes them, else raw pixels (named)."""
    if hasattr(estimator, "features"):
        return np.asarray(estimator.features(images)), "estimator features"
    net = getattr(estimator, "net", None)
    if net is not None and hasattr(net, "features"):
        from analysis.faceapi import preprocess

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), 128):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + 128]))
                _, net_input = preprocess(chunk.to(estimator.device))
                out.append(net.features(net_input).float().cpu().numpy())
        return np.concatenate(out), "face-api pooled features (512-d)"
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return flat, "pixels"


def gender_confident(p_female: np.ndarray, gender: str) -> np.ndarray:
    """Per face: is the verdict confidently ``gender`` (the ingest gate's threshold)?"""
    p_female = np.asarray(p_female)
    if gender == "female":
        return p_female >= GENDER_THRESHOLD
    return (1.0 - p_female) >= GENDER_THRESHOLD


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean L2 distance over all unordered pairs of rows."""
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    n = len(x)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean()) if n > 1 else float("nan")


def near_duplicate_rate(images: np.ndarray) -> float:
    """Share of faces with another face of the batch within the ingest hash distance."""
    hashes = phash(images)
    dist = hamming(hashes[:, None], hashes[None, :])
    np.fill_diagonal(dist, 64)
    return float((dist.min(1) <= DUPLICATE_DISTANCE).mean())


def load_real(utkface_dir: Path, size: int) -> dict[tuple[str, str], np.ndarray]:
    """Real faces per cell, resized to the generator's size, kept in memory only."""
    cells: dict[tuple[str, str], list[np.ndarray]] = {}
    with (utkface_dir / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            band = band_of(int(row["age"])).label
            with Image.open(utkface_dir / "images" / row["file"]) as img:
                small = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            cells.setdefault((row["gender"], band), []).append(np.asarray(small))
    return {key: np.stack(value) for key, value in cells.items()}


def real_baseline(
    estimator: object, utkface_dir: Path, size: int, per_cell: int, cache: Path
) -> dict[str, tuple[float, float, int]]:
    """Per cell: (feature diversity, robust match, faces in the cell) of real faces.

    Cached in ``cache`` (outside git, under runs/) keyed by size and sample count, since
    it costs as much estimator time as the generated faces and never changes.
    """
    key = f"{size}px/{per_cell}"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if key in stored:
            return {cell: tuple(v) for cell, v in stored[key].items()}
    out: dict[str, tuple[float, float, int]] = {}
    for (gender, band), images in sorted(load_real(utkface_dir, size).items()):
        low, high = next((lo, hi) for label, lo, hi in BANDS if label == band)
        picked = images[np.random.default_rng(0).permutation(len(images))[:per_cell]]
        diversity = mean_pairwise_distance(features(estimator, picked)[0])
        verdict: AgeGenderBatch = robust_predict(estimator, picked)
        age = np.rint(verdict.age)
        confident = gender_confident(verdict.p_female, gender)
        match = float((confident & (age >= low) & (age <= high)).mean())
        out[f"{gender}:{band}"] = (diversity, match, len(images))
        logger.info(
            "real %s %s: match %.0f%%, diversity %.2f", gender, band, 100 * match, diversity
        )
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    stored[key] = out
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(stored, indent=2))
    return out


def contact_sheet(images: np.ndarray, matched: np.ndarray, path: Path, columns: int = 8) -> None:
    """Grid of faces upscaled to 128 px; a corner mark shows the robust verdict."""
    tiles = []
    for image, ok in zip(images, matched, strict=True):
        tile = Image.fromarray(image).resize((128, 128), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(tile)
        draw.rectangle((2, 2, 11, 11), fill=(40, 200, 60) if ok else (220, 40, 40))
        tiles.append(tile)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * 128, rows * 128), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * 128, (i // columns) * 128))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def identity_sweep(generator: cond.ConditionalGenerator, path: Path, seeds: int = 6) -> None:
    """Rows: one seed (female then male); columns: SWEEP_AGES. Shows identity under age."""
    latents = generator.sample_latents(range(seeds))
    rows = []
    for gender in ("female", "male"):
        for i in range(seeds):
            row = [generator.generate_for(gender, age, latents[i : i + 1])[0] for age in SWEEP_AGES]
            rows.append(np.concatenate([r.cpu().numpy() for r in row], axis=1))
    grid = np.concatenate(rows, axis=0)
    h, w = grid.shape[:2]
    Image.fromarray(grid).resize((w * 2, h * 2), Image.Resampling.BICUBIC).save(path, optimize=True)


def throughput(
    generator: cond.ConditionalGenerator, estimator: object, seconds: float = 10.0
) -> tuple[float, float]:
    """(faces/s generating at batch 64, faces/s generating + robust verdict at batch 64)."""
    latents = generator.sample_latents(range(64))
    generator.generate_for("female", 30.0, latents)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        generator.generate_for("female", 30.0, latents, batch_size=64)
        count += 64
    gen_rate = count / (time.perf_counter() - start)
    start = time.perf_counter()  # one batch: the estimator dominates and is slow on CPU
    images = generator.generate_for("female", 30.0, latents, batch_size=64).cpu().numpy()
    robust_predict(estimator, images)
    return gen_rate, 64 / (time.perf_counter() - start)


def load_generator(weights: Path) -> cond.ConditionalGenerator:
    """The committed generator, or (for learning curves) a raw EMA snapshot by path."""
    if weights.resolve() == cond.DEFAULT_WEIGHTS.resolve() or weights.with_suffix(".json").exists():
        return cond.ConditionalGenerator(weights, device="cpu")
    logger.warning("%s has no provenance; loading it unverified for measurement only", weights)
    return cond.ConditionalGenerator(
        weights, device="cpu", expected_sha256=cond.sha256_file(weights)
    )


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def write_report(
    results: list[CellResult],
    path: Path,
    *,
    weights: Path,
    checksum: str,
    provenance: dict,
    per_cell: int,
    feature_kind: str,
    rates: tuple[float, float] | None,
    threads: int,
    real_per_cell: int,
    calibration: str = "",
) -> None:
    """docs/coverage.md: the table plus how it was measured.

    Everything after the ``HAND_WRITTEN`` marker line in the existing file (what the
    sheets show, design notes, against the target) is kept as it is.
    """
    lines = [
        "# Coverage of the conditional generator",
        "",
        f"Measured with `tests/perf/bench_conditional.py` on `{_shown(weights)}` "
        f"(sha256 `{checksum[:16]}…`), {per_cell} faces per cell (seeds 0–{per_cell - 1}, "
        "the same noise in every cell), requested age per cell: "
        + ", ".join(f"{k} → {v:g}" for k, v in TARGET_AGES.items())
        + ".",
        "",
        "*Robust match*: the face-api estimator's verdict, median over 9 augmented copies "
        "(identity, flip, ±4 px shifts, 0.9/1.1 scale, JPEG q75), has gender confidence ≥ "
        f"{GENDER_THRESHOLD} in the requested gender **and** a median age inside the band. "
        f"*Real*: the same test on up to {real_per_cell} real UTKFace faces of that cell "
        "(diversity on the same faces), downscaled to the same "
        f"64 px (a ceiling for the estimator on this data). *Diversity*: mean pairwise L2 "
        f"distance of {feature_kind} among the cell's faces; generated / real. "
        f"*Near-dup*: share of faces with another face of the same cell within Hamming "
        f"distance {DUPLICATE_DISTANCE} of the 64-bit perceptual hash. Target: ≥ 70% robust "
        "match in every cell.",
        "",
        "| cell | asked age | robust match | gender ok | band ok | median est. age "
        "| real faces: match | diversity gen / real | near-dup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        real_div = "–" if r.real_diversity is None else f"{r.real_diversity:.2f}"
        lines.append(
            f"| {r.gender} {r.band} | {r.target_age:g} | **{_pct(r.match)}** | "
            f"{_pct(r.gender_ok)} | {_pct(r.band_ok)} | {r.median_age:.0f} | "
            f"{_pct(r.real_match)} (n={r.real_count}) | {r.diversity:.2f} / {real_div} | "
            f"{_pct(r.near_dup)} |"
        )
    mean_match = float(np.mean([r.match for r in results]))
    reached = sum(r.match >= 0.7 for r in results)
    lines += [
        "",
        f"Mean robust match over the 10 cells: **{100 * mean_match:.0f}%**; cells at ≥ 70%: "
        f"**{reached} of 10**.",
        "",
    ]
    if rates:
        lines.append(
            f"CPU speed ({threads} thread{'s' if threads != 1 else ''}, batch 64): "
            f"{rates[0]:.0f} faces/s generated; {rates[1]:.0f} faces/s generated and given "
            "the robust verdict (9 estimator passes per face)."
        )
    if provenance:
        lines.append(_training_line(provenance))
    lines += [
        "",
        "Contact sheets: `docs/coverage/<gender>_<band>.png` (first 32 seeds, not selected; "
        "64 px output upscaled to 128 px; green corner = robust verdict matched, red = not). "
        "`docs/coverage/identity_sweep.png`: six seeds per gender (rows) at ages "
        + ", ".join(f"{a:g}" for a in SWEEP_AGES)
        + " (columns).",
        "",
    ]
    if calibration:
        lines += [calibration, ""]
    kept = ""
    if path.is_file() and HAND_WRITTEN in path.read_text():
        kept = path.read_text().split(HAND_WRITTEN, 1)[1]
    lines.append(HAND_WRITTEN)
    path.write_text("\n".join(lines) + kept)


PROVENANCE_FILE = "ingest/generators/weights/conditional.json"


def _training_line(provenance: dict) -> str:
    """How the measured weights were trained, from their provenance (base network first).

    Why per gender: a gender's teen cells may be served by the trained adapter or by a
    retraining folded into its adapter (``adapter_folds``), and a fold takes the gender
    away from the trained adapter, so its ``serves`` record alone would name the wrong run.
    Folds into an added adapter (keyed like ``male 0-12``) are named by their key.
    """

    def run(record: dict, steps: str = "steps") -> str:
        threads = record.get("config", {}).get("threads") or 1
        return (
            f"{record.get(steps)} steps of batch {record.get('config', {}).get('batch_size')} "
            f"in {record.get('seconds')} s on {threads} CPU thread{'s' if threads != 1 else ''}"
        )

    base = provenance.get("base_network")
    if not (base and provenance.get("adapter")):
        return f"Training: {run(provenance)}; commands and data in `{PROVENANCE_FILE}`."
    folds = provenance.get("adapter_folds", {})
    trained = [
        g
        for g in provenance["adapter"].get("serves", {}).get("genders", list(cond.GENDERS))
        if g not in folds
    ]
    parts = [f"base network {run(base)}"]
    if trained:
        parts.append(f"{' and '.join(trained)} teen adapter trained {run(provenance)}")
    for key, fold in sorted(folds.items()):  # a gender: its teen adapter; else "male 0-12"
        adapter = f"{key} teen adapter" if key in cond.GENDERS else f"{key} adapter"
        parts.append(f"{adapter} a retraining folded in, {run(fold['expert'], 'step')}")
    return f"Training: {'; '.join(parts)}; commands and data in `{PROVENANCE_FILE}`."


def describe_calibration(generator: cond.ConditionalGenerator) -> str:
    """One paragraph: the calibration stored in the weights, per gender and requested age."""
    buffers = generator.network.calibration()
    knots = buffers["calibration_ages"].tolist()
    if all(torch.equal(buffers[k], v) for k, v in cond.identity_calibration().items()):
        return "Calibration: none (identity buffers): the network gets the requested condition."
    parts = []
    for row, gender in enumerate(("male", "female")):
        entries = [
            f"{a:g} → {c:g}"
            + (f" (s {s:g})" if s else "")
            + (f" (ψ {p:g})" if p != 1.0 else "")
            + (f" (shift {n:g})" if n else "")
            for a, c, s, p, n in zip(
                knots,
                buffers["calibration_condition_ages"][row].tolist(),
                buffers["calibration_gender_scale"][row].tolist(),
                buffers["calibration_psi"][row].tolist(),
                buffers["calibration_noise_shift"][row].tolist(),
                strict=True,
            )
        ]
        parts.append(f"{gender}: " + ", ".join(entries))
    return (
        "Calibration stored in the weights (requested age → conditioning age, gender "
        "guidance s, truncation ψ, noise shift along a fitted gender direction; piecewise "
        "linear between knots; chosen on held-out seeds, "
        "see `docs/coverage/calibration.md`): " + "; ".join(parts) + "."
    )


@click.command()
@weights_option
@models_dir_option
@click.option(
    "--utkface-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / ".." / "shared" / "data" / "utkface-dev",
    show_default=True,
)
@click.option("--per-cell", default=256, show_default=True)
@click.option(
    "--first-seed",
    default=0,
    show_default=True,
    help="Seeds first..first+per-cell-1; the report is only written for the standard 0.",
)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--real/--no-real", default=True, help="Measure real faces of each cell too.")
@click.option("--real-per-cell", default=128, show_default=True, help="Real faces per cell.")
@click.option("--sheets/--no-sheets", default=True, help="Write contact sheets.")
@click.option("--report/--no-report", default=True, help="Write docs/coverage.md.")
@click.option(
    "--sheet-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / "docs" / "coverage",
    show_default=True,
    help="Where contact sheets go (elsewhere to look at a candidate's without replacing them).",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Cell results, rewritten after every cell (a cut-short run keeps what it did).",
)
@click.option(
    "--gender",
    "only_gender",
    type=click.Choice(["male", "female", "both"]),
    default="both",
    show_default=True,
    help="Measure only these cells (to split the work over two processes).",
)
@click.option(
    "--cells-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Take cell results from --json-out files of the same weights instead of measuring.",
)
@click.option(
    "--real-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO_ROOT / "runs" / "bench_real_baseline.json",
    show_default=True,
    help="Real-face figures do not depend on the generator: computed once, reused.",
)
def main(
    weights: Path,
    models_dir: Path,
    utkface_dir: Path,
    per_cell: int,
    first_seed: int,
    threads: int,
    real: bool,
    sheets: bool,
    report: bool,
    json_out: Path | None,
    real_cache: Path,
    real_per_cell: int,
    only_gender: str,
    cells_from: tuple[Path, ...],
    sheet_dir: Path,
) -> None:
    """Measure every cell and write docs/coverage.md and docs/coverage/*.png."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_threads(threads)
    generator = load_generator(weights)
    estimator = load_estimator("faceapi", models_dir, device="cpu", batch_size=128)
    baseline = (
        real_baseline(estimator, utkface_dir, generator.native_size, real_per_cell, real_cache)
        if real
        else {}
    )
    if first_seed and (report or sheets):
        raise click.UsageError("--first-seed is for validation runs: add --no-report --no-sheets")
    latents = generator.sample_latents(range(first_seed, first_seed + per_cell))
    results: list[CellResult] = []
    feature_kind = "pixels"
    sheet_dir.mkdir(parents=True, exist_ok=True)
    for path in cells_from:
        stored = json.loads(path.read_text())
        if (
            stored["checksum"] != generator.checksum
            or stored["per_cell"] != per_cell
            or stored.get("first_seed", 0) != first_seed
        ):
            raise click.ClickException(f"{path} was measured on other weights or sample size")
        feature_kind = stored["feature_kind"]
        results += [CellResult(**r) for r in stored["results"]]
    genders = () if cells_from else ("male", "female") if only_gender == "both" else (only_gender,)
    for gender in genders:
        for band, low, high in BANDS:
            age = TARGET_AGES[band]
            images = generator.generate_for(gender, age, latents).cpu().numpy()
            verdict = robust_predict(estimator, images)
            gender_ok = gender_confident(verdict.p_female, gender)
            rounded = np.rint(verdict.age)
            band_ok = (rounded >= low) & (rounded <= high)
            matched = gender_ok & band_ok
            feats, feature_kind = features(estimator, images)
            real_div, real_match, real_count = baseline.get(f"{gender}:{band}", (None, None, 0))
            result = CellResult(
                gender=gender,
                band=band,
                target_age=age,
                match=float(matched.mean()),
                gender_ok=float(gender_ok.mean()),
                band_ok=float(band_ok.mean()),
                median_age=float(np.median(verdict.age)),
                diversity=mean_pairwise_distance(feats),
                real_diversity=real_div,
                real_match=real_match,
                near_dup=near_duplicate_rate(images),
                real_count=real_count,
            )
            logger.info("%s", result)
            results.append(result)
            if json_out:
                record = {
                    "checksum": generator.checksum,
                    "per_cell": per_cell,
                    "first_seed": first_seed,
                    "feature_kind": feature_kind,
                    "results": [r.__dict__ for r in results],
                }
                json_out.write_text(json.dumps(record, indent=2))
            if sheets:
                name = f"{gender}_{band.replace('+', 'plus')}.png"
                contact_sheet(images[:32], matched[:32], sheet_dir / name)
    results.sort(key=lambda r: (r.gender != "male", [b[0] for b in BANDS].index(r.band)))
    rates = None
    if report:
        rates = throughput(generator, estimator)
        logger.info("faces/s at batch 64: %.1f generated, %.1f with robust verdict", *rates)
    if sheets:
        identity_sweep(generator, sheet_dir / "identity_sweep.png")
    provenance_path = weights.with_suffix(".json")
    provenance = json.loads(provenance_path.read_text()) if provenance_path.exists() else {}
    if report and len(results) != 2 * len(BANDS):
        logger.warning("only %d of 10 cells measured: docs/coverage.md not written", len(results))
    elif report:
        write_report(
            results,
            REPO_ROOT / "docs" / "coverage.md",
            weights=weights.resolve(),
            checksum=generator.checksum,
            provenance=provenance,
            per_cell=per_cell,
            feature_kind=feature_kind,
            rates=rates,
            threads=threads,
            real_per_cell=real_per_cell,
            calibration=describe_calibration(generator),
        )
    logger.info(
        "mean robust match %.1f%%; per cell: %s",
        100 * np.mean([r.match for r in results]),
        ", ".join(f"{r.gender} {r.band} {100 * r.match:.0f}%" for r in results),
    )


if __name__ == "__main__":
    main()
