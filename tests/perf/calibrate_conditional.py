"""Inference-time calibration of the conditional generator, measured on held-out seeds.

The trained network's age squashes toward young adults (asking 16 looks 23-25, asking 72
for a man looks 58) and its gender is weak for boys (docs/coverage.md). Instead of hours
of retraining, the condition it is fed can be calibrated: a monotone map from the
requested age to the conditioning age per gender, gender guidance (the one-hot pushed
past its training values, male ``[1 + s, -s]``) and truncation of the noise (``z * psi``).
This script measures candidate conditions and writes the chosen calibration into the
weights file as buffers (``ConditionalDCGAN.set_calibration``).

Honesty rule: calibration is measured on seeds 10000 and up; the coverage benchmark
(``bench_conditional.py``) uses seeds 0-255, which are never used here. Run by hand from
the repository root (pytest does not collect this file), under ``flock /tmp/cpu.lock`` on
the shared machine, in runs of at most a few minutes (``--max-seconds``)::

    .venv/bin/python tests/perf/calibrate_conditional.py sweep --gender male \\
        --ages 0,4,8,12,16,30,50,72,90,110 --scales 0 --max-seconds 280
    .venv/bin/python tests/perf/calibrate_conditional.py table
    .venv/bin/python tests/perf/calibrate_conditional.py apply \\
        --male-ages 0,3,9,30,60,95,130 --female-ages ... --male-scales ... --male-psis ...

``sweep`` appends one record per (gender, conditioning age, gender scale, psi) point to a
JSON file under runs/ (points already measured on the same seeds and weights are
skipped, so a cut-short run resumes); every record keeps each face's robust verdict, so
any band's match can be read from it. ``table`` writes docs/coverage/calibration.md.
``apply`` writes the buffers, then records the calibration in conditional.json (new
sha256 and a provenance entry). ``fold`` writes a candidate whose teen adapter for one
gender carries a fully retrained network (``ingest.generators.folding``), to be measured
with ``requested`` before it replaces anything. ``noise-labels`` keeps the robust verdicts
of faces rendered through the calibration on fresh seeds (200000 and up), and
``noise-shift`` fits a direction in the noise on them and shifts one gender's noise along
it (``calibration_noise_*``), as a candidate or over WEIGHTS::

    .venv/bin/python tests/perf/calibrate_conditional.py noise-labels --gender male
    .venv/bin/python tests/perf/calibrate_conditional.py noise-shift --gender male \
        --shifts 1.5,1.5,0,0,0,0,0 --out runs/candidate/conditional.pt
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from analysis.device import configure_threads  # noqa: E402
from analysis.estimators import load_estimator  # noqa: E402
from analysis.robust import robust_predict  # noqa: E402
from ingest.bands import band_of  # noqa: E402
from ingest.generators import conditional as cond  # noqa: E402
from ingest.generators.folding import age_map, fold_into_adapter  # noqa: E402
from ingest.generators.rendering import generate_uint8  # noqa: E402
from ingest.training import ADAPTER_GATE_REQUESTED_AGES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditional import (  # noqa: E402
    BANDS,
    TARGET_AGES,
    features,
    gender_confident,
    mean_pairwise_distance,
    models_dir_option,
    near_duplicate_rate,
    weights_file_option,
    weights_option,
)

logger = logging.getLogger(__name__)

DEFAULT_RESULTS = REPO_ROOT / "runs" / "calibration" / "sweep.json"
DEFAULT_TABLE = REPO_ROOT / "docs" / "coverage" / "calibration.md"
FIRST_HELD_OUT_SEED = 10_000  # the benchmark uses 0..255; never calibrate on those


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def point_key(gender: str, age: float, scale: float, psi: float) -> str:
    """The identity of a sweep point (seeds and weights are checked separately)."""
    return f"{gender}|age={age:g}|s={scale:g}|psi={psi:g}"


def render_point(
    generator: cond.ConditionalGenerator,
    latents: torch.Tensor,
    gender: str,
    age: float,
    scale: float,
    psi: float,
) -> np.ndarray:
    """uint8 faces for a raw condition point, bypassing the stored calibration."""
    n = latents.shape[0]
    female = torch.full((n,), float(gender == "female"))
    ages = torch.full((n,), float(age))

    def render(chunk: torch.Tensor) -> torch.Tensor:
        condition = cond.encode_condition_unclamped(female[: len(chunk)], ages[: len(chunk)], scale)
        images = generator.network(chunk[:, : cond.NOISE_DIM] * psi, condition)
        return (images + 1.0) * 127.5

    out = generate_uint8(
        lambda c: render(c).permute(0, 2, 3, 1),
        latents,
        batch_size=64,
        native_size=cond.NATIVE_SIZE,
        device=generator.device,
    )
    return out.cpu().numpy()


def band_match(record: dict, band: str) -> tuple[float, float, float]:
    """(robust match, gender ok, band ok) of one sweep record for one band."""
    low, high = next((lo, hi) for label, lo, hi in BANDS if label == band)
    age = np.rint(np.asarray(record["ages"]))
    gender_ok = gender_confident(record["p_female"], record["gender"])
    band_ok = (age >= low) & (age <= high)
    return float((gender_ok & band_ok).mean()), float(gender_ok.mean()), float(band_ok.mean())


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"points": []}


@click.group()
def cli() -> None:
    """Calibrate the conditional generator's condition on held-out seeds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


