"""Look-alikes (face_gen) measured: descriptor distances per s_scale, time per steps.

Run by hand (minutes per face on a 2-core CPU)::

    .venv/bin/python tests/perf/bench_facegen.py --faces 10 --sheet-dir /tmp/facegen

- the face finder on 200 UTKFace photos (how many have exactly one face found);
- ``--faces`` UTKFace photos spread over genders and age bands, each inverted *once* at
  steps=21, then 4 look-alikes per s_scale in (0, 0.5, 1, 1.5, 2) from that inversion:
  descriptor distance photo -> inversion and photo -> outputs;
- the baseline: distances between the face crops of 50 unrelated UTKFace photos;
- time per whole job (samples=4, size=512) at steps 21, 31, 41 on ``--timing-faces``;
- with ``--generated-sheet``, docs/facegen/contact_sheet.jpg from 12 *generated* faces
  (UTKFace is non-commercial: its images never go into the repository; its sheet is
  written under ``--sheet-dir`` only).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analysis.device import keep_freed_memory
from analysis.evaluation import read_labels
from analysis.recognition import face_descriptors
from ingest.facegen.align import align_face
from ingest.facegen.lookalikes import (
    LookalikeJob,
    LookalikeStudio,
    face_crop,
    load_facegen_models,
)
from ingest.facegen.photo import PhotoRejected, find_one_face, load_photo
from ingest.facegen.prompt import read_prompt

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "utkface-dev"
S_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)
BANDS = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 90))
CELLS = [(g, lo, hi) for lo, hi in BANDS for g in (True, False)]
GENERATED = [("female", 10), ("male", 70), ("female", 28), ("male", 40), ("female", 55),
             ("male", 18), ("male", 10), ("female", 70), ("male", 28), ("female", 40),
             ("male", 55), ("female", 18)]  # fmt: skip


def stats(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "mean": float(np.mean(values)), "n": len(values)}


def spread_faces(rng: np.random.Generator, count: int) -> list:
    """``count`` labelled faces, round-robin over gender x age band, one face found in each."""
    faces = list(read_labels(DATA))
    by_cell = [[f for f in faces if f.female == g and lo <= f.age <= hi] for g, lo, hi in CELLS]
    for cell in by_cell:
        rng.shuffle(cell)
    picked, i = [], 0
    while len(picked) < count:
        cell = by_cell[i % len(by_cell)]
        face = cell.pop()
        try:
            find_one_face(load_photo((DATA / "images" / face.file).read_bytes()))
            picked.append(face)
        except PhotoRejected:
            pass
        i += 1
    return picked


def sheet(rows: list[list[bytes]], path: Path, cell: int) -> None:
    """Rows of JPEGs side by side at ``cell`` px."""
    canvas = Image.new("RGB", (cell * max(map(len, rows)), cell * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, data in enumerate(row):
            tile = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell))
            canvas.paste(tile, (c * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, "JPEG", quality=85)


def generated_input(studio: LookalikeStudio, seed: int, gender: str, age: float) -> bytes:
    """A steered generated face, rescaled and shifted a little, as a 512 px JPEG."""
    from ingest.steering import aimed_styles

    models = studio.models
    candidates = models.generator.candidate_styles(seed, 64)
    style, _ = aimed_styles(models.steering, candidates, gender, age)
    import torch

    image = models.generator.generate(torch.from_numpy(style[None]), 1)[0].numpy()
    picture = Image.fromarray(image).resize((560, 560), Image.Resampling.LANCZOS)
    dx, dy = 24 + seed % 17, 30 - seed % 13  # off the generator's framing
    picture = picture.crop((dx, dy, dx + 512, dy + 512))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def save(path: Path, report: dict) -> None:
    """Write what was measured so far (a long run that is stopped keeps its figures)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=50)
    parser.add_argument("--timing-faces", type=int, default=1)
    parser.add_argument("--sheet-dir", type=Path, default=Path("/tmp/facegen"))
    parser.add_argument("--generated-sheet", type=int, default=0, help="rows (up to 12)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/facegen/bench_facegen.json")
    args = parser.parse_args()
    keep_freed_memory()
    config = {"MODELS_DIR": ROOT / "instance/models", "DEVICE": "cpu", "TORCH_THREADS": 2,
              "TRUNCATION": 0.7}  # fmt: skip
    studio = LookalikeStudio(lambda: load_facegen_models(config))
    models = studio.models
    rng = np.random.default_rng(2026)
    plan = read_prompt("")
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, 2 torch threads, CPU shared with other work",
        "command": " ".join(sys.argv),
    }

    labels = list(read_labels(DATA))
    found = {"one": 0, "no_face": 0, "several_faces": 0}
    for i in rng.choice(len(labels), 200, replace=False):
        try:
            find_one_face(load_photo((DATA / "images" / labels[i].file).read_bytes()))
            found["one"] += 1
        except PhotoRejected as exc:
            found[exc.code] += 1
    report["detection_200_utkface"] = found
    print("detection", found, flush=True)

    crops = []
    for face in spread_faces(rng, 50):
        image = load_photo((DATA / "images" / face.file).read_bytes())
        crops.append(face_crop(align_face(image, find_one_face(image), 256)[0]))
    desc = face_descriptors(models.descriptor, np.stack(crops))
    pairs = np.linalg.norm(desc[:, None].numpy() - desc[None].numpy(), axis=-1)
    report["unrelated_real_pairs"] = stats(list(pairs[np.triu_indices(len(crops), 1)]))
    print("unrelated", report["unrelated_real_pairs"], flush=True)

    if args.generated_sheet:
        rows, distances, seconds = [], [], []
        for seed, (gender, age) in enumerate(GENERATED[: args.generated_sheet], start=300):
            data = generated_input(studio, seed, gender, age)
            out = studio.make(LookalikeJob(data, 4, 21, 1.0, seed, plan))
            rows.append([data, out.inversion, *out.outputs])
            distances.append([out.inversion_distance, *out.distances])
            seconds.append(out.seconds)
            print("generated", seed, gender, age, [round(d, 3) for d in distances[-1]], flush=True)
        sheet(rows, ROOT / "docs/facegen/contact_sheet.jpg", 160)
        report["generated_sheet"] = {"inputs": GENERATED[: args.generated_sheet], "seeds_from": 300,
                                     "distances_inversion_then_outputs": distances,
                                     "seconds_per_job_steps_21": stats(seconds)}  # fmt: skip
    save(args.out, report)

    per_scale: dict[str, list[float]] = {str(s): [] for s in S_SCALES}
    inversion, times, rows = [], {"invert_21": []}, []
    for n, face in enumerate(spread_faces(np.random.default_rng(7), args.faces)):
        data = (DATA / "images" / face.file).read_bytes()
        started = time.monotonic()
        inverted = studio.invert(data, 21)
        times["invert_21"].append(time.monotonic() - started)
        for s in S_SCALES:
            out = studio.lookalikes(inverted, LookalikeJob(data, 4, 21, s, n, plan))
            per_scale[str(s)] += out.distances
            if s == 1.0:
                rows.append([data, out.inversion, *out.outputs])
        inversion.append(out.inversion_distance)
        print(n, face.file[:12], round(out.inversion_distance, 3), flush=True)
    report["faces"] = args.faces
    report["inversion_distance"] = stats(inversion)
    report["output_distance_by_s_scale"] = {s: stats(v) for s, v in per_scale.items()}
    if rows:
        sheet(rows[:12], args.sheet_dir / "utkface_sheet.jpg", 192)
    save(args.out, report)

    for steps in (21, 31, 41):
        times[f"job_{steps}"] = []
        for face in spread_faces(np.random.default_rng(11), args.timing_faces):
            job = LookalikeJob((DATA / "images" / face.file).read_bytes(), 4, steps, 1.0, 0, plan)
            times[f"job_{steps}"].append(studio.make(job).seconds)
        print("steps", steps, times[f"job_{steps}"], flush=True)
        report["seconds"] = {k: stats(v) for k, v in times.items()}
        save(args.out, report)


if __name__ == "__main__":
    main()
