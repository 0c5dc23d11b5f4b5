"""The photoreal generator per gender × age cell: what passes, what it looks like, who it is.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root::

    .venv/bin/python tests/perf/bench_photoreal_cells.py --out /tmp/cells.json

What it measures, in one run, with the real models on the CPU (2 torch threads):

1. per cell (female/male × 0-12, 13-19, 20-39, 40-59, 60+): candidates steered into the
   cell (``SteeredPhotoreal``; ages drawn inside the band, 60+ as 60..80), the share the
   face detector rejects (by reason) and the share whose augmentation-robust verdict
   lands in the cell (the on-demand gate), seconds per candidate;
2. the same verdicts for plain samples of the generator (its own distribution);
3. diversity: mean pairwise face-descriptor distance (face-api's faceRecognitionNet) of
   the passing faces, beside real UTKFace faces of the same cell;
4. identity across age edits: descriptor distance between a face and the same seed
   steered to other ages (dlib's "same person" threshold is 0.6), and a lifetime strip;
5. the face gate on ``--gate-faces`` plain samples: rejects by reason and a sheet of every
   rejected face, to count false rejects by eye;
6. a contact sheet per cell (16 passing faces at 256 px) under ``docs/photoreal/``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

from analysis.estimators import load_estimator  # noqa: E402
from analysis.recognition import FaceDescriptorNet, face_descriptors  # noqa: E402
from analysis.robust import cell_match, robust_predict  # noqa: E402
from analysis.vocabulary import BANDS, GENDERS  # noqa: E402
from ingest.generators.photoreal import PhotorealGenerator  # noqa: E402
from ingest.ondemand.strategies import OLDEST_AIM, SteeredPhotoreal  # noqa: E402
from ingest.steering import Steering, aimed_styles  # noqa: E402

logger = logging.getLogger("bench_photoreal_cells")
DOCS = REPO_ROOT / "docs" / "photoreal"
SHARED = REPO_ROOT / ".." / "shared" / "data" / "utkface-dev"
SAME_PERSON = 0.6
SHEET_FACES = 16
EDIT_AGES = (8, 16, 30, 50, 70)
LIFETIME_AGES = (5, 12, 20, 30, 40, 50, 60, 70, 78)


def _chunks(seeds: list[int], size: int) -> list[list[int]]:
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def _small(image: np.ndarray, size: int = 256) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def judge(generator: Any, estimator: Any, images: np.ndarray) -> tuple[Any, Any, float]:
    """(framing, robust verdict on the crops, seconds)."""
    start = time.perf_counter()
    framed = generator.analysis_view(images)
    verdict = robust_predict(estimator, framed.crops)
    return framed, verdict, time.perf_counter() - start


def mean_pairwise(descriptors: torch.Tensor) -> float | None:
    if len(descriptors) < 2:
        return None
    d = torch.cdist(descriptors, descriptors)
    n = len(descriptors)
    return float(d.sum() / (n * (n - 1)))


def real_faces(gender: str, low: int, high: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` UTKFace chips of the cell (read from ../shared, never copied)."""
    import csv

    labels = SHARED / "labels.csv"
    if not labels.is_file():
        return np.zeros((0, 200, 200, 3), np.uint8)
    with labels.open() as handle:
        rows = list(csv.DictReader(handle))
    keys = list(rows[0])
    name_key = next(k for k in keys if "file" in k or "name" in k or "path" in k)
    chosen = [r for r in rows if low <= int(r["age"]) <= high and _gender(r["gender"]) == gender]
    picks = rng.permutation(len(chosen))[:n]
    images = []
    for i in picks:
        path = SHARED / chosen[i][name_key]
        if not path.is_file():
            path = SHARED / "images" / chosen[i][name_key]
        images.append(np.asarray(Image.open(path).convert("RGB").resize((200, 200))))
    return np.stack(images) if images else np.zeros((0, 200, 200, 3), np.uint8)


def _gender(value: str) -> str:
    return {"0": "male", "1": "female", "male": "male", "female": "female"}.get(value, value)