@cli.command()
@click.option("--gender", "genders", type=click.Choice(cond.GENDERS), multiple=True)
@click.option("--ages", required=True, help="Conditioning ages, comma-separated (may be >100).")
@click.option("--scales", default="0", show_default=True, help="Gender guidance s values.")
@click.option("--psis", default="1", show_default=True, help="Truncation psi values.")
@click.option("--seeds", "n_seeds", default=48, show_default=True, help="Faces per point.")
@click.option("--first-seed", default=FIRST_HELD_OUT_SEED, show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch CPU threads.")
@click.option("--max-seconds", default=280.0, show_default=True, help="Stop after this long.")
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
@models_dir_option
@weights_option
def sweep(
    genders: tuple[str, ...],
    ages: str,
    scales: str,
    psis: str,
    n_seeds: int,
    first_seed: int,
    threads: int,
    max_seconds: float,
    results: Path,
    models_dir: Path,
    weights: Path,
) -> None:
    """Measure every (gender, age, scale, psi) point on held-out seeds; append to RESULTS."""
    if first_seed < 256:
        raise click.BadParameter("seeds below 256 are the benchmark's; calibrate on others")
    configure_threads(threads)
    generator = cond.ConditionalGenerator(weights, device="cpu")
    estimator = load_estimator("faceapi", models_dir, device="cpu", batch_size=128)
    latents = generator.sample_latents(range(first_seed, first_seed + n_seeds))
    stored = _load(results)
    raw_sha = stored.get("network_sha256")
    # Points are measured through the raw network, so they stay valid when only the
    # calibration buffers change; the weights' own sha is recorded for the record.
    network_sha = _network_sha(generator.network)
    if raw_sha and raw_sha != network_sha:
        raise click.ClickException(f"{results} was measured on another network")
    stored["network_sha256"] = network_sha
    backfill = [p for p in stored["points"] if "near_dup" not in p]
    for record in tqdm(backfill, desc="near-dup backfill", unit="point"):
        # Generation alone (no estimator): cheap, so older records get the figure too.
        seeds = generator.sample_latents(
            range(record["first_seed"], record["first_seed"] + record["n"])
        )
        images = render_point(
            generator, seeds, record["gender"], record["age"], record["scale"], record["psi"]
        )
        record["near_dup"] = near_duplicate_rate(images)
    if backfill:
        results.write_text(json.dumps(stored))
    done = {(p["key"], p["first_seed"], p["n"]) for p in stored["points"]}
    todo = [
        (g, a, s, p)
        for g in genders or cond.GENDERS
        for a in _floats(ages)
        for s in _floats(scales)
        for p in _floats(psis)
        if (point_key(g, a, s, p), first_seed, n_seeds) not in done
    ]
    start = time.monotonic()
    for gender, age, scale, psi in tqdm(todo, desc="sweep", unit="point"):
        if time.monotonic() - start > max_seconds:
            logger.info("time budget spent; run again to measure the points left")
            break
        images = render_point(generator, latents, gender, age, scale, psi)
        verdict = robust_predict(estimator, images)
        record = {
            "key": point_key(gender, age, scale, psi),
            "gender": gender,
            "age": age,
            "scale": scale,
            "psi": psi,
            "first_seed": first_seed,
            "n": n_seeds,
            "ages": [round(float(x), 2) for x in verdict.age],
            "p_female": [round(float(x), 4) for x in verdict.p_female],
            "diversity": mean_pairwise_distance(features(estimator, images)[0]),
            "near_dup": near_duplicate_rate(images),
        }
        stored["points"].append(record)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(stored))
        tqdm.write(
            f"{record['key']}: median age {np.median(record['ages']):.1f}, "
            + ", ".join(f"{b} {100 * band_match(record, b)[0]:.0f}%" for b, _, _ in BANDS)
        )


