"""Throughput and memory of the photoreal generator (MobileStyleGAN, 1024 px) on the CPU.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root::

    .venv/bin/python tests/perf/bench_photoreal.py --quick        # smoke run, ~1-2 min
    .venv/bin/python tests/perf/bench_photoreal.py --out /tmp/photoreal.json

What it measures, in one run, each configuration in a fresh subprocess so that its peak
memory is its own and no thread pool of an earlier row (torch's OpenMP, OpenVINO's TBB)
is still spinning beside it:

1. generation, faces/s: the PyTorch port (``PhotorealGenerator``: ``sample_latents`` of
   fixed seeds, then ``generate``) at batch 1, 8 and 32, and the original OpenVINO IR at
   batch 1 (its synthesis graph only runs at batch 1) in f32 and in OpenVINO's default
   precision (bf16 where the CPU has it). OpenVINO rows run mapping + synthesis per face
   and turn the output into uint8 ``(1024, 1024, 3)``, as ``generate`` returns it. One
   warm-up call, then timed calls (median). OpenVINO is not a project dependency: without
   it those rows are skipped and say so. One more PyTorch row at batch 8 runs with glibc
   left at glibc's default allocation (``--no-malloc-row`` drops it): facecat's model
   processes tell glibc to keep freed memory (``analysis.device.keep_freed_memory``);
   without that every call page-faults its activations in again, which the "sys" share
   of CPU time shows.
2. peak memory: ``ru_maxrss`` after the timed calls minus the resident set right after
   the model was loaded (the load's own transient peak is in the JSON apart, so it cannot
   hide what generation needs on top of the model);
3. ingest end to end: ``run_ingest`` with the real generator and the face-api estimator
   into a throwaway SQLite catalog and local storage, default settings (robust gate on,
   store overlapped), next to generation alone measured just before in the same process;
   ``ingest / generation`` is the bookkeeping's toll (target ≥ 0.8).

Rates are wall-clock: other jobs on shared cores lower them. Each row's "CPU/wall" (CPU
seconds of the process per wall second) shows how much of its ``--threads`` it got; the
load average is printed before and after.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from catalog.services import find_service
from catalog.storage import Storage

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run as a script from a checkout, so the packages need not be installed.
sys.path.insert(0, str(REPO_ROOT))

logger = logging.getLogger(__name__)

RESULT_PREFIX = "BENCH_PHOTOREAL_RESULT "
FIRST_SEED = 1000  # fixed seeds: every repeat renders the same faces
MAX_CALLS = 25  # cheap rows repeat until --min-seconds, at most this many timed calls
TARGET_RATIO = 0.8  # ingest end to end / generation alone
OV_ARTIFACTS = {
    "mapping": ("mobilestylegan-mapping-xml", "mobilestylegan-mapping-bin"),
    "synthesis": ("mobilestylegan-synthesis-xml", "mobilestylegan-synthesis-bin"),
}


# --- memory -----------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """The process's resident-set high-water mark, MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _rss_mb() -> float:
    """The process's resident set now, MB (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return psutil.Process().memory_info().rss / 2**20


def _loaded() -> dict[str, float]:
    """Memory right after a model load: the baseline a row's peak is measured from."""
    gc.collect()
    return {"rss_after_load_mb": _rss_mb(), "peak_during_load_mb": _peak_rss_mb()}


def _memory(loaded: dict[str, float]) -> dict[str, float]:
    peak = _peak_rss_mb()
    return {**loaded, "peak_mb": peak, "peak_minus_load_mb": peak - loaded["rss_after_load_mb"]}


# --- timing -----------------------------------------------------------------------------