def sheet(
    rows: list[tuple[str, list[np.ndarray]]], per_row: int, out: Path, size: int = 256
) -> None:
    """A labelled grid of ``size``-px tiles, one row per label (JPEG, quality 88)."""
    height = size + 18
    canvas = Image.new("RGB", (per_row * size, len(rows) * height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, tiles) in enumerate(rows):
        for c, tile in enumerate(tiles[:per_row]):
            canvas.paste(Image.fromarray(_small(tile, size)), (c * size, r * height + 18))
        draw.text((4, r * height + 3), label, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=88)


def cells_run(
    gen: Any, est: Any, steering: Steering, descr: Any, per_cell: int, batch: int
) -> dict:
    results: dict[str, Any] = {}
    rng = np.random.default_rng(7)
    seed = 700_000
    for gender in GENDERS:
        for band in BANDS:
            high = min(band.high, OLDEST_AIM)
            adapter = SteeredPhotoreal.for_filter(gen, steering, gender, band.low, high)
            reasons: Counter[str] = Counter()
            passed_images: list[np.ndarray] = []
            passed_crops: list[np.ndarray] = []
            ages: list[float] = []
            seconds, tried, passed, extra = 0.0, 0, 0, 0
            # The first ``per_cell`` candidates are measured; more are drawn (up to four
            # times as many) only to fill the sheet to 16 faces, and counted apart.
            for chunk in _chunks(list(range(seed, seed + 4 * per_cell)), batch):
                measuring = tried < per_cell
                if not measuring and len(passed_images) >= SHEET_FACES:
                    break
                start = time.perf_counter()
                latents = adapter.sample_latents(chunk)
                images = adapter.generate(latents, batch_size=len(chunk)).cpu().numpy()
                framed, verdict, _ = judge(gen, est, images)
                ok = cell_match(verdict, gender, (band.low, band.high), 0.8)
                if not measuring:
                    extra += len(chunk)
                    passed_images.extend(
                        images[i] for i in range(len(chunk)) if ok[i] and framed.reasons[i] is None
                    )
                    continue
                seconds += time.perf_counter() - start
                for i, reason in enumerate(framed.reasons):
                    tried += 1
                    if reason is not None:
                        reasons[reason] += 1
                    elif ok[i]:
                        passed += 1
                        passed_images.append(images[i])
                        passed_crops.append(framed.crops[i])
                        ages.append(float(verdict.age[i]))
            seed += 4 * per_cell
            key = f"{gender}:{band.label}"
            crops = np.stack(passed_crops) if passed_crops else np.zeros((0, 160, 160, 3), np.uint8)
            generated_div = mean_pairwise(face_descriptors(descr, crops)) if len(crops) else None
            real = real_faces(gender, band.low, band.high, 64, rng)
            real_div = mean_pairwise(face_descriptors(descr, real)) if len(real) else None
            results[key] = {
                "tried": tried,
                "passed": passed,
                "sheet_extra_candidates": extra,
                "pass_rate": round(passed / tried, 3),
                "detector_rejects": dict(reasons),
                "seconds_per_candidate": round(seconds / tried, 3),
                "median_robust_age": round(float(np.median(ages)), 1) if ages else None,
                "diversity_generated": round(generated_div, 3) if generated_div else None,
                "diversity_real": round(real_div, 3) if real_div else None,
            }
            logger.info("%s %s", key, json.dumps(results[key]))
            sheet(
                [
                    (f"{key}: {passed}/{tried} passed, steered", passed_images[:8]),
                    ("", passed_images[8:16]),
                ],
                8,
                DOCS / f"cell_{gender}_{band.label.replace('+', 'plus')}.jpg",
            )
    return results


def plain_run(gen: Any, est: Any, samples: int, batch: int) -> dict:
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for chunk in _chunks(list(range(800_000, 800_000 + samples)), batch):
        images = gen.generate(gen.sample_latents(chunk), batch_size=len(chunk)).cpu().numpy()
        framed, verdict, _ = judge(gen, est, images)
        for gender in GENDERS:
            for band in BANDS:
                ok = cell_match(verdict, gender, (band.low, band.high), 0.8)
                counts[f"{gender}:{band.label}"] += int(
                    sum(1 for i, r in enumerate(framed.reasons) if r is None and ok[i])
                )
        reasons.update(r for r in framed.reasons if r is not None)
    return {
        "samples": samples,
        "robust_share": {k: round(v / samples, 3) for k, v in sorted(counts.items())},
        "detector_rejects": dict(reasons),
    }


def identity_run(gen: Any, est: Any, steering: Steering, descr: Any, seeds: int) -> dict:
    distances: dict[int, list[float]] = {a: [] for a in EDIT_AGES}
    reached: dict[int, list[float]] = {a: [] for a in EDIT_AGES}
    for s in range(seeds):
        base = gen.candidate_styles(900_000 + s, 1)
        styles = [base[0]] + [steering.shift_age(base, np.array([a]))[0] for a in EDIT_AGES]
        images = gen.generate(torch.from_numpy(np.stack(styles)), batch_size=6).cpu().numpy()
        framed, verdict, _ = judge(gen, est, images)
        desc = face_descriptors(descr, framed.crops)
        for k, age in enumerate(EDIT_AGES, start=1):
            distances[age].append(float(torch.dist(desc[0], desc[k])))
            reached[age].append(float(verdict.age[k]))
    # One lifetime strip: a seed of each gender from 5 to 78.
    rows = []
    for gender, seed in (("female", 42), ("male", 7)):
        candidates = gen.candidate_styles(seed, 16)
        styles = [
            aimed_styles(steering, candidates, gender, a, nearest_age=False)[0]
            for a in LIFETIME_AGES
        ]
        images = gen.generate(torch.from_numpy(np.stack(styles)), batch_size=3).cpu().numpy()
        framed, verdict, _ = judge(gen, est, images)
        label = f"seed {seed} {gender}, asked " + ", ".join(map(str, LIFETIME_AGES))
        label += "; robust estimate " + ", ".join(f"{a:.0f}" for a in verdict.age)
        rows.append((label, list(images)))
    sheet(rows, len(LIFETIME_AGES), DOCS / "lifetime.jpg", size=200)
    return {
        str(a): {
            "median_distance": round(float(np.median(distances[a])), 3),
            "same_person_share": round(float(np.mean(np.array(distances[a]) < SAME_PERSON)), 3),
            "median_robust_age": round(float(np.median(reached[a])), 1),
        }
        for a in EDIT_AGES
    }


def gate_run(gen: Any, n: int, batch: int) -> dict:
    reasons: Counter[str] = Counter()
    rejected: list[tuple[str, np.ndarray]] = []
    start = time.perf_counter()
    for chunk in _chunks(list(range(1_000_000, 1_000_000 + n)), batch):
        images = gen.generate(gen.sample_latents(chunk), batch_size=len(chunk)).cpu().numpy()
        framed = gen.analysis_view(images)
        for i, reason in enumerate(framed.reasons):
            if reason is not None:
                reasons[reason] += 1
                rejected.append((f"{chunk[i]} {reason}", images[i]))
    rows = [
        (
            " | ".join(label for label, _ in rejected[r : r + 8]),
            [img for _, img in rejected[r : r + 8]],
        )
        for r in range(0, len(rejected), 8)
    ]
    if rows:
        sheet(rows, 8, DOCS / "gate_rejects.jpg", size=160)
    return {
        "faces": n,
        "rejected": sum(reasons.values()),
        "reasons": dict(reasons),
        "seconds": round(time.perf_counter() - start, 1),
    }


@click.command()
@click.option("--models-dir", default=str(REPO_ROOT / "instance" / "models"), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--per-cell", type=int, default=40, show_default=True)
@click.option("--plain", type=int, default=160, show_default=True)
@click.option("--identity-seeds", type=int, default=16, show_default=True)
@click.option("--gate-faces", type=int, default=1000, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None)
def main(
    models_dir: str,
    threads: int,
    per_cell: int,
    plain: int,
    identity_seeds: int,
    gate_faces: int,
    batch: int,
    out: str | None,
) -> None:
    """Measure the photoreal generator per cell and draw the sheets under docs/photoreal/."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(threads)
    gen = PhotorealGenerator.from_models_dir(models_dir, device="cpu")
    est = load_estimator("faceapi", models_dir, device="cpu")
    descr = FaceDescriptorNet.from_models_dir(models_dir, device="cpu")
    steering = Steering.load(generator_checksum=gen.checksum)
    report: dict[str, Any] = {"threads": threads, "torch": torch.__version__}
    report["cells"] = cells_run(gen, est, steering, descr, per_cell, batch)
    report["plain"] = plain_run(gen, est, plain, batch) if plain else None
    report["identity"] = (
        identity_run(gen, est, steering, descr, identity_seeds) if identity_seeds else None
    )
    report["gate"] = gate_run(gen, gate_faces, batch) if gate_faces else None
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