@cli.command("near-dups")
@click.option("--gender", "genders", type=click.Choice(cond.GENDERS), multiple=True)
@click.option("--ages", required=True, help="Conditioning ages, comma-separated.")
@click.option("--scales", default="0", show_default=True)
@click.option("--psis", default="1", show_default=True)
@click.option("--seeds", "n_seeds", default=256, show_default=True, help="Faces per point.")
@click.option("--first-seed", default=FIRST_HELD_OUT_SEED, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
@weights_option
def near_dups(
    genders: tuple[str, ...],
    ages: str,
    scales: str,
    psis: str,
    n_seeds: int,
    first_seed: int,
    threads: int,
    results: Path,
    weights: Path,
) -> None:
    """Near-duplicate rate per point at the benchmark's 256 faces (no estimator: fast).

    The rate grows with the number of faces compared, so the sweep's 48-face figure
    understates what the benchmark and the ingest gate see; truncation (psi < 1) and
    strong gender guidance raise it most.
    """
    if first_seed < 256:
        raise click.BadParameter("seeds below 256 are the benchmark's; calibrate on others")
    configure_threads(threads)
    generator = cond.ConditionalGenerator(weights, device="cpu")
    latents = generator.sample_latents(range(first_seed, first_seed + n_seeds))
    stored = _load(results)
    table = stored.setdefault("near_dups", {})
    for gender in genders or cond.GENDERS:
        for age in _floats(ages):
            for scale in _floats(scales):
                for psi in _floats(psis):
                    images = render_point(generator, latents, gender, age, scale, psi)
                    key = f"{point_key(gender, age, scale, psi)}|seeds={first_seed}+{n_seeds}"
                    table[key] = near_duplicate_rate(images)
                    click.echo(f"{key}: near-dup {100 * table[key]:.0f}%")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(stored))


