"""Look-alikes (face_gen) measured: descriptor distances per s_scale, time per steps.

Run by hand (about a minute per face on a 2-core CPU)::

    .venv/bin/python tests/perf/bench_facegen.py --generated-sheet 12 --faces 20 \
        --timing-steps 21,41 --sheet-dir /tmp/facegen

- the face finder on 200 UTKFace photos (how many have exactly one face found);
- the baseline: distances between the face crops of 50 unrelated UTKFace photos;
- with ``--generated-sheet``, 12 *generated* faces (steered to a gender and age,
  rescaled, shifted, JPEG), each inverted once at steps 21, then 4 look-alikes at
  s_scale 0, 1 and 2: docs/facegen/contact_sheet.jpg (input, inversion, 4 outputs at
  s_scale 1 per row) and docs/facegen/s_scale_sheet.jpg (the first 4 inputs: input,
  inversion, 2 outputs at s_scale 0, 2 at s_scale 2);
- ``--faces`` UTKFace photos spread over genders and age bands, the same per face
  (UTKFace is non-commercial: its images never go into the repository; its sheet is
  written under ``--sheet-dir`` only);
- per s_scale: descriptor distance photo -> outputs (the loss optimises this descriptor,
  so it flatters) and a judge nothing optimises: the estimator's gender of each output
  against the photo's (and, for UTKFace, against the label) and the age difference;
- time per whole job (samples=4, size=512) at ``--timing-steps`` on one UTKFace face.
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
S_SCALES = (0.0, 1.0, 2.0)
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
    parser.add_argument("--faces", type=int, default=20)
    parser.add_argument("--timing-steps", default="21,31,41")
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
        chosen = GENERATED[: args.generated_sheet]
        made = [(g == "female", a, generated_input(studio, seed, g, a))
                for seed, (g, a) in enumerate(chosen, 300)]  # fmt: skip
        judged = judge_faces(studio, made, plan, "generated")
        sheet(judged.pop("rows"), ROOT / "docs/facegen/contact_sheet.jpg", 144)
        sheet(judged.pop("scale_rows")[:4], ROOT / "docs/facegen/s_scale_sheet.jpg", 144)
        report["generated"] = {"inputs": chosen, "seeds_from": 300,
                               **judged}  # fmt: skip
        save(args.out, report)

    if args.faces:
        faces = spread_faces(np.random.default_rng(7), args.faces)
        inputs = [(f.female, f.age, (DATA / "images" / f.file).read_bytes()) for f in faces]
        judged = judge_faces(studio, inputs, plan, "utkface", args.out, report)
        sheet(judged.pop("rows"), args.sheet_dir / "utkface_sheet.jpg", 144)
        judged.pop("scale_rows")
        report["utkface"] = {"faces": args.faces, **judged}
        save(args.out, report)

    times: dict[str, list[float]] = {}
    for steps in [int(s) for s in args.timing_steps.split(",") if s]:
        face = spread_faces(np.random.default_rng(11), 1)[0]
        job = LookalikeJob((DATA / "images" / face.file).read_bytes(), 4, steps, 1.0, 0, plan)
        times[f"job_{steps}"] = [studio.make(job).seconds]
        print("steps", steps, times[f"job_{steps}"], flush=True)
        report["seconds_per_job_samples_4_size_512"] = {k: stats(v) for k, v in times.items()}
        save(args.out, report)


def judge_faces(
    studio: LookalikeStudio, inputs: list, plan, name: str, out: Path | None = None,
    report: dict | None = None,
) -> dict:  # fmt: skip
    """Invert each (female label, age label, photo) once at steps 21, then 4 look-alikes
    per s_scale; the distances and the estimator's judgement, per s_scale."""
    per_scale = {str(s): {"distance": [], "gender_agrees_with_photo": [],
                          "gender_agrees_with_label": [], "age_gap_to_photo": []}
                 for s in S_SCALES}  # fmt: skip
    rows, scale_rows, seconds, inversion, photo_gender_right, per_face = [], [], [], [], [], []
    for n, (female, age, data) in enumerate(inputs):
        started = time.monotonic()
        try:
            inverted = studio.invert(data, 21)
        except PhotoRejected as exc:
            print(name, n, "rejected", exc, flush=True)
            continue
        outs = {}
        for s in S_SCALES:
            outs[s] = studio.lookalikes(inverted, LookalikeJob(data, 4, 21, s, n, plan))
            if s == 1.0:
                seconds.append(time.monotonic() - started)
        photo_female = inverted.female is not None and inverted.female > 0.5
        photo_gender_right.append(photo_female == female)
        for s, o in outs.items():
            cell = per_scale[str(s)]
            cell["distance"] += o.distances
            cell["gender_agrees_with_photo"] += [(p > 0.5) == photo_female for p in o.output_female]
            cell["gender_agrees_with_label"] += [(p > 0.5) == female for p in o.output_female]
            cell["age_gap_to_photo"] += [abs(a - (inverted.age or 0)) for a in o.output_age]
        one = outs[1.0]
        inversion.append(one.inversion_distance)
        rows.append([data, one.inversion, *one.outputs])
        scale_rows.append([data, one.inversion, *outs[0.0].outputs[:2], *outs[2.0].outputs[:2]])
        per_face.append({"label": ["female" if female else "male", int(age)],
                         "photo_estimate": [round(inverted.female or 0, 2),
                                            round(inverted.age or 0, 1)],
                         "inversion_distance": round(one.inversion_distance, 3),
                         "s1_distances": [round(d, 3) for d in one.distances],
                         "s1_p_female": [round(p, 2) for p in one.output_female],
                         "s1_age": [round(a, 1) for a in one.output_age]})  # fmt: skip
        print(name, n, per_face[-1], round(seconds[-1], 1), flush=True)
        if out is not None and report is not None:  # a long run that is stopped keeps its figures
            report[name + "_so_far"] = per_face
            save(out, report)
    if report is not None:
        report.pop(name + "_so_far", None)
    mean = lambda values: float(np.mean(values))  # noqa: E731
    summary = {
        "inversion_distance": stats(inversion),
        "photo_gender_estimate_matches_label": int(sum(photo_gender_right)),
        "by_s_scale": {s: {"distance": stats(c["distance"]),
                           "gender_agrees_with_photo": mean(c["gender_agrees_with_photo"]),
                           "gender_agrees_with_label": mean(c["gender_agrees_with_label"]),
                           "age_gap_to_photo": stats(c["age_gap_to_photo"])}
                       for s, c in per_scale.items() if c["distance"]},
        "seconds_invert_plus_s1_lookalikes": stats(seconds),
        "per_face": per_face,
    }  # fmt: skip
    return {**summary, "rows": rows, "scale_rows": scale_rows}


if __name__ == "__main__":
    main()
