"""Fit the look-alike inversion's start: a ridge regression from a face's descriptor (and
the estimator's age and gender) to the photoreal generator's style.

Run by hand (about a second per face on a 2-core CPU; resumable, chunks are cached)::

    .venv/bin/python tests/perf/fit_facegen_encoder.py generate --faces 1200
    .venv/bin/python tests/perf/fit_facegen_encoder.py fit

``generate`` samples styles as ingest does (seeded z, the mapping network, ψ 0.7), renders
each at 1024 px, area-pools it to 256 px, aligns it as an uploaded photo is aligned
(``find_one_face`` + ``align_face``; the raw frame where no single face is found) and
stores the style, the aligned frame, face-api's descriptor of its face crop and the
estimator's age and p(female) of the same crop. ``fit`` fits
``ingest.facegen.encoder.Encoder`` on all but the last ``--heldout`` faces, reports the
held-out R² per ridge alpha, refits on all with the best and writes
``ingest/facegen/encoder.npz`` with its provenance (the generator checksum it belongs
to, N, the ridge alpha, this command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/tmp/facegen_encoder_data")
SEED = 20261207
CHUNK = 32


def load_models():  # type: ignore[no-untyped-def]
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from analysis.recognition import FaceDescriptorNet
    from ingest.generators import load_generator

    configure_threads(2)
    models = ROOT / "instance/models"
    generator = load_generator("mobilestylegan", models, device="cpu", truncation=0.7)
    descriptor = FaceDescriptorNet.from_models_dir(models, device="cpu")
    estimator = load_estimator("faceapi", models, device="cpu", batch_size=16)
    return generator, descriptor, estimator


def generate(faces: int) -> None:
    from ingest.facegen.align import align_face
    from ingest.facegen.encoder import crop_features
    from ingest.facegen.photo import PhotoRejected, find_one_face

    generator, descriptor, estimator = load_models()
    CACHE.mkdir(parents=True, exist_ok=True)
    z_all = np.random.default_rng(SEED).standard_normal((faces, 512)).astype(np.float32)
    for start in range(0, faces, CHUNK):
        path = CACHE / f"chunk_{start:06d}.npz"
        if path.exists():
            continue
        began = time.monotonic()
        z = torch.from_numpy(z_all[start : start + CHUNK])
        styles = generator.styles(z)
        frames = []
        with torch.inference_mode():
            for i in range(0, len(styles), 4):
                images = generator.synthesis(styles[i : i + 4])
                small = F.avg_pool2d(images, 4) * 127.5 + 127.5
                frames += list(small.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy())
        aligned, found = [], []
        for frame in frames:
            try:
                aligned.append(align_face(frame, find_one_face(frame), 256)[0])
                found.append(True)
            except PhotoRejected:
                aligned.append(frame)
                found.append(False)
        desc, age, female = crop_features(descriptor, estimator, np.stack(aligned))
        np.savez(path, z=z.numpy(), styles=styles.numpy(), descriptors=desc, age=age,
                 female=female, found=np.array(found), frames=np.stack(aligned))  # fmt: skip
        print(f"{start + len(z)}/{faces} {time.monotonic() - began:.1f} s", flush=True)


def fit(alpha: float, heldout: int) -> None:
    from ingest.facegen.encoder import ENCODER_FILE, Encoder, features_of, pixels_of
    from ingest.generators import load_generator

    chunks = sorted(CACHE.glob("chunk_*.npz"))
    data = {k: np.concatenate([np.load(c)[k] for c in chunks]) for k in
            ("styles", "descriptors", "age", "female", "found", "frames")}  # fmt: skip
    x = features_of(data["descriptors"], data["age"], data["female"], pixels_of(data["frames"]))
    y = data["styles"].astype(np.float64)
    n = len(y) - heldout
    generator = load_generator("mobilestylegan", ROOT / "instance/models", device="cpu")
    results = {}
    for a in sorted({alpha, 30.0, 100.0, 300.0, 1000.0} - {0.0}):
        enc = Encoder.fit(x[:n], y[:n], a, {})
        pred = enc.predict_features(x[n:])
        mean = y[:n].mean(0)
        r2 = 1 - ((pred - y[n:]) ** 2).sum() / ((y[n:] - mean) ** 2).sum()
        results[a] = float(r2)
        print(f"alpha {a}: held-out R² {r2:.3f} (of {heldout})", flush=True)
    best = max(results, key=results.get) if alpha <= 0 else alpha
    provenance = {
        "command": " ".join(["tests/perf/fit_facegen_encoder.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "faces": len(y), "fitted_on": int(n), "heldout": int(heldout),
        "single_face_found": int(data["found"].sum()),
        "seed": SEED, "truncation": 0.7, "alpha": float(best),
        "heldout_r2_by_alpha": {str(k): v for k, v in results.items()},
        "features": "face-api descriptor (128) of the aligned 256 px frame's face crop, "
        "estimator age/50 and p(female) - 0.5 of the same crop, the frame at 8x8 px (192)",
    }  # fmt: skip
    enc = Encoder.fit(x, y, best, {**provenance, "generator_checksum": generator.checksum})
    enc.save(ENCODER_FILE)
    print(json.dumps(provenance, indent=1))
    print("wrote", ENCODER_FILE, ENCODER_FILE.stat().st_size, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--faces", type=int, default=1200)
    fitting = sub.add_parser("fit")
    fitting.add_argument("--alpha", type=float, default=0.0, help="0: best held-out")
    fitting.add_argument("--heldout", type=int, default=150)
    args = parser.parse_args()
    if args.what == "generate":
        generate(args.faces)
    else:
        fit(args.alpha, args.heldout)


if __name__ == "__main__":
    main()