@cli.command()
@click.option("--gender", type=click.Choice(cond.GENDERS), required=True)
@click.option("--ages", required=True, help="Requested ages, comma-separated (0-100).")
@click.option("--seeds", "n_seeds", default=96, show_default=True, help="Faces per age.")
@click.option("--first-seed", default=FIRST_HELD_OUT_SEED, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option(
    "--diversity", is_flag=True,
    help="Add each cell's near-duplicate rate and face-api feature diversity (as the "
    "benchmark measures them; use 256 seeds to compare with it).",
)  # fmt: skip
@models_dir_option
@click.argument(
    "networks",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
def requested(
    gender: str,
    ages: str,
    n_seeds: int,
    first_seed: int,
    threads: int,
    diversity: bool,
    models_dir: Path,
    networks: tuple[Path, ...],
) -> None:
    """Robust match per requested age, as users ask, for NETWORKS side by side.

    Each age is judged against its own band (13 against 13-19, 20 against 20-39), so the
    edges of a band can be checked. NETWORKS are weights files or training snapshots
    (measured as candidates: their own sha256 is taken as expected, as ``sweep`` does for
    a candidate export).
    """
    if first_seed < 256:
        raise click.BadParameter("seeds below 256 are the benchmark's; calibrate on others")
    configure_threads(threads)
    estimator = load_estimator("faceapi", models_dir, device="cpu", batch_size=128)
    asked = _floats(ages)
    rows = []
    # Candidates often share a file name (OUT/conditional.pt): then name them by folder too.
    unique = len({path.name for path in networks}) == len(networks)
    for path in networks:
        label = path.name if unique else f"{path.parent.name}/{path.name}"
        generator = cond.ConditionalGenerator(
            path, device="cpu", expected_sha256=cond.sha256_file(path)
        )
        latents = generator.sample_latents(range(first_seed, first_seed + n_seeds))
        cells = []
        for age in asked:
            images = generator.generate_for(gender, age, latents).cpu().numpy()
            verdict = robust_predict(estimator, images)
            record = {
                "gender": gender,
                "ages": verdict.age.tolist(),
                "p_female": verdict.p_female.tolist(),
            }
            match, gender_ok, _ = band_match(record, band_of(age).label)
            cell = f"{100 * match:.0f}% ({100 * gender_ok:.0f}%, {np.median(verdict.age):.1f})"
            if diversity:
                spread = mean_pairwise_distance(features(estimator, images)[0])
                cell += f" dup {100 * near_duplicate_rate(images):.0f}%, div {spread:.2f}"
            cells.append(cell)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    click.echo(
        f"{gender}, seeds {first_seed}-{first_seed + n_seeds - 1}: robust match for the asked "
        "age's band (confident gender, median estimated age)"
        + ("; near-duplicates, feature diversity" if diversity else "")
    )
    click.echo("| network | " + " | ".join(f"{a:g}" for a in asked) + " |")
    click.echo("| --- |" + " --- |" * len(asked))
    for row in rows:
        click.echo(row)


def _network_sha(network: cond.ConditionalDCGAN) -> str:
    """SHA-256 over the network's parameters and BN statistics, calibration excluded."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        if not name.startswith("calibration_"):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@cli.command()
@click.option(
    "--results",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TABLE,
    show_default=True,
)
def table(results: Path, out: Path) -> None:
    """Write the sweep as markdown: per gender, every point's match in every band."""
    stored = _load(results)
    lines = [
        "# Calibration sweep of the conditional generator",
        "",
        "Written by `tests/perf/calibrate_conditional.py table` from the sweep records "
        "(held-out seeds, never the benchmark's 0–255). Each row is one raw condition: "
        "the age fed to the network (*cond. age*, may exceed the trained 0–100), gender "
        "guidance *s* (male one-hot `[1+s, -s]`, female `[-s, 1+s]`) and truncation *ψ*. "
        "Band columns: robust match (gender confidence ≥ 0.8 and median age over 9 "
        "augmented copies inside the band) if that band were the one asked for; "
        "**bold** = the best row for the band in that gender. *Div.*: mean pairwise "
        "distance of face-api pooled features (diversity). *Near-dup*: share of the "
        "point's faces with another of them within Hamming distance 6 of the 64-bit "
        "perceptual hash (the ingest gate's duplicate test; grows with the number of faces, "
        "so compare it between rows, not with the benchmark's 256-face figure).",
        "",
    ]
    for gender in cond.GENDERS:
        points = sorted(
            (p for p in stored["points"] if p["gender"] == gender),
            key=lambda p: (p["psi"] != 1.0, p["psi"], p["scale"], p["age"]),
        )
        if not points:
            continue
        best = {band: max(band_match(p, band)[0] for p in points) for band, _, _ in BANDS}
        lines += [
            f"## {gender}",
            "",
            "| cond. age | s | ψ | seeds | median est. age | gender ok | "
            + " | ".join(b for b, _, _ in BANDS)
            + " | div. | near-dup |",
            "| --- " * (8 + len(BANDS)) + "|",
        ]
        for p in points:
            cells = []
            for band, _, _ in BANDS:
                m = band_match(p, band)[0]
                text = f"{100 * m:.0f}%"
                cells.append(f"**{text}**" if m == best[band] and m > 0 else text)
            gender_ok = band_match(p, BANDS[0][0])[1]
            lines.append(
                f"| {p['age']:g} | {p['scale']:g} | {p['psi']:g} | "
                f"{p['first_seed']}–{p['first_seed'] + p['n'] - 1} | "
                f"{np.median(p['ages']):.1f} | {100 * gender_ok:.0f}% | "
                + " | ".join(cells)
                + f" | {p['diversity']:.2f} | {100 * p.get('near_dup', float('nan')):.0f}% |"
            )
        lines.append("")
    if stored.get("near_dups"):
        lines += [
            "## Near-duplicates over more faces (`near-dups`)",
            "",
            "Share of faces with a near-duplicate among the same point's faces, over as many "
            "faces as the benchmark uses (no estimator involved).",
            "",
            "| point | seeds | near-dup |",
            "| --- | --- | --- |",
        ]
        for key, rate in stored["near_dups"].items():
            point, seeds = key.rsplit("|seeds=", 1)
            first, n = seeds.split("+")
            seed_range = f"{first}–{int(first) + int(n) - 1}"
            lines.append(f"| {point.replace('|', ', ')} | {seed_range} | {100 * rate:.0f}% |")
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


# The weights a command starts from; ``apply`` and ``adapter`` write back over them, ``fold``
# writes a candidate elsewhere (``--out``).
start_weights_option = weights_file_option(
    "The weights file to start from (checked against its provenance JSON)."
)


def _git_commit() -> str:
    """HEAD, marked when tracked Python code differs from it: a provenance must not name a
    commit that does not hold the code that ran (documents and weights do not count)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+uncommitted changes" if changed else head


@cli.command()
@click.option("--male-ages", required=True, help="Conditioning age at each knot (men).")
@click.option("--female-ages", required=True, help="Conditioning age at each knot (women).")
@click.option("--male-scales", default=None, help="Gender guidance at each knot (men).")
@click.option("--female-scales", default=None, help="Gender guidance at each knot (women).")
@click.option("--male-psis", default=None, help="Truncation psi at each knot (men).")
@click.option("--female-psis", default=None, help="Truncation psi at each knot (women).")
@click.option("--note", default="", help="Why this calibration (kept in the provenance).")
@start_weights_option
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
def apply(
    male_ages: str,
    female_ages: str,
    male_scales: str | None,
    female_scales: str | None,
    male_psis: str | None,
    female_psis: str | None,
    note: str,
    weights: Path,
    results: Path,
) -> None:
    """Write the calibration into WEIGHTS as buffers and record it in its provenance JSON.

    Knots (requested ages) are ``conditional.CALIBRATION_KNOTS``; each list gives one
    value per knot. The network itself is unchanged, so the sweep stays valid.
    """
    knots = torch.tensor(cond.CALIBRATION_KNOTS)
    zeros, ones = ",".join("0" for _ in knots), ",".join("1" for _ in knots)
    rows = {
        "ages": [_floats(male_ages), _floats(female_ages)],
        "scales": [_floats(male_scales or zeros), _floats(female_scales or zeros)],
        "psis": [_floats(male_psis or ones), _floats(female_psis or ones)],
    }
    for name, (m, f) in rows.items():
        if len(m) != len(knots) or len(f) != len(knots):
            raise click.BadParameter(f"{name}: need {len(knots)} values (knots {knots.tolist()})")
    generator = cond.ConditionalGenerator(weights, device="cpu")
    old_sha = generator.checksum
    network = generator.network.cpu()
    buffers = {
        "calibration_ages": knots,
        "calibration_condition_ages": torch.tensor(rows["ages"]),
        "calibration_gender_scale": torch.tensor(rows["scales"]),
        "calibration_psi": torch.tensor(rows["psis"]),
    }
    try:
        network.set_calibration(buffers)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    stored = _load(results)
    seeds = sorted({(p["first_seed"], p["n"]) for p in stored["points"]})
    entry = {
        "what": "inference-time condition calibration stored as buffers in the weights "
        "file (ConditionalDCGAN.calibration_*): requested age -> conditioning age per "
        "gender (piecewise linear, strictly increasing), gender guidance s, truncation psi",
        "knots_requested_age": knots.tolist(),
        "condition_age": {"male": rows["ages"][0], "female": rows["ages"][1]},
        "gender_scale": {"male": rows["scales"][0], "female": rows["scales"][1]},
        "psi": {"male": rows["psis"][0], "female": rows["psis"][1]},
        "measured_on_seeds": [f"{a}-{a + n - 1}" for a, n in seeds] or [f"{FIRST_HELD_OUT_SEED}+"],
        "sweep_points": len(stored["points"]),
        "sweep_table": "docs/coverage/calibration.md",
        "note": note,
        "benchmark_targets": TARGET_AGES,
    }
    sha = _save_and_record(network, weights, old_sha, ("calibration",), entry)
    click.echo(f"calibrated {weights}: sha256 {sha[:16]}… (was {old_sha[:16]}…)")


def _save_and_record(
    network: cond.ConditionalDCGAN,
    weights: Path,
    old_sha: str,
    section: tuple[str, ...],
    entry: dict,
) -> str:
    """Save NETWORK over WEIGHTS and record ENTRY at SECTION of its provenance JSON.

    The entry gets this command, the code commit, the previous sha256 and the time; the
    provenance gets the new sha256. The file is loaded back through the checksum check
    (the round trip a server will make); returns the new sha256.
    """
    cond.save_weights(network, weights)
    provenance_path = weights.with_suffix(".json")
    provenance = json.loads(provenance_path.read_text())
    provenance["sha256"] = cond.sha256_file(weights)
    target = provenance
    for key in section[:-1]:
        target = target.setdefault(key, {})
    target[section[-1]] = {
        **entry,
        "command": shlex.join(["tests/perf/calibrate_conditional.py", *sys.argv[1:]]),
        "code_commit": _git_commit(),
        "weights_sha256_before": old_sha,
        "applied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    provenance_path.write_text(json.dumps(provenance, indent=2) + "\n")
    return cond.ConditionalGenerator(weights, device="cpu").checksum


@cli.command("adapter")
@click.option(
    "--gender", "genders", type=click.Choice(cond.GENDERS), multiple=True,
    help="Genders whose adapter serves (none given: no adapter serves).",
)  # fmt: skip
@click.option(
    "--gate", "gates", multiple=True, metavar="GENDER:A0,A1,A2,A3",
    help="Move GENDER's gate to these four conditioning ages.",
)  # fmt: skip
@click.option("--note", required=True, help="The measurement this choice rests on.")
@start_weights_option
def adapter(genders: tuple[str, ...], gates: tuple[str, ...], note: str, weights: Path) -> None:
    """Choose whom the trained teen adapters serve, and where their gates sit.

    Like ``apply``, inference-time choices written into WEIGHTS (each adapter's
    ``serving`` and ``gate_ages`` buffers, so the checksum covers them) and recorded in
    the provenance.
    """
    generator = cond.ConditionalGenerator(weights, device="cpu")
    old_sha = generator.checksum
    network = generator.network.cpu()
    try:
        network.set_adapter_genders(genders)
        for gate in gates:
            gender, _, ages = gate.partition(":")
            network.set_adapter_gate_ages(gender, _floats(ages))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    entry = {
        "genders": list(genders),
        "gate_ages": {
            (a.gender_name if i < len(cond.GENDERS) else f"adapters.{i} ({a.gender_name})"): (
                a.gate_ages.tolist()
            )
            for i, a in enumerate(network.adapters)
        },
        "note": note,
    }
    sha = _save_and_record(network, weights, old_sha, ("adapter", "serves"), entry)
    click.echo(f"adapters serve {list(genders)} in {weights}: sha256 {sha[:16]}…")


def _run_record(snapshot: Path) -> dict:
    """What the training run that saved ``snapshot`` (``OUT/samples/g_ema_STEP.pt``) was."""
    run_dir = snapshot.parent.parent
    record: dict = {"snapshot": str(snapshot), "sha256": cond.sha256_file(snapshot)}
    snapshots = run_dir / "snapshots.jsonl"
    if snapshots.is_file():
        for line in snapshots.read_text().splitlines():
            entry = json.loads(line)
            if entry["file"] == snapshot.name:
                record.update(step=entry["step"], seconds=entry["seconds"])
    checkpoint = run_dir / "last.pt"
    if checkpoint.is_file():  # our own checkpoint: it pickles the run's config and commands
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        record.update(config=ckpt["config"], run=ckpt.get("run"), data=ckpt.get("data"))
    return record


@cli.command("fold")
@click.argument("expert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gender", type=click.Choice(cond.GENDERS), required=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The candidate weights file (its provenance JSON is written beside it).",
)
@click.option(
    "--expert-ages",
    default=None,
    metavar="A,B",
    help="Feed EXPERT its own conditioning ages: A at the gate's first edge (or at 0, for a "
    "gate open from 0), B at its last, linear in between (default: the calibration's ages, "
    "as for the network).",
)
@click.option(
    "--expert-guidance",
    type=float,
    default=0.0,
    show_default=True,
    help="Gender guidance added for EXPERT to the calibration's.",
)
@click.option(
    "--new-adapter",
    is_flag=True,
    help="Fold into a new adapter of GENDER beside its teen adapter (for other ages).",
)
@click.option(
    "--gate-requested",
    default=",".join(f"{a:g}" for a in ADAPTER_GATE_REQUESTED_AGES),
    show_default=True,
    metavar="A0,A1,A2,A3",
    help="Requested ages of the gate (rising from A0 to A1, open to A2, closed at A3); "
    "ages below 0 open it from age 0.",
)
@click.option("--note", default="", help="Why (kept in the provenance).")
@start_weights_option
def fold(
    expert: Path,
    gender: str,
    out: Path,
    expert_ages: str | None,
    expert_guidance: float,
    new_adapter: bool,
    gate_requested: str,
    note: str,
    weights: Path,
) -> None:
    """Fold a fully retrained EXPERT (a training snapshot) into one of GENDER's adapters.

    The adapter then renders, inside its gate, what EXPERT renders for the same condition
    (exactly, but for the convolutions' rank-64 truncation, whose error is printed), and
    every other request stays bit-identical. The gate is placed over the requested ages
    (teenagers by default) through WEIGHTS' calibration, as an adapter run places it. OUT
    is a candidate to measure (``requested``); copy it over WEIGHTS only when it is adopted.
    """
    generator = cond.ConditionalGenerator(weights, device="cpu")
    old_sha = generator.checksum
    network = generator.network.cpu()
    expert_network = cond.ConditionalDCGAN()
    expert_network.load_state_dict(torch.load(expert, map_location="cpu", weights_only=True))
    requested_gate = _floats(gate_requested)
    index = network.add_adapter(gender) if new_adapter else network.adapter_index(gender)
    try:
        gate = network.place_adapter_gate(gender, requested_gate, index)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gate-requested") from exc
    low = max(gate[0], 0.0)
    condition_map, map_error, targets = None, 0.0, None
    if expert_ages or expert_guidance:
        targets = tuple(_floats(expert_ages)) if expert_ages else (low, gate[-1])
        if len(targets) != 2:
            raise click.BadParameter("need two ages A,B", param_hint="--expert-ages")
        condition_map, map_error = age_map(low, gate[-1], targets, gender, expert_guidance)
        click.echo(f"expert ages {targets}: largest condition error {map_error:.2e}")
    errors = fold_into_adapter(network, expert_network.eval(), gender, condition_map, index)
    network.set_adapter_genders(sorted({*network.served_genders(), gender}))
    for layer, error in errors.items():
        click.echo(f"{layer}: relative error of the rank-{cond.ADAPTER_RANK} change {error:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
    entry = {
        "what": f"a full retraining (EXPERT) folded into {'a new' if new_adapter else 'the teen'} "
        f"adapter of this gender (adapters.{index}; "
        "ingest.generators.folding): inside the gate the network renders what EXPERT "
        "renders, the convolutions' change truncated to the adapter's rank",
        "adapter_index": index,
        "expert": _run_record(expert),
        "conv_relative_error": errors,
        "expert_conditioning_ages_at_gate_edges": targets,
        "expert_added_gender_guidance": expert_guidance if targets else None,
        "expert_age_map_condition_error": map_error,
        "gate_conditioning_ages": gate,
        "gate_requested_ages": requested_gate,
        "serves": network.served_genders(),
        "note": note,
    }
    key = fold_key(gender, requested_gate) if new_adapter else gender
    sha = _save_and_record(network, out, old_sha, ("adapter_folds", key), entry)
    click.echo(f"folded {expert} into the {key} adapter: {out} sha256 {sha[:16]}…")


def fold_key(gender: str, requested_gate: list[float]) -> str:
    """Provenance key of a fold into a new adapter: gender and the requested ages it opens
    over, e.g. ``male 0-12`` (a teen fold is keyed by its gender alone)."""
    return f"{gender} {max(requested_gate[1], 0.0):g}-{requested_gate[2]:g}"


DEFAULT_NOISE_LABELS = REPO_ROOT / "runs" / "calibration" / "noise_labels.json"
FIRST_NOISE_LABEL_SEED = 200_000  # fresh seeds for fitting the noise direction


@cli.command("noise-labels")
@click.option("--gender", type=click.Choice(cond.GENDERS), required=True)
@click.option("--ages", default="1,2,3,4,5,6,7,8,9,10,11,12", show_default=True,
              help="Requested ages, cycled over the seeds.")  # fmt: skip
@click.option("--seeds", "n_seeds", default=3072, show_default=True)
@click.option("--first-seed", default=FIRST_NOISE_LABEL_SEED, show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch CPU threads.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_NOISE_LABELS,
    show_default=True,
)  # fmt: skip
@models_dir_option
@weights_option
def noise_labels(
    gender: str,
    ages: str,
    n_seeds: int,
    first_seed: int,
    threads: int,
    out: Path,
    models_dir: Path,
    weights: Path,
) -> None:
    """Render GENDER at requested ages through WEIGHTS' calibration and keep each face's
    robust verdict beside its seed: the data ``noise-shift`` fits a direction on.

    The verdict is the benchmark's (median over the same augmentations), so the direction
    is fitted to what the benchmark judges, on seeds it never uses.
    """
    if first_seed < 256:
        raise click.BadParameter("seeds below 256 are the benchmark's; calibrate on others")
    configure_threads(threads)
    estimator = load_estimator("faceapi", models_dir, device="cpu", batch_size=128)
    generator = cond.ConditionalGenerator(weights, device="cpu")
    asked = _floats(ages)
    seeds = list(range(first_seed, first_seed + n_seeds))
    requested_ages = [asked[i % len(asked)] for i in range(n_seeds)]
    p_female: list[float] = []
    estimated: list[float] = []
    chunk = 256
    for start in tqdm(range(0, n_seeds, chunk), desc=f"{gender} faces", unit="batch"):
        latents = generator.sample_latents(seeds[start : start + chunk])
        rows = [
            cond.latents_with_condition(latents[i : i + 1], gender, age)
            for i, age in enumerate(requested_ages[start : start + chunk])
        ]
        images = generator.generate(torch.cat(rows)).cpu().numpy()
        verdict = robust_predict(estimator, images)
        p_female += verdict.p_female.tolist()
        estimated += verdict.age.tolist()
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "gender": gender,
        "weights_sha256": generator.checksum,
        "first_seed": first_seed,
        "requested_ages": requested_ages,
        "p_female": p_female,
        "estimated_ages": estimated,
        "command": shlex.join(["tests/perf/calibrate_conditional.py", *sys.argv[1:]]),
        "code_commit": _git_commit(),
    }
    out.write_text(json.dumps(record) + "\n")
    confident = gender_confident(p_female, gender)
    click.echo(f"{out}: {n_seeds} faces, {100 * confident.mean():.0f}% confidently {gender}")


def _ridge(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """Coefficients of the ridge regression of ``y`` on ``x``, both centred."""
    xc = x - x.mean(0)
    return np.linalg.solve(xc.T @ xc + strength * np.eye(x.shape[1]), xc.T @ (y - y.mean()))


def _ridge_direction(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """Unit normal of the ridge regression of ``y`` on ``x``."""
    coef = _ridge(x, y, strength)
    return coef / np.linalg.norm(coef)


def _held_out_r2(x: np.ndarray, y: np.ndarray, strength: float) -> float:
    """R² on the last fifth of a ridge fit on the first four fifths: how linear it is."""
    cut = len(x) * 4 // 5
    coef = _ridge(x[:cut], y[:cut], strength)
    predicted = (x[cut:] - x[:cut].mean(0)) @ coef + y[:cut].mean()
    return float(1.0 - ((y[cut:] - predicted) ** 2).sum() / ((y[cut:] - y[cut:].mean()) ** 2).sum())


def noise_directions(labels: dict, strength: float = 1.0) -> dict[str, object]:
    """Directions in the 100-d noise fitted on ``noise-labels`` output (InterFaceGAN style).

    ``gender``: along it the verdict's logit for the labels' gender rises; ``age``: along it
    the estimated age rises; ``gender_without_age``: ``gender`` with its ``age`` component
    removed, so moving along it should change gender more than age.
    """
    seeds = range(labels["first_seed"], labels["first_seed"] + len(labels["p_female"]))
    z = cond.seed_latents(seeds)[:, : cond.NOISE_DIM].double().numpy()
    p = np.clip(np.asarray(labels["p_female"], dtype=np.float64), 1e-3, 1 - 1e-3)
    logit = np.log(p / (1 - p)) * (1.0 if labels["gender"] == "female" else -1.0)
    age = np.asarray(labels["estimated_ages"], dtype=np.float64)
    gender_dir = _ridge_direction(z, logit, strength)
    age_dir = _ridge_direction(z, age, strength)
    orth = gender_dir - (gender_dir @ age_dir) * age_dir
    return {
        "gender": gender_dir,
        "age": age_dir,
        "gender_without_age": orth / np.linalg.norm(orth),
        "gender_r2": _held_out_r2(z, logit, strength),
        "age_r2": _held_out_r2(z, age, strength),
        "cosine_gender_age": float(gender_dir @ age_dir),
    }


@cli.command("noise-shift")
@click.option("--gender", type=click.Choice(cond.GENDERS), required=True)
@click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_NOISE_LABELS, show_default=True,
)  # fmt: skip
@click.option("--direction", type=click.Choice(["gender", "gender_without_age"]),
              default="gender_without_age", show_default=True)  # fmt: skip
@click.option("--shifts", required=True, metavar="S0,...,S6",
              help="How far along the direction at each calibration knot.")  # fmt: skip
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The candidate weights file (its provenance JSON is written beside it); may be "
    "WEIGHTS itself once the shift is adopted.",
)  # fmt: skip
@click.option("--note", default="", help="Why (kept in the provenance).")
@start_weights_option
def noise_shift(
    gender: str, labels: Path, direction: str, shifts: str, out: Path, note: str, weights: Path
) -> None:
    """Fit a direction in the noise on LABELS and shift GENDER's noise along it.

    The network then gets ``psi * (z + shift(age) * direction)`` for GENDER, ``shift``
    piecewise linear on the knots; the other gender is unchanged (its shift is kept).
    """
    data = json.loads(labels.read_text())
    if data["gender"] != gender:
        raise click.BadParameter(f"{labels} holds {data['gender']} faces", param_hint="--labels")
    generator = cond.ConditionalGenerator(weights, device="cpu")
    old_sha = generator.checksum
    network = generator.network.cpu()
    fitted = noise_directions(data)
    values = _floats(shifts)
    row = cond.GENDERS.index(gender)
    buffers = network.calibration()
    buffers["calibration_noise_direction"][row] = torch.from_numpy(fitted[direction]).float()
    try:
        buffers["calibration_noise_shift"][row] = torch.tensor(values)
        network.set_calibration(buffers)
    except (RuntimeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--shifts") from exc
    click.echo(
        f"held-out R²: {gender} logit {fitted['gender_r2']:.3f}, age {fitted['age_r2']:.3f}; "
        f"cosine(gender, age) {fitted['cosine_gender_age']:+.3f}"
    )
    if out != weights:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
    entry = {
        "what": "a shift of the noise along a direction fitted on held-out faces' robust "
        "verdicts (InterFaceGAN style): the network gets psi * (z + shift(age) * direction)",
        "direction": direction,
        "shift_at_knots": dict(
            zip([f"{k:g}" for k in cond.CALIBRATION_KNOTS], values, strict=True)
        ),
        "labels": {
            "file": str(labels),
            "sha256": cond.sha256_file(labels),
            "seeds": f"{data['first_seed']}-{data['first_seed'] + len(data['p_female']) - 1}",
            "requested_ages": sorted(set(data["requested_ages"])),
            "command": data["command"],
            "code_commit": data["code_commit"],
            "weights_sha256": data["weights_sha256"],
        },
        "held_out_r2": {"gender_logit": fitted["gender_r2"], "age": fitted["age_r2"]},
        "cosine_gender_age": fitted["cosine_gender_age"],
        "note": note,
    }
    sha = _save_and_record(network, out, old_sha, ("noise_shift", gender), entry)
    click.echo(f"shifted {gender} noise along {direction}: {out} sha256 {sha[:16]}…")


if __name__ == "__main__":
    cli()