def _timed_calls(
    step: Callable[[], None], faces_per_call: int, calls: int, min_seconds: float
) -> dict[str, Any]:
    """One warm-up call, then ``calls`` timed calls (more while under ``min_seconds``)."""
    start = time.perf_counter()
    step()
    warmup = time.perf_counter() - start
    seconds: list[float] = []
    wall, cpu = time.perf_counter(), os.times()
    while len(seconds) < calls or (
        time.perf_counter() - wall < min_seconds and len(seconds) < MAX_CALLS
    ):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    wall_seconds, now = time.perf_counter() - wall, os.times()
    user, system = now.user - cpu.user, now.system - cpu.system
    cpu_seconds = user + system
    median = statistics.median(seconds)
    return {
        "faces_per_s": faces_per_call / median,
        "cpu_s_per_face": cpu_seconds / (faces_per_call * len(seconds)),
        "seconds_per_call": {"median": median, "min": min(seconds), "max": max(seconds)},
        "warmup_s": warmup,
        "timed_calls": len(seconds),
        "cpu_per_wall": cpu_seconds / wall_seconds,
        # Kernel time is mostly page faults: big tensors are mmapped afresh on every call.
        "system_share": system / cpu_seconds if cpu_seconds > 0 else 0.0,
    }


def _calls_for(batch: int, repeats: int, max_faces: int) -> int:
    """Timed calls at ``batch``: ``repeats``, fewer (at least 2) past ``max_faces`` faces."""
    return min(repeats, max(2, max_faces // batch))


# --- the configurations, each run in its own subprocess ---------------------------------


def _torch_row(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from analysis.device import configure_threads
    from ingest.generators.photoreal import PhotorealGenerator

    if spec.get("glibc_default"):
        torch.set_num_threads(spec["threads"])  # without keep_freed_memory
    else:
        configure_threads(spec["threads"])
    generator = PhotorealGenerator.from_models_dir(spec["models_dir"], device="cpu")
    loaded = _loaded()
    batch = spec["batch"]
    seeds = range(FIRST_SEED, FIRST_SEED + batch)

    def step() -> None:
        images = generator.generate(generator.sample_latents(seeds), batch_size=batch)
        assert images.shape == (batch, 1024, 1024, 3), images.shape

    timing = _timed_calls(step, batch, spec["calls"], spec["min_seconds"])
    return {**timing, **_memory(loaded), "threads": torch.get_num_threads()}


def _openvino_row(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        import openvino
    except ImportError as exc:
        return {"skipped": f"openvino is not importable ({exc}); pip install openvino to compare"}
    import numpy as np

    from analysis.weights import weight_path

    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": spec["threads"]}
    if spec["precision"] is not None:
        config["INFERENCE_PRECISION_HINT"] = spec["precision"]
    core = openvino.Core()
    models = {}
    for part, (xml, weights) in OV_ARTIFACTS.items():
        model = core.read_model(
            weight_path(xml, spec["models_dir"]), weight_path(weights, spec["models_dir"])
        )
        models[part] = core.compile_model(model, "CPU", config)
    loaded = _loaded()
    mapping, synthesis = models["mapping"], models["synthesis"]
    # The same z per seed as ingest.generators.photoreal.seed_noise (no truncation here:
    # it is one multiply-add per style and does not change the cost).
    z = np.random.default_rng(FIRST_SEED).standard_normal((1, 512)).astype(np.float32)

    def step() -> None:
        image = synthesis(mapping(z)[0])[0]
        pixels = np.rint(image[0] * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
        face = pixels.transpose(1, 2, 0)
        assert face.shape == (1024, 1024, 3), face.shape

    timing = _timed_calls(step, 1, spec["calls"], spec["min_seconds"])
    return {
        **timing,
        **_memory(loaded),
        "openvino": openvino.__version__,
        "precision_used": synthesis.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        "threads": int(synthesis.get_property("INFERENCE_NUM_THREADS")),
    }


def _ingest_row(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from app import create_app
    from catalog.sql import db
    from catalog.sql.admission import SqlIngestCatalog
    from ingest.generators.photoreal import PhotorealGenerator
    from ingest.pipeline import draw_seeds, run_ingest
    from ingest.settings import IngestSettings

    configure_threads(spec["threads"])
    batch, count = spec["batch"], spec["count"]
    generator = PhotorealGenerator.from_models_dir(spec["models_dir"], device="cpu")
    estimator = load_estimator("faceapi", spec["models_dir"], device="cpu", batch_size=batch)
    loaded = _loaded()

    with tempfile.TemporaryDirectory(prefix="bench-photoreal-") as tmp:
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'catalog.db'}",
                "STORAGE_URL": (Path(tmp) / "objects").as_uri(),
                "MODELS_DIR": str(spec["models_dir"]),
            }
        )
        db.upgrade(app)
        settings = IngestSettings.from_config(app.config, batch_size=batch)

        # Warm up what the first ingest batch would otherwise pay for: the generator at
        # this batch size, the face detector and the estimator.
        pixels = generator.generate(generator.sample_latents(draw_seeds(batch)), batch)
        estimator.predict(generator.analysis_view(pixels.cpu().numpy()).crops)

        # Generation alone, as ingest's prepare stage runs it, right before the ingest run.
        start, cpu = time.perf_counter(), time.process_time()
        for done in range(0, count, batch):
            n = min(batch, count - done)
            generator.generate(generator.sample_latents(draw_seeds(n)), n).cpu().numpy()
        generation_only = count / (time.perf_counter() - start)
        generation_cpu = (time.process_time() - cpu) / count

        cpu = time.process_time()
        report = run_ingest(
            count,
            generator=generator,
            estimator=estimator,
            storage=find_service(Storage, app),
            catalog=SqlIngestCatalog(db.session_factory(app)),
            settings=settings,
            trigger="bench",
        )
        ingest_cpu = time.process_time() - cpu
        db.get_engine(app).dispose()

    return {
        **_memory(loaded),
        "count": count,
        "batch": batch,
        "robust_gate": settings.robust,
        "overlap": settings.overlap,
        "status": report.status,
        "error": report.error,
        "generated": report.generated,
        "admitted": report.admitted,
        "rejected": dict(report.rejected),
        "seconds": report.seconds,
        "timings": report.timings,
        "generation_only_faces_per_s": generation_only,
        "ingest_faces_per_s": report.faces_per_second,
        "ratio": report.faces_per_second / generation_only,
        "generation_only_cpu_s_per_face": generation_cpu,
        "ingest_cpu_s_per_face": ingest_cpu / max(report.generated, 1),
        "ratio_cpu": generation_cpu * max(report.generated, 1) / ingest_cpu,
        "cpu_per_wall": ingest_cpu / report.seconds,
        "threads": torch.get_num_threads(),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "torch": _torch_row,
    "openvino": _openvino_row,
    "ingest": _ingest_row,
}


def _in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and return its result."""
    label = spec["label"]
    click.echo(f"  {label} ...", err=True, nl=False)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **spec.get("env", {})},
        check=False,
    )
    click.echo(f" {time.perf_counter() - started:.0f} s", err=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {**spec, **json.loads(line[len(RESULT_PREFIX) :])}
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    return {**spec, "failed": f"exit status {proc.returncode}", "stderr_tail": tail}


# --- the report -------------------------------------------------------------------------


def _machine(threads: int) -> dict[str, Any]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    # Virtual machines often say only "AMD EPYC": family/model tell the generation, and the
    # vector extensions decide what OpenVINO's default (bf16 or f32) runs on.
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    cpu = (
        f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}; {' '.join(isa) or 'no AVX2'})"
    )

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": version("torch"),
        "openvino": version("openvino"),
        "python": sys.version.split()[0],
    }


def _generation_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| configuration | batch | faces/s (median) | s/call median (min–max) | timed calls "
        "| CPU s/face (sys) | CPU/wall | RSS after load MB | peak RSS MB | peak − load MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        head = f"| {row['label']} | {row['batch']} "
        if "faces_per_s" not in row:
            why = row.get("skipped") or row.get("failed")
            lines.append(head + f"| skipped: {why} | | | | | | | |")
            continue
        s = row["seconds_per_call"]
        lines.append(
            head
            + f"| {row['faces_per_s']:.3f} | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}) "
            f"| {row['timed_calls']} | {row['cpu_s_per_face']:.2f} ({row['system_share']:.0%}) "
            f"| {row['cpu_per_wall']:.2f} "
            f"| {row['rss_after_load_mb']:,.0f} | {row['peak_mb']:,.0f} "
            f"| {row['peak_minus_load_mb']:,.0f} |"
        )
    return lines


def _ingest_tables(row: dict[str, Any]) -> list[str]:
    if "ingest_faces_per_s" not in row:
        return [f"ingest: failed ({row.get('failed')})", row.get("stderr_tail", "")]
    verdict = "meets" if row["ratio"] >= TARGET_RATIO else "misses"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(row["rejected"].items())) or "none"
    lines = [
        "| ingest (robust gate "
        + ("on" if row["robust_gate"] else "off")
        + f", store {'overlapped' if row['overlap'] else 'in sequence'}) | value |",
        "| --- | ---: |",
        f"| faces generated, batch | {row['generated']}, {row['batch']} |",
        f"| generation only, faces/s (same process, just before) "
        f"| {row['generation_only_faces_per_s']:.3f} |",
        f"| ingest end to end, faces/s | {row['ingest_faces_per_s']:.3f} |",
        f"| ratio ingest / generation (target ≥ {TARGET_RATIO}) | **{row['ratio']:.2f}** "
        f"({verdict}) |",
        "| CPU s/face: generation only, ingest (ratio, less moved by other jobs) "
        f"| {row['generation_only_cpu_s_per_face']:.2f}, {row['ingest_cpu_s_per_face']:.2f} "
        f"({row['ratio_cpu']:.2f}) |",
        f"| ingest CPU/wall | {row['cpu_per_wall']:.2f} |",
        f"| admitted / rejected | {row['admitted']} / {rejected} |",
        f"| RSS after load (generator + estimator) MB | {row['rss_after_load_mb']:,.0f} |",
        f"| peak RSS MB (peak − load) | {row['peak_mb']:,.0f} ({row['peak_minus_load_mb']:,.0f}) |",
        f"| status | {row['status']}{': ' + row['error'] if row['error'] else ''} |",
        "",
        "| stage (report.timings) | seconds | ms/face | share of wall |",
        "| --- | ---: | ---: | ---: |",
    ]
    faces = max(row["generated"], 1)
    for stage, seconds in row["timings"].items():
        lines.append(
            f"| {stage} | {seconds:.2f} | {1000 * seconds / faces:,.0f} "
            f"| {seconds / row['seconds']:.0%} |"
        )
    lines.append(
        f"| **wall** | {row['seconds']:.2f} | {1000 * row['seconds'] / faces:,.0f} | 100% |"
    )
    return lines


def _measured(
    rows: list[dict[str, Any]], kind: str, batch: int, **match: Any
) -> dict[str, Any] | None:
    """The first measured row of ``kind`` at ``batch`` (and ``match``), if any."""
    for row in rows:
        if (
            (row["kind"], row["batch"]) == (kind, batch)
            and all(row.get(k) == v for k, v in match.items())
            and "faces_per_s" in row
        ):
            return row
    return None


@click.command()
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="defaults to $FACECAT_MODELS_DIR, else instance/models",
)
@click.option("--threads", default=2, show_default=True, help="torch and OpenVINO threads")
@click.option("--batches", default="1,8,32", show_default=True, help="PyTorch batch sizes")
@click.option("--repeats", default=3, show_default=True, help="timed calls per row")
@click.option(
    "--max-faces",
    default=64,
    show_default=True,
    help="fewer timed calls (at least 2) where repeats × batch would exceed this",
)
@click.option(
    "--min-seconds",
    default=5.0,
    show_default=True,
    help="cheap rows repeat until this many timed seconds",
)
@click.option(
    "--malloc-row/--no-malloc-row",
    default=True,
    show_default=True,
    help="one more PyTorch row (batch 8) with glibc told to keep freed memory",
)
@click.option("--ingest-count", default=32, show_default=True, help="faces in the ingest run")
@click.option("--ingest-batch", default=8, show_default=True)
@click.option(
    "--quick",
    is_flag=True,
    help="smoke run: batches 1,2 (unless given), one timed call, 8 faces ingested",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write JSON"
)
@click.option("--worker", default=None, hidden=True, help="internal: run one configuration")
def main(
    models_dir: Path | None,
    threads: int,
    batches: str,
    repeats: int,
    max_faces: int,
    min_seconds: float,
    malloc_row: bool,
    ingest_count: int,
    ingest_batch: int,
    quick: bool,
    out: Path | None,
    worker: str | None,
) -> None:
    """Print generation and ingest throughput and memory of the photoreal generator."""
    logging.basicConfig(level=logging.WARNING)
    if worker is not None:
        spec = json.loads(worker)
        click.echo(RESULT_PREFIX + json.dumps(WORKERS[spec["kind"]](spec)))
        return

    if models_dir is None:
        env = os.environ.get("FACECAT_MODELS_DIR")
        models_dir = Path(env) if env else REPO_ROOT / "instance" / "models"
    if quick:
        given = click.get_current_context().get_parameter_source("batches")
        if given is click.core.ParameterSource.DEFAULT:
            batches = "1,2"
        repeats, min_seconds, ingest_count, ingest_batch = 1, 0.0, 8, 4
    common = {"models_dir": str(models_dir), "threads": threads, "min_seconds": min_seconds}
    sizes = [int(b) for b in batches.split(",") if b]
    specs: list[dict[str, Any]] = [
        {
            **common,
            "kind": "torch",
            "label": "PyTorch port",
            "batch": b,
            "calls": _calls_for(b, repeats, max_faces),
        }
        for b in sizes
    ]
    if malloc_row and sizes:
        b = 8 if 8 in sizes else max(sizes)
        specs.append(
            {
                **specs[sizes.index(b)],
                "label": "PyTorch port, glibc's default malloc (no keep_freed_memory)",
                "glibc_default": True,
            }
        )
    for precision, label in (("f32", "OpenVINO f32"), (None, "OpenVINO default precision")):
        specs.append(
            {
                **common,
                "kind": "openvino",
                "label": label,
                "precision": precision,
                "batch": 1,
                "calls": _calls_for(1, repeats, max_faces),
            }
        )
    ingest_spec = {
        **common,
        "kind": "ingest",
        "label": "ingest",
        "count": ingest_count,
        "batch": ingest_batch,
    }

    machine = _machine(threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    click.echo(f"running {len(specs) + 1} configurations, each in a fresh process:", err=True)
    rows = [_in_subprocess(spec) for spec in specs]
    for row in rows:  # name the precision OpenVINO picked by default (bf16 with AVX512_BF16 or AMX)
        if row["kind"] == "openvino" and row["precision"] is None and "faces_per_s" in row:
            row["label"] += f" ({row['precision_used']})"
    ingest = _in_subprocess(ingest_spec)
    machine.update(
        load_average_before=load_before[0],
        load_average_after=os.getloadavg()[0],
        total_seconds=time.perf_counter() - started,
    )

    torch_b8 = _measured(rows, "torch", 8, glibc_default=None)
    ov_f32 = _measured(rows, "openvino", 1, precision="f32")
    ratio = ratio_cpu = None
    if torch_b8 and ov_f32:
        ratio = torch_b8["faces_per_s"] / ov_f32["faces_per_s"]
        ratio_cpu = ov_f32["cpu_s_per_face"] / torch_b8["cpu_s_per_face"]

    click.echo(
        f"\n{machine['cpu']}, {machine['cpus']} CPUs, {threads} threads, torch "
        f"{machine['torch']}, openvino {machine['openvino'] or 'not installed'}, python "
        f"{machine['python']}; load average {machine['load_average_before']:.2f} before, "
        f"{machine['load_average_after']:.2f} after ({machine['total_seconds']:.0f} s in all; "
        "CPU/wall below "
        f"{threads} means the row shared its cores)\n"
    )
    click.echo("Generation at 1024 px, one fresh process per row:\n")
    for line in _generation_table(rows):
        click.echo(line)
    if ratio is not None and ratio_cpu is not None:
        click.echo(
            f"\nPyTorch batch 8 / OpenVINO f32: {ratio:.2f} in faces/s, {ratio_cpu:.2f} in CPU "
            "seconds per face (the rows ran minutes apart; the CPU ratio moves less with load)\n"
        )
    else:
        click.echo("\nPyTorch batch 8 / OpenVINO f32: n/a (a row is missing)\n")
    for line in _ingest_tables(ingest):
        click.echo(line)

    result = {
        "machine": machine,
        "generation": rows,
        "torch_b8_over_openvino_f32": ratio,
        "torch_b8_over_openvino_f32_cpu": ratio_cpu,
        "ingest": ingest,
    }
    line = json.dumps(result, sort_keys=True)
    click.echo("\n" + line)
    if out is not None:
        out.write_text(line + "\n")
        click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    main()
