"""Caption pipeline throughput per stage, one process against several workers (issue 13 §5).

For each imagery, builds the caption set of the main job's configuration (the five simulated
captioners, two candidates each, refinement and CAPTURE consensus) into a private copy of the twin,
once per worker count, and reports each stage's wall time, images/s and images/s per core, with the
1-minute load average before and after each build (the machine may be shared). The phrase scorer is
``clip:smoke``: the same network as the main job's ``clip:cpu`` (only its training differs), so it
costs the same per image and is trained in seconds on the tiny pretraining world. The script also
checks that every worker count wrote the same bytes.

    URBANLN_BENCH_CACHE=/tmp/bench-cache python benchmarks/caption_workers.py --scale tiny --workers 1 2

The first build of each imagery (with the first worker count) also pays for nothing else: the twin,
grounder, calibration and sentence model are made or loaded in a warm-up before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--city", default="NY")
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--imagery", nargs="+", default=["SI", "SV"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each imagery")
    parser.add_argument("--scorer", default="clip:smoke")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("URBANLN_BENCH_CACHE", tempfile.mkdtemp(prefix="urbanln-bench-captions-"))

    from urbanln_bench.captions.pipeline import FILES, PipelineConfig, run_pipeline
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import ensure_twin

    twin = ensure_twin(get_city(args.city), args.scale)
    copy = Path(tempfile.mkdtemp(prefix="urbanln-bench-captions-twin-")) / args.city
    shutil.copytree(twin, copy, ignore=lambda folder, names: ["captions"] if Path(folder) == twin else [])
    city = CityData.open(copy)
    rows = []
    for imagery in args.imagery:
        config = PipelineConfig(imagery=imagery, phrase_scorer=args.scorer, limit=args.limit)
        run_pipeline(city, PipelineConfig(imagery=imagery, phrase_scorer=args.scorer, limit=1), workers=1)  # warm-up
        reference = None
        for workers in args.workers:
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            run = run_pipeline(city, config, force=True, workers=workers)
            wall = time.perf_counter() - started
            files = {name: (run.folder / f"{name}.jsonl").read_bytes() for name in FILES}
            reference = reference or files
            images = run.info["counts"]["images"]
            stages = {name: {"seconds": s, "images_per_s": round(images / s, 2) if s else None,
                             "images_per_s_per_core": round(images / s / run.info["workers"], 2) if s else None}
                      for name, s in run.info["stage_seconds"].items()}
            row = {"imagery": imagery, "images": images, "candidates": run.info["counts"]["candidates"],
                   "workers": run.info["workers"], "seconds": round(wall, 2),
                   "images_per_s": round(images / wall, 2), "stages": stages,
                   "cpu_seconds_per_stage": {k: v["seconds"] for k, v in run.info["speed"].items()},
                   "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
                   "same_bytes_as_first": files == reference}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"city": args.city, "scale": args.scale, "scorer": args.scorer,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "runs": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(copy.parent, ignore_errors=True)
    if not all(r["same_bytes_as_first"] for r in rows):
        raise SystemExit("the caption sets differ between worker counts")


if __name__ == "__main__":
    main()
